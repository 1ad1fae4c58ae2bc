"""Benchmark: ingest (with validation and quarantine) + features, through `scorehouse run`, at scale.

    python benchmarks/ingest_features.py [--customers 100000 1000000] [--keep]

For each size: generate the bank once (cached under benchmarks/out/), run the `ingest` and `features`
assets from scratch as a user would (`scorehouse run`, a child process), and record wall time, rows/s and
the child's peak RSS. Results are appended to benchmarks/RESULTS.md with the machine and the command.
Targets (issue 2): 1M customers / ~50M transactions in under 2 minutes, peak RSS under 3 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BIN = Path(sys.executable).parent


def machine() -> str:
    import psutil

    return (f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, duckdb {duckdb.__version__}")


def clean_env() -> dict[str, str]:
    """This environment without SCOREHOUSE_* and DAGSTER_* variables: a benchmark's `scorehouse` runs as a new user's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SCOREHOUSE_", "DAGSTER_"))}


def shard_args(customers: int, home: str) -> tuple[argparse.Namespace, Path, Path]:
    """The shard benchmarks' arguments (--customers, default `customers`; --shards; --workers), the generated bank
    and an emptied home benchmarks/out/<home>_<customers>."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=customers)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    landing, path = ensure_bank(a.customers), OUT / f"{home}_{a.customers}"
    shutil.rmtree(path, ignore_errors=True)
    return a, landing, path


def ensure_bank(n: int) -> Path:
    landing = OUT / f"bank_{n}"
    if not (landing / "labels.csv").exists():
        shutil.rmtree(landing, ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run([str(BIN / "scorehouse"), "generate", "--customers", str(n), "--out", str(landing)], check=True)
        print(f"generated {n:,} customers in {time.monotonic() - t0:.0f}s", flush=True)
    return landing


def run_once(n: int, keep: bool) -> dict:
    landing = ensure_bank(n)
    home = OUT / f"home_{n}"
    shutil.rmtree(home, ignore_errors=True)
    env = clean_env()
    cmd = [str(BIN / "scorehouse"), "run", "--job", "features", "--landing", str(landing), "--home", str(home)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"run failed for {n:,} customers")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        tx = con.execute("SELECT count(*) FROM raw.transactions").fetchone()[0]
        rows = con.execute(
            "SELECT sum(rows_read) FROM raw.deliveries").fetchone()[0]
        feats = con.execute("SELECT count(*) FROM features.customer_features").fetchone()[0]
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("[") and "✓ raw/transactions" in ln]
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    return {"customers": n, "transactions": tx, "rows": rows, "features": feats, "wall": wall,
            "peak_gb": max(peak_kb, before) / 2**20, "tx_line": steps[0] if steps else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--keep", action="store_true", help="keep the homes under benchmarks/out")
    args = ap.parse_args()
    results = []
    for n in args.customers:
        r = run_once(n, args.keep)
        results.append(r)
        print(f"{n:>9,} customers, {r['transactions']:>11,} transactions: {r['wall']:6.1f}s, "
              f"{r['rows'] / r['wall']:>10,.0f} rows/s, peak RSS {r['peak_gb']:.2f} GB", flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n### {stamp} — `python benchmarks/ingest_features.py --customers {' '.join(map(str, args.customers))}`\n",
             f"Machine: {machine()}. `scorehouse run --job features` (Dagster start-up, 8 ingest assets with GX checks and "
             "quarantine, 6 feature assets, checks), from empty home; peak RSS is the run process's.\n",
             "| customers | transactions | rows read (all files) | wall | rows/s | peak RSS |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['customers']:,} | {r['transactions']:,} | {r['rows']:,} | {r['wall']:.1f} s | "
              f"{r['rows'] / r['wall']:,.0f} | {r['peak_gb']:.2f} GB |" for r in results]
    record(lines)


def record(lines: list[str]) -> None:
    """A result table printed and appended to benchmarks/RESULTS.md."""
    text = "\n".join(lines) + "\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in this folder; newest last.\n")
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
