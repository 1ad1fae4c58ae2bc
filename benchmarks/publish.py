"""Publish at scale: the serving file and Parquet exports for 1M scored customers (5M recommendation rows).

    .venv/bin/python benchmarks/publish.py [--customers 1000000]

Builds a warehouse with scores tables of the real shapes (synthetic values, made in DuckDB), then times
`warehouse.serving.publish` and reports the serving file's size and the peak RSS. Appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from assets.models import SPECS
from assets.settings import load_settings
from warehouse.db import Home, connect
from warehouse.serving import publish

OUT = Path(__file__).parent / "out" / "publish"


def build(home: Home, n: int) -> None:
    with connect(home.warehouse) as con:
        for s in ("raw", "scores"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        ids = f"SELECT 'C' || lpad(i::VARCHAR, 8, '0') AS customer_id, i FROM range({n}) t(i)"
        meta = f"'{{m}}' AS model_name, 1 AS model_version, DATE '{date(2025, 6, 30)}' AS snapshot_date, " \
               "now()::TIMESTAMP AS scored_at, 'bench' AS run_id"
        con.execute(f"CREATE TABLE raw.customers AS SELECT customer_id, 'AG' || (i % 40) AS agency_id, 'mass' AS segment, "
                    f"'North' AS region FROM ({ids})")
        con.execute("CREATE TABLE raw.agencies AS SELECT 'AG' || i AS agency_id, 'Agency ' || i AS agency_name, "
                    "'North' AS region, 'City' AS city FROM range(40) t(i)")
        con.execute(f"CREATE TABLE scores.churn AS SELECT customer_id, random() AS churn_probability, "
                    f"CASE WHEN i % 10 = 0 THEN 'High' WHEN i % 3 = 0 THEN 'Medium' ELSE 'Low' END AS churn_risk_level, "
                    f"'recency_days' AS churn_reason_1, 'balance_trend' AS churn_reason_2, NULL::VARCHAR AS churn_reason_3, "
                    f"NULL::VARCHAR AS retention_action, {meta.format(m='churn')} FROM ({ids})")
        con.execute(f"CREATE TABLE scores.segments AS SELECT customer_id, i % 5 AS behaviour_segment_id, 'segment ' || (i % 5) "
                    f"AS behaviour_segment, 'Loyal customers' AS rfm_segment, random() AS centroid_distance, "
                    f"{meta.format(m='segments')} FROM ({ids})")
        con.execute(f"CREATE TABLE scores.credit_risk AS SELECT customer_id, 600 + i % 100 AS credit_points, random() / 5 AS probability_of_default, "
                    f"chr(65 + (i % 5)::INT) AS credit_grade, 'income' AS credit_reason_1, NULL::VARCHAR AS credit_reason_2, "
                    f"NULL::VARCHAR AS credit_reason_3, 'defaulted' AS target_kind, {meta.format(m='credit_risk')} FROM ({ids})")
        con.execute(f"CREATE TABLE scores.clv AS SELECT customer_id, random() * 10 AS expected_purchases_horizon, "
                    f"random() AS p_alive, random() * 100 AS expected_avg_value, random() * 5000 AS clv, 'Gold' AS clv_tier, "
                    f"{meta.format(m='clv')} FROM ({ids})")
        con.execute(f"CREATE TABLE scores.recommendations AS SELECT customer_id, r AS rank, 'P' || r AS product_id, "
                    f"'Product ' || r AS product_name, random() AS propensity, 'model' AS source, "
                    f"{meta.format(m='recommendations')} FROM ({ids}), range(1, 6) t(r)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    n = ap.parse_args().customers
    shutil.rmtree(OUT, ignore_errors=True)
    home = Home.resolve(OUT)
    build(home, n)
    cfg = load_settings()["serving"]
    t0 = time.monotonic()
    with connect(home.warehouse) as con:
        out = publish(con, home, run_id="benchmark", shareable=cfg["shareable"], keep_previous=cfg["keep_previous"],
                      models=[s.table for s in SPECS])
    secs = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    size = out.version.stat().st_size / 1024**2
    exports = sum(p.stat().st_size for p in out.exports) / 1024**2
    # what a BI user waits for: the top of the churn list through the joined view, on a read-only connection
    with duckdb.connect(str(home.serving), read_only=True) as con:
        t0 = time.monotonic()
        con.execute("SELECT * FROM bi.customer_scores ORDER BY churn_probability DESC LIMIT 100").fetchall()
        query = time.monotonic() - t0
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n### {stamp} — `python benchmarks/publish.py --customers {n}`\n\n"
            f"Publish of {n:,} scored customers ({5 * n:,} recommendation rows, five scores tables, customer and agency "
            f"dimensions): {secs:.1f} s; serving file {size:,.0f} MB, Parquet exports {exports:,.0f} MB; peak RSS of the "
            f"process {rss:.2f} GB. Top 100 by churn probability through `bi.customer_scores`: {query:.2f} s.\n")
    print(text)
    with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
