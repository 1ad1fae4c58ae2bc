"""Benchmark: scoring throughput of all eight models at scale, through their Dagster scoring assets.

    python benchmarks/scoring.py [--customers 1000000]

1. The generated bank (cached under benchmarks/out/bank_<n>/, shared with ingest_features.py) is run once
   through `scorehouse run` (ingest, features, training, gates, first scoring) into benchmarks/out/score_home_<n>;
   that wall time is recorded as the training run.
2. A child process then materializes the eight `scores/*` assets alone (as the daily `score` job does after
   the features; fraud with its own feature step, features/transaction_features, for the latest day's
   transactions; manager and agency performance with theirs, features/book_performance, the books month by month)
   against that home, and reports each step's duration and its own peak RSS.
Throughput = customers / step duration per customer model, and customers / sum of them for "all customer
models" (reading features from DuckDB and writing scores + history included); fraud: transactions of the day /
(its feature step + its scoring step). Results are appended to
benchmarks/RESULTS.md. Target (issue 3): >= 50,000 customers/s end to end on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest_features import BIN, OUT, RESULTS, clean_env, ensure_bank, machine  # noqa: E402

MODELS = ("churn", "segments", "recommendations", "credit_risk", "clv")  # one row per customer
FRAUD = ("features__transaction_features", "scores__fraud")  # the day's transactions: features, then scores
# every manager's and agency's book month by month, then their predicted next month
PERFORMANCE = ("features__book_performance", "scores__manager_performance", "scores__agency_performance")

CHILD = """
import json, resource, sys
import dagster as dg
from assets.models import model_assets
from assets.resources import Settings, Source, Warehouse

home = sys.argv[1]
keys = [dg.AssetKey(["scores", m]) for m in sys.argv[2].split(",")] + [
    dg.AssetKey(["features", "transaction_features"]), dg.AssetKey(["features", "book_performance"])]
assets = [a for a in model_assets if a.key in keys]
resources = {"warehouse": Warehouse(home=home, memory_limit="4GB"), "settings": Settings(home=home, source="synthetic"),
             "source": Source(source="synthetic", landing=home)}
with dg.instance_for_test() as instance:
    result = dg.materialize(assets, resources=resources, instance=instance)
    stats = instance.get_run_step_stats(result.run_id)
out = {s.step_key: s.end_time - s.start_time for s in stats}
out["_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print("RESULT " + json.dumps(out))
"""


def train(n: int) -> tuple[Path, float | None]:
    landing = ensure_bank(n)
    home = OUT / f"score_home_{n}"
    if (home / "warehouse.duckdb").exists():
        return home, None
    env = clean_env()
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "scorehouse"), "run", "--landing", str(landing), "--home", str(home)],
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    print(proc.stdout[-2500:], flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        print("the training run did not pass every gate; models without a champion are not scored")
    return home, wall


def score(home: Path) -> dict:
    env = clean_env()
    env["SCOREHOUSE_HOME"] = str(home)
    scored = (*MODELS, "fraud", "manager_performance", "agency_performance")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(home), ",".join(scored)], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit("scoring run failed")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    args = ap.parse_args()
    n_gen = args.customers
    home, train_wall = train(n_gen)
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM features.population").fetchone()[0]
    res = score(home)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        n_tx, method = con.execute("SELECT count(*), any_value(fraud_method) FROM scores.fraud").fetchone() \
            if res.get(FRAUD[1]) else (0, None)
    perf = [res.get(k) for k in PERFORMANCE]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        books = con.execute("SELECT count(*), count(DISTINCT period) FROM features.book_performance").fetchone() \
            if perf[0] else (0, 0)
    per = {m: res.get(f"scores__{m}") for m in MODELS}
    total = sum(v for v in per.values() if v)
    fraud = [res.get(k) for k in FRAUD]
    for m, secs in per.items():
        print(f"{m:<16} {secs:7.1f} s  {n / secs:>10,.0f} customers/s" if secs else f"{m:<16} not scored")
    print(f"{'all five':<16} {total:7.1f} s  {n / total:>10,.0f} customers/s, peak RSS {res['_peak_rss_gb']:.2f} GB")
    if all(fraud):
        print(f"{'fraud':<16} {sum(fraud):7.1f} s  {n_tx / sum(fraud):>10,.0f} transactions/s ({n_tx:,} of the latest "
              f"day, {method}; features {fraud[0]:.1f} s, scoring {fraud[1]:.1f} s)")
    if all(perf):
        print(f"{'performance':<16} {sum(perf):7.1f} s  ({books[0]:,} manager and agency months over {books[1]} months: "
              f"book features {perf[0]:.1f} s, managers {perf[1]:.1f} s, agencies {perf[2]:.1f} s)")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n### {stamp} — `python benchmarks/scoring.py --customers {n_gen}`\n",
             f"Machine: {machine()}. {n:,} customers in the population. The eight `scores/*` assets, "
             "features/transaction_features and features/book_performance materialized in one child process against a trained home (features read "
             "from DuckDB, scores + history written)"
             + (f"; the training run before it (ingest, features, 8 models, gates, scoring) took {train_wall:.0f} s"
                if train_wall else "") + ".\n",
             "| model | seconds | customers/s |", "|---|---:|---:|"]
    lines += [f"| {m} | {s:.1f} | {n / s:,.0f} |" if s else f"| {m} | not scored | |" for m, s in per.items()]
    lines.append(f"| **all five customer models** | {total:.1f} | {n / total:,.0f} |")
    if all(fraud):
        lines.append(f"| fraud: {n_tx:,} transactions of the latest day ({method}), features {fraud[0]:.1f} s + "
                     f"scoring {fraud[1]:.1f} s | {sum(fraud):.1f} | {n_tx / sum(fraud):,.0f} transactions/s |")
    if all(perf):
        lines.append(f"| manager and agency performance: {books[0]:,} book months ({books[1]} months), book features "
                     f"{perf[0]:.1f} s + managers {perf[1]:.1f} s + agencies {perf[2]:.1f} s | {sum(perf):.1f} | "
                     f"{n / perf[0]:,.0f} customers/s (book) |")
    lines.append(f"\nPeak RSS of the scoring process: {res['_peak_rss_gb']:.2f} GB.")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
