"""The serving file on a small hand-made warehouse: what is published (shareable columns only), the views and
the manifest, the atomic swap, rollback, pruning and the Parquet exports."""

from __future__ import annotations

import json
import os
import stat
from datetime import date, datetime

import duckdb
import pandas as pd
import pytest

from assets.models import SPECS
from assets.settings import load_settings
from warehouse.db import Home, connect
from warehouse.scores import sorted_by, write_scores
from warehouse.serving import ServingError, current_version, publish, read_manifest, rollback, versions

SHAREABLE = load_settings()["serving"]["shareable"]
SNAP = date(2025, 6, 30)
MODELS = [s.table for s in SPECS]


def _warehouse(home: Home, customers: int = 4, version: int = 1, snap: date = SNAP) -> None:
    ids = [f"C{i}" for i in range(customers)]
    with connect(home.warehouse) as con:
        for s in ("raw", "scores", "ml", "monitoring"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        con.execute("CREATE OR REPLACE TABLE raw.customers AS SELECT * FROM (VALUES " + ", ".join(
            f"('{c}', 'Name Surname {c}', DATE '1980-01-01', 'AG{i % 2}', 'mass', 'North')" for i, c in enumerate(ids))
            + ") t(customer_id, full_name, birth_date, agency_id, segment, region)")
        con.execute("CREATE OR REPLACE TABLE raw.agencies AS SELECT * FROM (VALUES ('AG0', 'Lyon Centre', 'Rhone', "
                    "'Lyon'), ('AG1', 'Nice Gare', 'PACA', 'Nice')) t(agency_id, agency_name, region, city)")
        # as the scoring assets write them: the tables' names (ModelSpec.table), a float32 probability as DOUBLE
        churn = pd.DataFrame({"customer_id": ids, "churn_probability": [0.9, 0.1, 0.5, 0.2][:customers] * (customers // 4),
                              "churn_risk_level": ["High", "Low", "Medium", "Low"] * (customers // 4),
                              "churn_reason_1": "recency_days", "retention_action": "call"})
        write_scores(con, "churn", churn, version=version, snapshot_date=snap, run_id="r1")
        credit = pd.DataFrame({"customer_id": ids, "probability_of_default": 0.05, "credit_reason_1": "income",
                               "credit_grade": ["A", "B", "C", "E"] * (customers // 4)})
        write_scores(con, "credit_risk", credit, version=version, snapshot_date=snap, run_id="r1")
        segments = pd.DataFrame({"customer_id": ids, "behaviour_segment_id": 0, "behaviour_segment": "savers",
                                 "rfm_segment": "Champions"})
        write_scores(con, "segments", segments, version=version, snapshot_date=snap, run_id="r1")
        recs = pd.DataFrame({"customer_id": [c for c in ids for _ in range(4)], "rank": [1, 2, 3, 4] * customers,
                             "product_id": ["P1", "P2", "P3", "P4"] * customers,
                             "product_name": ["Savings", "Card", "Loan", "Insurance"] * customers, "propensity": 0.3})
        write_scores(con, "recommendations", recs, version=version, snapshot_date=snap, run_id="r1",
                     order_by="customer_id, rank")


@pytest.fixture
def home(tmp_path):
    home = Home.resolve(tmp_path / "home")
    _warehouse(home)
    return home


def _publish(home: Home, run_id: str, **kw):
    with connect(home.warehouse) as con:
        return publish(con, home, run_id=run_id, shareable=SHAREABLE, models=MODELS, **kw)


def _q(path, sql):
    with duckdb.connect(str(path), read_only=str(path) != ":memory:") as con:
        return con.execute(sql).fetchall()


def test_publish_writes_tables_views_and_a_manifest_that_matches_them(home):
    out = _publish(home, "run-one")
    manifest = {r[0]: r for r in read_manifest(home.serving)}
    assert set(manifest) == {f"scores.{m}{h}" for m in ("churn", "credit_risk", "recommendations", "segments")
                             for h in ("", "_history")} | {"bi.customers", "bi.agencies", "bi.customer_scores",
                                                             "bi.score_trend"}
    for name, (_, kind, rows, _at, run_id, _) in manifest.items():
        assert _q(home.serving, f"SELECT count(*) FROM {name}")[0][0] == rows
        assert run_id == "run-one" and kind == ("view" if name == "bi.score_trend" else "table")
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
    assert "full_name" not in cols and "birth_date" not in cols and {"agency_id", "bank_segment", "region"} <= cols
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
        write_scores(con, "churn", pd.DataFrame({"customer_id": ["C0"], "churn_probability": [0.5],
                                                 "churn_risk_level": ["Low"]}),
                     version=1, snapshot_date=date(2025, 7, 31), run_id="r2", scored_at=datetime(2025, 8, 1))
    _publish(home, "r2")
    _publish(home, "r3")
    rows = _q(":memory:", f"SELECT snapshot_date, count(*) FROM read_parquet('{home.exports}/churn/*/*.parquet', "
                          "hive_partitioning = true) GROUP BY 1 ORDER BY 1")
    assert rows == [(SNAP, 4), (date(2025, 7, 31), 1)]


def test_scores_are_stored_in_key_order_whether_or_not_they_arrive_in_it(tmp_path):
    # arrivals in order are written as they are (no second sorted copy); any other order is sorted
    rows = [("C1", 1, None), ("C1", 2, "b"), ("C2", 1, "a"), ("C10", 1, "c")]
    ordered = pd.DataFrame(sorted(rows), columns=["customer_id", "rank", "note"])
    assert sorted_by(ordered, ["customer_id", "rank"])
    assert not sorted_by(ordered.iloc[::-1], ["customer_id", "rank"])
    assert not sorted_by(ordered.iloc[[0, 2, 1, 3]], ["customer_id", "rank"])  # ties broken by rank
    assert not sorted_by(ordered, ["note"])  # a NULL: leave it to DuckDB
    assert sorted_by(pd.DataFrame({"x": ["b", "z", "é"]}), ["x"])  # code point order, as DuckDB sorts UTF-8
    assert not sorted_by(pd.DataFrame({"x": ["b", "é", "z"]}), ["x"])
    with connect(tmp_path / "w.duckdb") as con:
        con.execute("CREATE SCHEMA scores")
        for frame in (ordered, ordered.iloc[[3, 1, 0, 2]]):
            write_scores(con, "recommendations", frame, version=1, snapshot_date=SNAP, run_id="r",
                         order_by="customer_id, rank")
            got = con.execute("SELECT customer_id, rank FROM scores.recommendations ORDER BY rowid").fetchall()
            assert got == [("C1", 1), ("C1", 2), ("C10", 1), ("C2", 1)]


def test_history_keeps_one_set_of_rows_per_snapshot_and_version(home):
    _warehouse(home)  # the same snapshot and version scored again (a rerun after a crash)
    assert _q(home.warehouse, "SELECT count(*) FROM scores.churn_history") == [(4,)]
    _warehouse(home, version=2)
    assert _q(home.warehouse, "SELECT model_version, count(*) FROM scores.churn_history GROUP BY 1 ORDER BY 1") == [
        (1, 4), (2, 4)]


def test_history_takes_a_column_a_new_model_version_adds(home):
    """scores.credit_risk gained model_kind: the history made before it takes the column, NULL in older rows."""
    credit = pd.DataFrame({"customer_id": ["C0", "C1"], "probability_of_default": 0.05, "credit_grade": "B",
                           "model_kind": "xgboost"})
    with connect(home.warehouse) as con:
        write_scores(con, "credit_risk", credit, version=2, snapshot_date=SNAP, run_id="r2")
    assert _q(home.warehouse, "SELECT model_version, count(*), count(model_kind) FROM scores.credit_risk_history "
                              "GROUP BY 1 ORDER BY 1") == [(1, 4, 0), (2, 2, 2)]


# ------------------------------------------------------------------------------ what an analyst reads (issue 13)

def _columns(path, table: str) -> dict[str, tuple[str, str | None]]:
    schema, name = table.split(".")
    return {c: (t, d) for c, t, d in _q(path, "SELECT column_name, data_type, comment FROM duckdb_columns() "
                                              f"WHERE schema_name = '{schema}' AND table_name = '{name}'")}


def test_every_column_of_every_table_and_view_has_a_comment(home):
    with connect(home.warehouse) as con:  # the registry, a run and drift too: every kind of table
        from ml.registry import record_run, register
        from warehouse.monitoring import write_drift

        register(con, "churn", 1, snapshot_date=SNAP, data_hash="h", features=["age"], params={}, metrics={"auc": 0.9},
                 artifact_path="/m", run_id="r1", alias="champion")
        record_run(con, "r1", "churn", training="promoted", champion_version=1, scoring="scored", rows_scored=4)
        write_drift(con, pd.DataFrame({"feature": ["age"], "kind": ["feature"], "psi": [0.01], "band": ["stable"]}),
                    run_id="r1", model="churn", version=1, snapshot_date=SNAP)
    _publish(home, "r")
    undocumented = _q(home.serving, "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns() "
                                    "WHERE NOT internal AND (comment IS NULL OR comment = '')")
    assert undocumented == []
    tables = {t for (t,) in _q(home.serving, "SELECT table_name FROM manifest")}
    assert {"bi.model_summary", "bi.drift_summary", "ml.model_runs", "monitoring.drift", "bi.score_trend"} <= tables
    versions = {t: json.loads(v) for t, v in _q(home.serving, "SELECT table_name, model_versions FROM manifest")}
    assert versions["ml.model_registry"] == versions["bi.model_summary"] == {"churn": 1}
    assert versions["scores.segments"] == {"segments": 1} and versions["bi.customers"] == {}
    # a table's comment says what it is; a scored column's, what the model means by it
    assert "one row per customer" in _q(home.serving, "SELECT comment FROM duckdb_tables() WHERE table_name = 'churn'")[0][0]
    assert "Calibrated probability" in _columns(home.serving, "bi.customer_scores")["churn_probability"][1]


def test_one_name_per_concept_from_scored_table_to_customer_scores(home):
    _publish(home, "r")
    wide = _columns(home.serving, "bi.customer_scores")
    for spec in SPECS:
        table = _columns(home.serving, f"scores.{spec.name}") if spec.name != "clv" else {}
        for col in spec.table.customer_scores():
            if col.name in table:  # the same name, type and meaning in the model's table and the wide one
                assert col.name in wide and wide[col.name] == table[col.name], col.name
    # churn and credit reasons side by side; the three segments named for what they are
    assert {"churn_reason_1", "credit_reason_1", "retention_action", "bank_segment", "behaviour_segment",
            "rfm_segment"} <= set(wide)
    assert not {"risk_level", "recommended_action", "pd", "grade", "segment", "segment_name", "reason_1"} & set(wide)
    assert "bank_segment" in _columns(home.serving, "bi.customers")  # the dimension says it the same way


def test_customer_scores_carry_each_models_version_and_the_snapshot(home):
    _publish(home, "r")
    rows = _q(home.serving, "SELECT churn_model_version, credit_risk_model_version, recommendations_model_version, "
                            "snapshot_date FROM bi.customer_scores")
    assert rows and set(rows) == {(1, 1, 1, SNAP)}
    versions = dict(_q(home.serving, "SELECT table_name, model_versions FROM manifest"))
    assert json.loads(versions["bi.customer_scores"]) == {"churn": 1, "credit_risk": 1, "recommendations": 1,
                                                          "segments": 1}


def test_a_model_without_scores_keeps_its_columns_in_customer_scores(home):
    """No CLV scores in this warehouse (a bank whose CLV model was not trained), and no churn_reason_2: the columns
    are there, typed and described, NULL, so a dashboard or a docs/bi.md recipe naming them still runs (they used
    to be left out)."""
    _publish(home, "r")
    wide = _columns(home.serving, "bi.customer_scores")
    clv = {c: wide[c][0] for c in ("p_alive", "clv", "clv_tier", "clv_model_version")}
    assert clv == {"p_alive": "DOUBLE", "clv": "DOUBLE", "clv_tier": "VARCHAR", "clv_model_version": "INTEGER"}
    assert all(len(wide[c][1] or "") > 10 for c in clv)
    assert _q(home.serving, "SELECT count(*), count(clv), count(clv_tier), count(churn_probability) "
                            "FROM bi.customer_scores") == [(4, 0, 0, 4)]
    # the columns sit where they would with scores: the wide table's shape does not depend on what scored
    spec_order = [c.name for s in SPECS for c in s.table.customer_scores()]
    assert [c for c in wide if c in spec_order] == spec_order


def test_history_keeps_the_last_snapshots_and_score_trend_follows_them(home):
    for i, snap in enumerate([date(2025, 7, 31), date(2025, 8, 31), date(2025, 9, 30)]):
        _warehouse(home, snap=snap, version=1 + (i == 2))
    with connect(home.warehouse) as con:  # the last snapshot scored again by v3: the trend shows the last
        write_scores(con, "churn", pd.DataFrame({"customer_id": ["C0"], "churn_probability": [0.3],
                                                 "churn_risk_level": ["Medium"]}),
                     version=3, snapshot_date=date(2025, 9, 30), run_id="r9", scored_at=datetime(2099, 1, 1))
    _publish(home, "r", history_snapshots=3)
    assert _q(home.serving, "SELECT snapshot_date, model_version, count(*) FROM scores.churn_history "
                            "GROUP BY ALL ORDER BY 1") == [(date(2025, 7, 31), 1, 4), (date(2025, 8, 31), 1, 4),
                                                           (date(2025, 9, 30), 3, 1)]
    trend = _q(home.serving, "SELECT snapshot_date, model_version, customers, mean_value FROM bi.score_trend "
                             "WHERE model = 'churn' AND column_name = 'churn_probability' ORDER BY 1")
    assert trend == [(date(2025, 7, 31), 1, 4, pytest.approx(0.425)), (date(2025, 8, 31), 1, 4, pytest.approx(0.425)),
                     (date(2025, 9, 30), 3, 1, pytest.approx(0.3))]
    levels = _q(home.serving, "SELECT category, share FROM bi.score_trend WHERE column_name = 'churn_risk_level' "
                              "AND snapshot_date = DATE '2025-08-31' ORDER BY 1")
    assert levels == [("High", 0.25), ("Low", 0.5), ("Medium", 0.25)]


def test_scores_are_double_and_renamed_history_stays_one_series(home):
    """A history written before the rename (risk_level) and as float32 takes the new name and DOUBLE."""
    with connect(home.warehouse) as con:
        con.execute("DROP TABLE scores.churn_history")
        con.execute("CREATE TABLE scores.churn_history AS SELECT customer_id, churn_probability::FLOAT AS "
                    "churn_probability, churn_risk_level AS risk_level, model_name, 0 AS model_version, "
                    "snapshot_date - 31 AS snapshot_date, scored_at, run_id FROM scores.churn")
        frame = pd.DataFrame({"customer_id": ["C0"], "churn_probability": pd.array([0.7], dtype="float32"),
                              "churn_risk_level": ["High"]}).astype({"churn_probability": "float64"})
        write_scores(con, "churn", frame, version=2, snapshot_date=SNAP, run_id="r2",
                     renamed={"risk_level": "churn_risk_level"})
        assert dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE scores.churn_history)").fetchall())[
            "churn_probability"] == "DOUBLE"
        assert con.execute("SELECT count(churn_risk_level) FROM scores.churn_history").fetchone()[0] == 5
    _publish(home, "r")
    assert {t for n, (t, _) in _columns(home.serving, "bi.customer_scores").items()
            if n in ("churn_probability", "probability_of_default")} == {"DOUBLE"}
