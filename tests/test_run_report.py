"""The run report (quality/run_report.py): per model what became of it, from ml.model_runs and monitoring.drift in a
real warehouse; as asset metadata (numbers plotted), run tags, and what `scorehouse status` / `scorehouse sql` print."""

from __future__ import annotations

import re
from datetime import date, datetime

import dagster as dg
import pandas as pd
import pytest

from ml.registry import record_run
from orchestration.cli import main
from quality.run_report import build_report
from warehouse.db import Home, connect
from warehouse.monitoring import write_drift
from warehouse.schema import ensure_schemas
from warehouse.scores import write_scores
from warehouse.serving import publish

SNAP = date(2025, 6, 30)


def _drift(con, run_id: str, model: str, version: int, rows: list[tuple]) -> None:
    write_drift(con, pd.DataFrame(rows, columns=["feature", "kind", "psi", "band", "weight"]), run_id=run_id,
                model=model, version=version, snapshot_date=SNAP)


def _a_run(con, run_id: str = "run-1") -> None:
    """churn promoted v2 and scored, its score drifted; credit_risk's challenger rejected, v1 kept and scored with
    a drifted input but a stable score; clv not trained and never scored."""
    record_run(con, run_id, "churn", training="promoted", challenger_version=2, champion_version=2)
    record_run(con, run_id, "churn", scoring="scored", rows_scored=1000)
    _drift(con, run_id, "churn", 2, [("churn_probability", "score", 0.31, "alert", None),
                                     ("churn_risk_level", "score", 0.12, "warn", None),
                                     ("age", "feature", 0.05, "stable", 0.6), ("income", "feature", 0.2, "warn", 0.4)])
    record_run(con, run_id, "credit_risk", training="rejected", training_note="auc 0.7100 not >= 0.8",
               challenger_version=3, champion_version=1)
    record_run(con, run_id, "credit_risk", scoring="scored", rows_scored=990)
    _drift(con, run_id, "credit_risk", 1, [("probability_of_default", "score", 0.02, "stable", None),
                                           ("tenure_months", "feature", 3.5, "alert", 0.9),
                                           ("balance_now", "feature", 9.0, "skipped", 0.1)])
    record_run(con, run_id, "clv", training="not_trained", training_note="no purchases after the snapshot")
    record_run(con, run_id, "clv", scoring="no_champion")


