"""The serving file on a small hand-made warehouse: what is published (shareable columns only), the views and
the manifest, the atomic swap, rollback, pruning and the Parquet exports."""

from __future__ import annotations

import os
import stat
from datetime import date, datetime

import duckdb
import pandas as pd
import pytest

from orchestration.settings import load_settings
from warehouse.db import Home, connect
from warehouse.scores import write_scores
from warehouse.serving import ServingError, current_version, publish, read_manifest, rollback, versions

SHAREABLE = load_settings()["serving"]["shareable"]
SNAP = date(2025, 6, 30)


def _warehouse(home: Home, customers: int = 4, version: int = 1) -> None:
    ids = [f"C{i}" for i in range(customers)]
    with connect(home.warehouse) as con:
        for s in ("raw", "scores", "ml", "monitoring"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        con.execute("CREATE OR REPLACE TABLE raw.customers AS SELECT * FROM (VALUES " + ", ".join(
            f"('{c}', 'Name Surname {c}', DATE '1980-01-01', 'AG{i % 2}', 'mass', 'North')" for i, c in enumerate(ids))
            + ") t(customer_id, full_name, birth_date, agency_id, segment, region)")
        con.execute("CREATE OR REPLACE TABLE raw.agencies AS SELECT * FROM (VALUES ('AG0', 'Lyon Centre', 'Rhone', "
                    "'Lyon'), ('AG1', 'Nice Gare', 'PACA', 'Nice')) t(agency_id, agency_name, region, city)")
        churn = pd.DataFrame({"customer_id": ids, "churn_probability": [0.9, 0.1, 0.5, 0.2][:customers] * (customers // 4),
                              "risk_level": ["High", "Low", "Medium", "Low"] * (customers // 4)})
        write_scores(con, "churn", churn, version=version, snapshot_date=SNAP, run_id="r1")
        credit = pd.DataFrame({"customer_id": ids, "pd": 0.05, "grade": ["A", "B", "C", "E"] * (customers // 4)})
        write_scores(con, "credit_risk", credit, version=version, snapshot_date=SNAP, run_id="r1")
        recs = pd.DataFrame({"customer_id": [c for c in ids for _ in range(4)], "rank": [1, 2, 3, 4] * customers,
                             "product_id": ["P1", "P2", "P3", "P4"] * customers,
                             "product_name": ["Savings", "Card", "Loan", "Insurance"] * customers, "score": 0.3})
        write_scores(con, "recommendations", recs, version=version, snapshot_date=SNAP, run_id="r1",
                     order_by="customer_id, rank")


@pytest.fixture
def home(tmp_path):
    home = Home.resolve(tmp_path / "home")
    _warehouse(home)
    return home


def _publish(home: Home, run_id: str, **kw):
    with connect(home.warehouse) as con:
        return publish(con, home, run_id=run_id, shareable=SHAREABLE, **kw)


def _q(path, sql):
    with duckdb.connect(str(path), read_only=str(path) != ":memory:") as con:
        return con.execute(sql).fetchall()


def test_publish_writes_tables_views_and_a_manifest_that_matches_them(home):
    out = _publish(home, "run-one")
    manifest = {r[0]: r for r in read_manifest(home.serving)}
    assert set(manifest) == {"scores.churn", "scores.credit_risk", "scores.recommendations", "bi.customers",
                             "bi.agencies", "bi.customer_scores"}
    for name, (_, kind, rows, _at, run_id, _) in manifest.items():
        assert _q(home.serving, f"SELECT count(*) FROM {name}")[0][0] == rows
        assert run_id == "run-one" and kind == "table"  # no registry or drift here, so no views
    assert manifest["scores.recommendations"][2] == 16 and manifest["bi.customer_scores"][2] == 4
    # one row per customer with churn, grade, agency and the top 3 products in rank order
    assert _q(home.serving, """SELECT customer_id, agency_name, churn_probability, churn_risk_level, credit_grade,
                                      top_products FROM bi.customer_scores ORDER BY customer_id LIMIT 1""") == [
        ("C0", "Lyon Centre", 0.9, "High", "A", "Savings, Card, Loan")]
    assert out.version.name.endswith("-run-one.duckdb") and current_version(home) == out.version


def test_only_shareable_columns_leave_the_warehouse(home):
    out = _publish(home, "r")
    cols = {r[0] for r in _q(home.serving, "SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name IN ('customers', 'customer_scores')")}
    assert "full_name" not in cols and "birth_date" not in cols and {"agency_id", "segment", "region"} <= cols
    with open(home.serving, "rb") as f:
        assert b"Surname" not in f.read()  # not even in a page of the file
    for p in out.exports:
        assert b"Surname" not in p.read_bytes()


def test_serving_file_is_complete_read_only_and_has_no_wal(home):
    out = _publish(home, "r")
    assert not stat.S_IMODE(os.stat(home.serving).st_mode) & 0o222
    assert not list(home.root.glob("serving.duckdb.*")) and not list(home.serving_versions.glob("*.wal"))
    assert os.stat(home.serving).st_ino == os.stat(out.version).st_ino  # the swap is a rename of a link


def test_rollback_serves_the_previous_version_and_keeps_a_bounded_number(home):
    first = _publish(home, "run-a").version
    _warehouse(home, customers=8, version=2)
    second = _publish(home, "run-b").version
    assert _q(home.serving, "SELECT count(*) FROM scores.churn")[0][0] == 8
    assert rollback(home) == first and current_version(home) == first
    assert _q(home.serving, "SELECT count(*), min(model_version) FROM scores.churn") == [(4, 1)]
    with pytest.raises(ServingError, match="no earlier serving version"):
        rollback(home)
    assert rollback(home, to=second.name) == second
    for i in range(4):
        _publish(home, f"run-{i}", keep_previous=2)
    assert len(versions(home)) == 3  # the served one and 2 earlier


def test_prune_never_deletes_the_version_being_served(home):
    first = _publish(home, "run-a").version
    _publish(home, "run-b")
    rollback(home)
    kept = [_publish(home, f"run-{i}", keep_previous=0) for i in range(2)]
    assert current_version(home) == kept[-1].version and first not in versions(home)


def test_a_killed_publish_leaves_the_served_file_and_is_cleaned_up(home):
    _publish(home, "run-a")
    half = home.serving_versions / "20990101T000000000000-dead.duckdb.tmp"
    half.write_bytes(b"partial")
    _publish(home, "run-b")
    assert not half.exists() and all(not p.name.endswith(".tmp") for p in home.serving_versions.iterdir())


def test_parquet_exports_are_partitioned_by_snapshot_date(home):
    out = _publish(home, "r")
    churn = home.exports / "churn" / f"snapshot_date={SNAP}" / "scores.parquet"
    assert churn in out.exports
    rows = _q(":memory:", f"SELECT snapshot_date, count(*) FROM read_parquet('{home.exports}/churn/*/*.parquet', "
                          "hive_partitioning = true) GROUP BY 1")
    assert rows == [(SNAP, 4)]
    # a later snapshot adds a partition; the same snapshot again replaces its file
    with connect(home.warehouse) as con:
        write_scores(con, "churn", pd.DataFrame({"customer_id": ["C0"], "churn_probability": [0.5], "risk_level": ["Low"]}),
                     version=1, snapshot_date=date(2025, 7, 31), run_id="r2", scored_at=datetime(2025, 8, 1))
    _publish(home, "r2")
    _publish(home, "r3")
    rows = _q(":memory:", f"SELECT snapshot_date, count(*) FROM read_parquet('{home.exports}/churn/*/*.parquet', "
                          "hive_partitioning = true) GROUP BY 1 ORDER BY 1")
    assert rows == [(SNAP, 4), (date(2025, 7, 31), 1)]


def test_history_keeps_one_set_of_rows_per_snapshot_and_version(home):
    _warehouse(home)  # the same snapshot and version scored again (a rerun after a crash)
    assert _q(home.warehouse, "SELECT count(*) FROM scores.churn_history") == [(4,)]
    _warehouse(home, version=2)
    assert _q(home.warehouse, "SELECT model_version, count(*) FROM scores.churn_history GROUP BY 1 ORDER BY 1") == [
        (1, 4), (2, 4)]


def test_history_takes_a_column_a_new_model_version_adds(home):
    """scores.credit_risk gained model_kind: the history made before it takes the column, NULL in older rows."""
    credit = pd.DataFrame({"customer_id": ["C0", "C1"], "pd": 0.05, "grade": "B", "model_kind": "xgboost"})
    with connect(home.warehouse) as con:
        write_scores(con, "credit_risk", credit, version=2, snapshot_date=SNAP, run_id="r2")
    assert _q(home.warehouse, "SELECT model_version, count(*), count(model_kind) FROM scores.credit_risk_history "
                              "GROUP BY 1 ORDER BY 1") == [(1, 4, 0), (2, 2, 2)]
