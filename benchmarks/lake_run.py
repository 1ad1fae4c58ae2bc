"""Benchmark: the iceberg backend's whole run (`scorehouse run --backend iceberg`: the ingest, features, training
and drift scoring on the DuckDB file's sample of customers, then job `lake`: features and scores shard by shard,
publish from the lake) against the embedded run on the same bank.

    python benchmarks/lake_run.py [--customers 1000000] [--shards 8] [--workers 2]

The bank is generated once (benchmarks/out/). The embedded run (`scorehouse run`: ingest, features, training,
scores, publish of every customer, in process) is timed first, on a home of its own; then `scorehouse run
--backend iceberg --shards N --executor multiprocess` on another, with its catalog on a PostgreSQL server started
for the run (tests/postgres.py) and its warehouse a local folder. Step times come from the runs' Dagster events,
the peak RSS of each shard step from its own output; results are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.ingest_features import BIN, clean_env, machine, record, shard_args  # noqa: E402
from tests.postgres import local_postgres  # noqa: E402


def _run(args: list[str], home: Path) -> float:
    env = clean_env()
    t0 = time.monotonic()
    r = subprocess.run([str(BIN / "scorehouse"), "run", *args, "--home", str(home)], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"scorehouse run {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def _steps(home: Path, job: str) -> tuple[dict[str, float], dict[str, float], float]:
    """(seconds per step, peak RSS in GB per shard step, seconds from its first event to its last) of the job's
    last run."""
    import dagster as dg

    from orchestration.home import open_instance

    with open_instance(home / "dagster", say=lambda m: None) as instance:
        run = instance.get_runs(dg.RunsFilter(job_name=job), limit=1)[0]
        start, took, rss = {}, {}, {}
        logs = instance.all_logs(run.run_id)
        for e in logs:
            ev = e.dagster_event
            if ev is None or not e.step_key:
                continue
            if ev.event_type == dg.DagsterEventType.STEP_START:
                start[e.step_key] = e.timestamp
            elif ev.event_type == dg.DagsterEventType.STEP_SUCCESS:
                took[e.step_key] = e.timestamp - start[e.step_key]
            elif ev.event_type == dg.DagsterEventType.STEP_OUTPUT and "shard[" in e.step_key:
                value = ev.step_output_data.metadata.get("peak_rss_gb")
                if value is not None:
                    rss[e.step_key] = value.value
    return took, rss, logs[-1].timestamp - logs[0].timestamp


def main() -> None:
    a, landing, home = shard_args(1_000_000, "lake_home")
    t_embedded = _run(["--landing", str(landing)], home)
    embedded, _, _ = _steps(home, "scorehouse")
    shutil.rmtree(home, ignore_errors=True)
    with local_postgres() as url:
        flags = ["--backend", "iceberg", "--catalog", url, "--warehouse", str(home / "lake"), "--shards",
                 str(a.shards), "--executor", "multiprocess"]
        home.mkdir(parents=True)
        (home / "scorehouse.yaml").write_text(f"execution: {{max_concurrent: {a.workers}}}\n")
        t_iceberg = _run(["--landing", str(landing), *flags], home)
    sampled, _, t_sampled = _steps(home, "scorehouse")
    lake, rss, t_lake = _steps(home, "lake")
    shutil.rmtree(home, ignore_errors=True)

    def groups(steps: dict[str, float]) -> dict[str, float]:
        out = defaultdict(float)
        for step, s in steps.items():
            out["ingest" if step.startswith("raw__") else "features" if step.startswith("features__")
                else "training" if step.startswith("ml__") else "scores" if step.startswith("scores__")
                else "publish" if step.startswith("serving__published") else "other"] += s
        return out

    def stages(steps: dict[str, float]) -> str:
        g = groups(steps)
        return " / ".join(f"{g[k]:.1f}" for k in ("ingest", "features", "training", "scores", "publish"))

    def phase(prefix: str) -> list[float]:
        return [s for k, s in lake.items() if k.startswith(prefix)]

    def spread(values: list[float]) -> str:
        return f"{min(values):.1f} / {sum(values) / len(values):.1f} / {max(values):.1f}" if values else "-"

    feature_shards, score_shards = phase("lake__features.lake_shard["), phase("lake__scores.lake_score_shard[")
    rows = [
        f"\n### Iceberg backend's whole run, {a.customers:,} customers, {a.shards} shards on {a.workers} workers "
        f"({datetime.now(UTC):%Y-%m-%d})\n",
        f"Machine: {machine()}. Command: `python benchmarks/lake_run.py --customers {a.customers} "
        f"--shards {a.shards} --workers {a.workers}`.\n",
        "| | seconds |", "|---|---:|",
        f"| embedded backend, whole run (`scorehouse run`: every customer in the DuckDB file) | {t_embedded:.1f} |",
        f"| of which steps: ingest / features / training / scoring (with drift) / publish | {stages(embedded)} |",
        f"| iceberg backend, whole run (`scorehouse run --backend iceberg ...`, the command's wall time) | "
        f"{t_iceberg:.1f} |",
        f"| of which its job scorehouse (the DuckDB file's sample: warehouse.lake.sample_customers), its run | "
        f"{t_sampled:.1f} |",
        f"| of which steps: ingest / features / training / scoring (with drift) / publish | {stages(sampled)} |",
        f"| of which its job lake (features and scores of every customer, shard by shard; publish), its run | "
        f"{t_lake:.1f} |",
        f"| lake_plan: the shared raw tables into the lake, the fingerprints, the plan | {sum(phase('lake__features.lake_plan')):.1f} |",
        f"| feature shard step (its part of the raw tables, then its features): min / mean / max | {spread(feature_shards)} |",
        f"| lake_population | {sum(phase('lake__features.lake_population')):.1f} |",
        f"| lake_score_plan | {sum(phase('lake__scores.lake_score_plan')):.1f} |",
        f"| scoring shard step: min / mean / max | {spread(score_shards)} |",
        f"| lake_score_population (CLV tiers, fraud ranks over all shards) | "
        f"{sum(phase('lake__scores.lake_score_population')):.1f} |",
        f"| lake_score_apply step (each shard's part rewritten with them): min / mean / max | "
        f"{spread(phase('lake__scores.lake_score_apply['))} |",
        f"| lake/published (serving file from the pinned lake snapshot) | {sum(phase('lake__published')):.1f} |",
        f"| peak RSS of a shard step, max (features / scoring) | "
        f"{max((v for k, v in rss.items() if 'lake_shard[' in k), default=0):.2f} GB / "
        f"{max((v for k, v in rss.items() if 'score_shard[' in k), default=0):.2f} GB |",
    ]
    record(rows)


if __name__ == "__main__":
    main()
