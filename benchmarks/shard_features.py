"""Benchmark: the feature tables built shard by shard on the lake (warehouse/shard_features.py) against the
embedded build on the same bank.

    python benchmarks/shard_features.py [--customers 100000] [--shards 8] [--workers 2]

The bank is generated once (benchmarks/out/) and ingested by `scorehouse run --job ingest`; the lake's catalog
is a PostgreSQL server started for the run (tests/postgres.py), its warehouse a local folder. Records the
embedded build, the raw export, each shard's build (on `--workers` processes) and the population step, with
the peak RSS of each worker; results are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.ingest_features import BIN, clean_env, machine, record, shard_args  # noqa: E402
from tests.postgres import local_postgres  # noqa: E402
from warehouse import features as F  # noqa: E402
from warehouse import shard_features as S  # noqa: E402
from warehouse.db import connect  # noqa: E402
from warehouse.lake import Lake, LakeLocation  # noqa: E402


def _shard(args: tuple) -> tuple[int, float, float]:
    location, shard, p = args
    t0 = time.monotonic()
    S.build_shard(Lake(location), shard, p)
    return shard, time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    a, landing, home = shard_args(100_000, "shard_home")
    env = clean_env()
    subprocess.run([str(BIN / "scorehouse"), "run", "--job", "ingest", "--landing", str(landing), "--home", str(home)],
                   env=env, check=True, capture_output=True)
    control, embedded = home / "warehouse.duckdb", home / "embedded.duckdb"
    shutil.copy(control, embedded)
    with connect(embedded) as con:
        snap = F.resolve_snapshot(con, None, 90)
        t0 = time.monotonic()
        F.build_all(con, snap)
        t_embedded = time.monotonic() - t0
    with local_postgres() as url:
        location = LakeLocation(url, str(home / "lake"))
        lake = Lake(location)
        t0 = time.monotonic()
        with connect(control) as con:
            S.export_raw(con, lake, a.shards)
            p = S.plan(con, snap)
        t_export = time.monotonic() - t0
        t0 = time.monotonic()
        with ProcessPoolExecutor(a.workers) as pool:
            shards = sorted(pool.map(_shard, [(location, k, p) for k in range(a.shards)]))
        t_shards = time.monotonic() - t0
        t0 = time.monotonic()
        n = S.population_step(lake, a.shards, snap)
        t_population = time.monotonic() - t0
    shutil.rmtree(home, ignore_errors=True)
    per = [t for _, t, _ in shards]
    rows = [
        f"\n### Shard features, {a.customers:,} customers, {a.shards} shards on {a.workers} workers "
        f"({datetime.now(UTC):%Y-%m-%d})\n",
        f"Machine: {machine()}. Command: `python benchmarks/shard_features.py --customers {a.customers} "
        f"--shards {a.shards} --workers {a.workers}`.\n",
        "| step | seconds |", "|---|---:|",
        f"| embedded build (one DuckDB, all customers) | {t_embedded:.1f} |",
        f"| raw tables into the lake ({a.shards} parts each) + plan | {t_export:.1f} |",
        f"| shard builds, wall on {a.workers} workers | {t_shards:.1f} |",
        f"| one shard's build: min / mean / max | {min(per):.1f} / {sum(per) / len(per):.1f} / {max(per):.1f} |",
        f"| population step ({n:,} customers) | {t_population:.1f} |",
        f"| peak RSS per worker, max | {max(r for _, _, r in shards):.2f} GB |",
    ]
    record(rows)


if __name__ == "__main__":
    main()
