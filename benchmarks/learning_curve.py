"""Benchmark: holdout quality against training rows, for the models whose training is capped (issue 12).

    python benchmarks/learning_curve.py [--home benchmarks/out/graph_home_1000000] [--models churn,...]

Reads a home the whole graph has run on (benchmarks/whole_graph.py --keep leaves one at 1M customers) and fits
each model outside Dagster as its asset does, once per cap, on the same features and the same holdout:
  churn            max_train_rows -> holdout AUC
  credit_risk      xgb_max_rows   -> the monotone XGBoost's holdout AUC
  recommendations  max_train_rows ((customer, product) rows) -> MAP@k on the judged window
  segments         fit_sample     -> holdout silhouette
with each fit's seconds. The defaults in ml/params.py are chosen from these curves: the smallest cap whose metric
is within 0.002 of the largest measured. Results are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from ingest_features import OUT, RESULTS, machine  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))
from ml.params import ChurnParams, CreditParams, RecommendParams, SegmentParams  # noqa: E402
from warehouse.frames import frame  # noqa: E402

CAPS = {
    "churn": (25_000, 50_000, 100_000, 200_000, 400_000, None),
    "credit_risk": (50_000, 100_000, 200_000, 400_000, None),
    "recommendations": (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000),
    "segments": (25_000, 50_000, 100_000, 200_000, 400_000),
}


def churn(con, caps):
    from ml.churn import train_churn
    from warehouse.features import training_frame

    data, y = training_frame(con, "churned")
    for cap in caps:
        m = train_churn(data, y, ChurnParams(max_train_rows=cap)).metrics
        yield cap, m["fit_rows"], "AUC", m["auc"]


def credit_risk(con, caps):
    from ml.credit_risk import credit_target, train_credit_risk

    features = frame(con.execute("SELECT * FROM features.customer_features"))
    labels = frame(con.execute("SELECT customer_id, value FROM features.labels WHERE label = 'defaulted'"))
    data, y, proxy = credit_target(features, labels if labels["value"].nunique() == 2 else None, 7)
    for cap in caps:
        m = train_credit_risk(data, y, CreditParams(xgb_max_rows=cap or len(data)), proxy=proxy).metrics
        yield cap, min(cap or m["train_rows"], m["train_rows"]), "XGBoost AUC", m["xgb_auc"]


def recommendations(con, caps):
    from ml.recommend import train_recommender
    from warehouse.recommend import load_inputs

    p = RecommendParams()
    inputs = load_inputs(con, p.window_days, p.label_products, p.static_features, p.exclude, training=True)
    for cap in caps:
        m = train_recommender(inputs, RecommendParams(max_train_rows=cap)).metrics
        yield cap, cap, f"MAP@{p.eval_k}", m[f"map_at_{p.eval_k}"]


def segments(con, caps):
    from ml.segments import train_segments

    features = frame(con.execute("SELECT * FROM features.customer_features"))
    for cap in caps:
        m = train_segments(features, SegmentParams(fit_sample=cap)).metrics
        yield cap, m["fit_rows"], "holdout silhouette", m["silhouette"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=str(OUT / "graph_home_1000000"))
    ap.add_argument("--models", default=",".join(CAPS))
    args = ap.parse_args()
    db = Path(args.home) / "warehouse.duckdb"
    lines = [f"\n### {datetime.now(UTC):%Y-%m-%d %H:%M UTC} — `python benchmarks/learning_curve.py --home {args.home}`\n",
             f"Machine: {machine()}. Each model fitted outside Dagster as its asset does, once per cap, on the "
             "home's features and the same holdout; seconds are the whole training call (fit, holdout metrics).\n",
             "| model | cap | rows fitted | holdout metric | value | seconds |", "|---|---:|---:|---|---:|---:|"]
    with duckdb.connect(str(db), read_only=True) as con:
        customers = con.execute("SELECT count(*) FROM features.customer_features").fetchone()[0]
        for name in args.models.split(","):
            curve = globals()[name](con, CAPS[name])
            while True:
                t0 = time.monotonic()
                try:
                    cap, rows, metric, value = next(curve)
                except StopIteration:
                    break
                secs = time.monotonic() - t0
                row = f"| {name} | {cap or 'all'} | {rows:,} | {metric} | {value:.4f} | {secs:.1f} |"
                print(row, flush=True)
                lines.append(row)
    lines.insert(2, f"{customers:,} customers in features.customer_features.\n")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