def test_report_per_model_numbers_and_tags(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        _a_run(con)
        record_run(con, "other-run", "churn", training="kept", champion_version=1)  # another run: not in this one
        report = build_report(con, "run-1", published_at=datetime(2025, 7, 1, 6, 30))
    by = {m.model: m for m in report.models}
    assert list(by) == ["churn", "clv", "credit_risk"]
    churn, credit, clv = by["churn"], by["credit_risk"], by["clv"]
    assert (churn.outcome, churn.champion_version, churn.rows_scored, churn.score_psi) == ("promoted", 2, 1000, 0.31)
    assert (churn.worst_input, churn.worst_input_psi, churn.drift_band) == ("income", 0.2, "alert")
    # the skipped input (PSI 9) is not the worst: it is not counted; a drifted input under a stable score is warn
    assert (credit.outcome, credit.champion_version, credit.worst_input, credit.worst_input_psi) == (
        "rejected", 1, "tenure_months", 3.5)
    assert credit.drift_band == "warn" and credit.score_psi == 0.02
    assert (clv.outcome, clv.scoring, clv.rows_scored, clv.score_psi, clv.drift_band) == (
        "not_trained", "no_champion", None, None, None)

    md = report.metadata()
    # numbers Dagster plots run after run; a figure not measured is left out (a gap), not a zero
    assert md["churn_score_psi"] == 0.31 and md["credit_risk_worst_input_psi"] == 3.5
    assert md["churn_rows_scored"] == 1000 and "clv_rows_scored" not in md and "clv_score_psi" not in md
    assert (md["models_promoted"], md["models_rejected"], md["models_not_trained"], md["models_kept"]) == (1, 1, 1, 0)
    assert (md["models_scored"], md["models_drift_alert"], md["models_drift_warn"]) == (2, 1, 1)
    assert md["churn_champion"] == "v2" and md["clv_champion"] == "none" and md["published_at"] == "2025-07-01 06:30:00"
    assert all(isinstance(md[k], int | float) for k in md if k.startswith("models_") or k.endswith(("_psi", "_scored")))
    assert md["credit_risk_outcome"] == "kept champion v1 (challenger v3 rejected: auc 0.7100 not >= 0.8); " \
                                        "scored with champion v1"

    assert report.tags() == {"scorehouse/drift": "alert", "scorehouse/gates": "1 rejected, 1 not trained, 1 promoted",
                             "scorehouse/scored": "2 of 3", "scorehouse/published": "yes"}
    text = "\n".join(report.lines())
    assert "churn" in text and "0.310" in text and "3.500 (tenure_months)" in text
    assert "Published: 2025-07-01 06:30:00" in text


def test_a_clean_scoring_run_is_tagged_as_such(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        record_run(con, "r", "churn", scoring="scored", rows_scored=10, champion_version=4)
        _drift(con, "r", "churn", 4, [("churn_probability", "score", 0.01, "stable", None)])
        report = build_report(con, "r")
    assert report.tags() == {"scorehouse/drift": "stable", "scorehouse/scored": "1 of 1", "scorehouse/published": "no"}
    assert report.models[0].outcome == "scored" and report.metadata()["published_at"] == "not published"
    assert report.lines()[-1] == "Published: no (serving.duckdb still holds an earlier run's scores)"


def test_a_model_whose_every_column_was_skipped_says_why_instead_of_stable(tmp_path):
    """A book-level model scores a few dozen agencies: too few rows for PSI, so every column is measured but not
    counted. Its line says so; it used to read "stable" beside empty PSI columns."""
    too_few = "40 rows: too few for PSI (monitoring.drift.min_rows 200)"
    with connect(tmp_path / "w.duckdb") as con:
        record_run(con, "r", "agency_performance", scoring="scored", rows_scored=40, champion_version=1)
        write_drift(con, pd.DataFrame([("performance_score", "score", 0.4, "skipped", None, too_few),
                                       ("clients", "feature", 0.2, "skipped", 1.0, too_few)],
                                      columns=["feature", "kind", "psi", "band", "weight", "note"]),
                    run_id="r", model="agency_performance", version=1, snapshot_date=SNAP)
        record_run(con, "r", "churn", scoring="scored", rows_scored=10, champion_version=4)
        _drift(con, "r", "churn", 4, [("churn_probability", "score", 0.01, "stable", None)])
        report = build_report(con, "r")
    agency = next(m for m in report.models if m.model == "agency_performance")
    assert (agency.drift_band, agency.score_psi, agency.worst_input) == (None, None, None)
    line = next(x for x in report.lines() if x.startswith("agency_performance "))
    assert line.endswith(f"not counted: {too_few}") and "stable" not in line
    assert report.drift == "stable" and report.metadata()["models_drift_warn"] == 0  # churn's band, nothing else


def test_a_run_that_scored_nothing_says_so_instead_of_an_earlier_publish(tmp_path):
    """fraud_ulb's first run: every model not trained, nothing scored, no serving file anywhere."""
    with connect(tmp_path / "w.duckdb") as con:
        record_run(con, "r", "churn", training="not_trained", training_note="no 'churned' outcomes")
        record_run(con, "r", "churn", scoring="no_champion")
        report = build_report(con, "r")
    assert report.lines()[-1] == "Published: no (no model scored in this run)"


def test_an_empty_warehouse_reports_nothing(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        report = build_report(con, "r")
    assert report.models == [] and report.tags() == {} and report.drift is None


@pytest.fixture
def home_with_a_run(tmp_path, monkeypatch):
    """A home with a warehouse the run wrote, its published serving file and the run in Dagster's storage."""
    from assets.models import SPECS
    from assets.settings import load_settings

    monkeypatch.setenv("SCOREHOUSE_HOME", str(tmp_path))  # cmd_status sets it and DAGSTER_HOME: undone after
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    home = Home.resolve(tmp_path)
    with connect(home.warehouse) as con:
        ensure_schemas(con)
        _a_run(con, "run-1")
        write_scores(con, "churn", pd.DataFrame({"customer_id": ["C1", "C2"], "churn_probability": [0.8, 0.1],
                                                 "churn_risk_level": ["High", "Low"]}),
                     version=2, snapshot_date=SNAP, run_id="run-1")
        publish(con, home, run_id="run-1", shareable=load_settings()["serving"]["shareable"],
                models=[s.table for s in SPECS], exports=False)
    from orchestration.home import ensure_dagster_home

    ensure_dagster_home(home.dagster_home)
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        instance.add_run(dg.DagsterRun(job_name="scorehouse", run_id="run-1", status=dg.DagsterRunStatus.SUCCESS,
                                       tags={"scorehouse/trigger": "cli"}))
    return home


def test_status_prints_the_last_runs_report_and_its_tags(home_with_a_run, capsys):
    home = home_with_a_run
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        report = build_report_for(home)
        instance.add_run_tags("run-1", report.tags())
    assert main(["status", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "Last run run-1: job scorehouse, SUCCESS" in out and "(by cli)" in out
    assert "scorehouse/drift: alert" in out and "scorehouse/gates: 1 rejected, 1 not trained, 1 promoted" in out
    assert "promoted v2; scored with champion v2" in out and "Published: " in out and "not published" not in out


def build_report_for(home: Home):
    with connect(home.warehouse, read_only=True) as con:
        return build_report(con, "run-1")


def test_sql_queries_the_serving_file_read_only(home_with_a_run, capsys, monkeypatch):
    home = home_with_a_run
    assert main(["sql", "--home", str(home.root), "SELECT customer_id, churn_risk_level FROM bi.customer_scores "
                 "ORDER BY churn_probability DESC LIMIT 1"]) == 0
    out = capsys.readouterr().out
    assert "C1" in out and "High" in out and "C2" not in out
    # it cannot write: the analyst's tool is read-only
    assert main(["sql", "--home", str(home.root), "CREATE TABLE x AS SELECT 1"]) == 1
    assert "read-only" in capsys.readouterr().err.lower()
    # the prompt: statements one per line from stdin, `.tables` lists the manifest
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(".tables\nSELECT count(*) AS n FROM scores.churn\n.quit\n"))
    assert main(["sql", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "bi.customer_scores" in out and "scores.churn_history" in out and re.search(r"│\s+2 │", out)
