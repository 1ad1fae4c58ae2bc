"""Churn through Dagster on a temp home: challenger -> blocking gate -> champion -> scores.churn, and a
challenger that fails its gate leaves the champion and the scores as they were."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import duckdb
import pytest

from assets.resources import Settings, Source, Warehouse
from orchestration.definitions import defs
from warehouse.synthetic import generate_bank


def materialize(landing, home, job: str = "scorehouse") -> dg.ExecuteInProcessResult:
    resources = {"warehouse": Warehouse(home=str(home)), "source": Source(source="synthetic", landing=str(landing)),
                 "settings": Settings(home=str(home), source="synthetic")}
    job = defs.resolve_job_def(job)
    # No instance given: Dagster's in-memory one. These tests read the run's result and the warehouse; a SQLite
    # instance (dg.instance_for_test) spent ~20 s of this module on its event log alone (an engine, a connection
    # and a commit per event). The home's own storage is the CLI's, tested end to end.
    return job.execute_in_process(resources=resources, raise_on_error=False)


def q(home, sql):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def metadata_of(result, key: list[str], name: str):
    """The value of metadata entry `name` on the run's materialization of asset `key`."""
    return next(e.materialization.metadata[name].value for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(key))


MODELS = ("agency_performance", "churn", "clv", "credit_risk", "fraud", "manager_performance", "recommendations",
          "segments")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo's bank through three runs, once: everything trained; a retrain whose churn gate is out of reach;
    daily scoring. Each run's warehouse is kept as it was after it, so every test reads the state it is about
    whatever order the tests run in."""
    tmp = tmp_path_factory.mktemp("models")
    landing, home = tmp / "landing", tmp / "home"
    generate_bank(landing, customers=20_000, fraud_rate=0.02, manager_effect=1.0)  # the bank `make demo` generates
    out = {}
    for name, job, config in (("first", "scorehouse", None),
                              ("retrain", "retrain", "models:\n  churn:\n    gate:\n      min: {auc: 0.999}\n"),
                              ("score", "score", None)):
        if config:
            (home / "scorehouse.yaml").write_text(config)
        result = materialize(landing, home, job)
        (home / "scorehouse.yaml").unlink(missing_ok=True)
        kept = tmp / f"after-{name}"
        kept.mkdir()
        for db in ("warehouse.duckdb", "serving.duckdb"):
            shutil.copy(home / db, kept / db)
        out[name] = (result, kept)
    return out


def test_first_challenger_becomes_champion_and_scores_everyone(runs):
    result, home = runs["first"]
    assert result.success
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "churn_gate")
    assert gate.passed and gate.metadata["champion"].value == "none yet"
    assert q(home, "SELECT version, alias FROM ml.model_registry WHERE model = 'churn'") == [(1, "champion")]
    population = q(home, "SELECT count(*) FROM features.population")[0][0]
    assert q(home, "SELECT count(*), count(DISTINCT customer_id), min(model_version), max(model_version) "
                   "FROM scores.churn") == [(population, population, 1, 1)]
    assert q(home, "SELECT count(*) FROM scores.churn_history") == [(population,)]
    # churners (labels after the snapshot) score far higher than the rest: the scores carry signal
    (churned, stayed), = q(home, """
        SELECT avg(churn_probability) FILTER (WHERE l.value = 1), avg(churn_probability) FILTER (WHERE l.value = 0)
        FROM scores.churn s JOIN features.labels l ON l.customer_id = s.customer_id AND l.label = 'churned'""")
    assert churned > 2 * stayed
    levels = dict(q(home, "SELECT churn_risk_level, count(*) FROM scores.churn GROUP BY 1"))
    assert set(levels) <= {"Low", "Medium", "High"} and levels.get("High", 0) > 0
    assert q(home, "SELECT count(*) FROM scores.churn WHERE churn_risk_level = 'High' AND retention_action IS NULL") == [(0,)]
    # the population scored is the one trained on: every drift check passes with PSI 0 on the same data
    drift = {c.check_name: c for c in result.get_asset_check_evaluations() if c.check_name.endswith("_drift")}
    assert set(drift) == {f"{m}_drift" for m in MODELS}
    assert all(c.passed for c in drift.values())
    (n, max_psi, models), = q(home, "SELECT count(*), max(psi), count(DISTINCT model) FROM monitoring.drift")
    assert n > 50 and max_psi < 1e-9 and models == len(MODELS)
    churn = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["scores", "churn"]))
    shown = churn.materialization.metadata["churn_probability_vs_reference"].value
    assert "reference (v1" in shown and "this run" in shown
    # the publish shows BI's joined table: one row per scored customer, its schema and first rows
    published = next(e for e in result.get_asset_materialization_events()
                     if e.asset_key == dg.AssetKey(["serving", "published"])).materialization.metadata
    assert published["dagster/row_count"].value == population
    assert "churn_probability" in published["preview"].value and "customer_id" in published["preview"].value
    # the run's report: what became of each model, as numbers the UI plots run after run
    report = next(e for e in result.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(["serving", "run_report"])).materialization.metadata
    assert report["models_promoted"].value == len(MODELS) and report["models_scored"].value == len(MODELS)
    assert report["churn_rows_scored"].value == population and report["churn_score_psi"].value < 1e-9
    assert report["churn_champion"].value == "v1" and report["published_at"].value != "not published"


def test_every_model_is_gated_promoted_and_scores_everyone(runs):
    _, home = runs["first"]
    # the demo's bank: every model passes its gate on the first run
    assert q(home, "SELECT model, version, alias FROM ml.model_registry ORDER BY 1") == [
        (m, 1, "champion") for m in MODELS]
    population = q(home, "SELECT count(*) FROM features.population")[0][0]
    (n, ids, k, unnamed, no_rfm), = q(home, """SELECT count(*), count(DISTINCT customer_id), count(DISTINCT behaviour_segment),
        count(*) FILTER (WHERE behaviour_segment IS NULL OR behaviour_segment = ''), count(*) FILTER (WHERE rfm_segment IS NULL)
        FROM scores.segments""")
    assert (n, ids, unnamed, no_rfm) == (population, population, 0, 0) and 4 <= k <= 6
    for model in ("credit_risk", "clv"):
        assert q(home, f"SELECT count(*), count(DISTINCT customer_id) FROM scores.{model}") == [(population, population)]
    assert q(home, "SELECT count(*) FROM scores.credit_risk WHERE target_kind = 'defaulted' AND probability_of_default BETWEEN 0 AND 1"
                   ) == [(population,)]
    # credit risk: the kind the champion policy chose scored every customer; the registry says which and why
    (credit,) = [json.loads(v) for (v,) in q(home, "SELECT metrics FROM ml.model_registry WHERE model = 'credit_risk'")]
    assert q(home, "SELECT DISTINCT model_kind FROM scores.credit_risk") == [(credit["model_kind"],)]
    assert credit["auc"] == credit[{"scorecard": "scorecard_auc", "xgboost": "xgb_auc"}[credit["model_kind"]]]
    assert credit["champion_policy"] == "best" and credit["model_kind_why"].startswith("best: the ")
    # recommendations: 1..5 ranks per customer, never a product the customer holds at the snapshot
    assert q(home, "SELECT min(rank), max(rank), count(DISTINCT customer_id) FROM scores.recommendations") == [
        (1, 5, population)]
    assert q(home, """SELECT count(*) FROM scores.recommendations r JOIN raw.accounts a
        ON a.customer_id = r.customer_id AND a.product_id = r.product_id
        WHERE a.opened_date <= r.snapshot_date AND (a.closed_date IS NULL OR a.closed_date > r.snapshot_date)""") == [(0,)]


def test_each_version_is_profiled_once_on_the_population_it_was_trained_on(runs):
    """The run that trains and scores a version makes its drift reference from that scoring (not by scoring
    everyone a second time at training); a training-only job profiles it at training. No version is left pending."""
    (first, kept), (retrain, _) = runs["first"], runs["retrain"]

    def profiled(result, model):
        return metadata_of(result, ["ml", f"{model}_challenger"], "reference_profile")

    assert {m: profiled(first, m) for m in MODELS} == {
        m: f"from its first scoring (scores/{m} in this run)" for m in MODELS}
    assert all(profiled(retrain, m).startswith("at training (") for m in MODELS)
    models = kept.parent / "home" / "models"
    for m in MODELS:
        for v in (1, 2):
            assert (models / m / f"v{v}" / "reference.json").exists(), (m, v)
            assert not (models / m / f"v{v}" / "reference.pending.json").exists(), (m, v)
    reference = json.loads((models / "churn" / "v1" / "reference.json").read_text())
    population = q(kept, "SELECT count(*) FROM features.population")[0][0]
    assert (reference["version"], reference["rows"]) == (1, population)
    assert set(reference["importance"]) == set(reference["features"]) and sum(reference["importance"].values()) > 0


def test_fraud_ranks_the_latest_days_planted_frauds_first(runs):
    result, home = runs["first"]
    (metrics,), = q(home, "SELECT metrics FROM ml.model_registry WHERE model = 'fraud'")
    metrics = json.loads(metrics)
    # the demo labels its frauds: supervised, judged on the latest 20% of the 90 days before the scored day
    assert metrics["method"] == "supervised" and metrics["holdout_frauds"] >= 30 and metrics["sample_share"] == 1.0
    assert metrics["auprc"] > 0.9 and metrics["recall_at_review"] > 0.9
    # scores.fraud holds every transaction of the last day delivered, each once, ranked 1..n
    (last_day, n_day), = q(home, """SELECT max(transaction_date)::DATE, count(*) FILTER (WHERE transaction_date::DATE
        = (SELECT max(transaction_date)::DATE FROM raw.transactions)) FROM raw.transactions""")
    assert q(home, "SELECT count(*), count(DISTINCT transaction_id), min(fraud_rank), max(fraud_rank), "
                   "min(booked_at)::DATE, any_value(fraud_method) FROM scores.fraud") == [
        (n_day, n_day, 1, n_day, last_day, "supervised")]
    # the day's labelled frauds (never seen in training) lead the queue
    (frauds, top_frauds, flagged_frauds), = q(home, """SELECT count(*) FILTER (WHERE t.fraud),
        count(*) FILTER (WHERE t.fraud AND s.fraud_rank <= 200), count(*) FILTER (WHERE t.fraud AND s.flagged)
        FROM scores.fraud s JOIN raw.transactions t USING (transaction_id)""")
    assert frauds > 0 and top_frauds == frauds and flagged_frauds >= 0.8 * frauds
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["fraud_gate"].passed and checks["fraud_flagged"].passed
    (flagged,), = q(home, "SELECT count(*) FILTER (WHERE flagged) FROM scores.fraud")
    assert checks["fraud_flagged"].metadata["flagged"].value == flagged
    # the customer roll-up BI reads: each customer's flagged transactions and highest score (customers of the
    # population: one joined after the snapshot is scored for fraud, in scores.fraud, but has no customer scores)
    with duckdb.connect(str(home / "serving.duckdb"), read_only=True) as con:
        rows, rolled = con.execute("SELECT count(*), list((customer_id, fraud_flagged_transactions, fraud_max_score) "
                                   "ORDER BY customer_id) FILTER (WHERE fraud_max_score IS NOT NULL) "
                                   "FROM bi.customer_scores").fetchone()
        direct = con.execute("""SELECT list((customer_id, n, top) ORDER BY customer_id) FROM (
            SELECT customer_id, count(*) FILTER (WHERE flagged) AS n, max(fraud_score) AS top FROM scores.fraud
            WHERE customer_id IN (SELECT customer_id FROM scores.churn) GROUP BY 1)""").fetchone()[0]
    population = q(home, "SELECT count(*) FROM features.population")[0][0]
    assert rows == population and len(rolled) > 1_000 and rolled == direct


def test_managers_and_agencies_are_ranked_on_their_predicted_next_month(runs):
    result, home = runs["first"]
    for level, n, bar in (("manager", 314, 10), ("agency", 40, 8)):
        (metrics,), = q(home, f"SELECT metrics FROM ml.model_registry WHERE model = '{level}_performance'")
        metrics = json.loads(metrics)
        # judged on the last two months by time, better than carrying each one's last score forward
        assert metrics["rmse"] < bar and metrics["skill"] > 0 and metrics["holdout_rows"] == 2 * n
        assert metrics["cv_folds"] == 5 and metrics["cv_rmse"] > 0
        key = f"{level}_id"
        rows = q(home, f"""SELECT count(*), count(DISTINCT {key}), min(performance_rank), max(performance_rank),
            any_value(period), any_value(predicted_period), count(*) FILTER (WHERE support IS NOT NULL),
            count(*) FILTER (WHERE support IS NOT NULL AND percentile > 10), bool_and(driver_1 IS NOT NULL)
            FROM scores.{level}_performance""")
        assert rows == [(n, n, 1, n, dt.date(2026, 9, 1), dt.date(2026, 10, 1), rows[0][6], 0, True)]
        assert rows[0][6] == int(0.1 * (n - 1)) + 1  # the bottom decile, each with its support
        gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == f"{level}_performance_gate")
        assert gate.passed and "rmse" in gate.metadata["actual"].text
    # the book is each manager's: managers' clients add up to their agency's
    assert q(home, """SELECT count(*) FROM features.book_performance a JOIN (
        SELECT agency_id, period, sum(clients) AS clients FROM features.book_performance WHERE level = 'manager'
        GROUP BY ALL) m USING (agency_id, period) WHERE a.level = 'agency' AND a.clients <> m.clients""") == [(0,)]
    with duckdb.connect(str(home / "serving.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores.manager_performance").fetchone() == (314,)


def test_every_model_offers_the_one_model_interface(runs):
    """Each spec's class loads its champion's artifacts as an ml.model.Model: inputs among the features it was
    registered with, importance over those inputs only, and scoring gives one frame keyed by customer."""
    from assets.models import SPECS
    from ml.model import Model

    _, home = runs["first"]
    entries = {m: (path, f) for m, path, f in q(
        home, "SELECT model, artifact_path, features FROM ml.model_registry WHERE alias = 'champion'")}
    assert sorted(entries) == sorted(s.name for s in SPECS)
    for spec in SPECS:
        path, registered = entries[spec.name]
        model = spec.model.load(path)
        assert isinstance(model, Model) and model.metrics, spec.name
        assert set(model.features) <= set(registered or []), spec.name
        assert set(model.importance()) <= set(model.features), spec.name
    clv = next(s for s in SPECS if s.name == "clv")
    assert clv.model.load(entries["clv"][0]).features == []  # CLV reads transactions, not features


def test_clv_scores_with_the_purchase_summary_its_runs_training_computed(runs):
    """The CLV challenger's purchase summary is kept for the scoring step (warehouse.clv.keep_summary; the frame
    equals a summary computed again: tests/test_ml_clv.py); the daily scoring of the same deliveries reads it too."""
    assert {name: metadata_of(runs[name][0], ["scores", "clv"], "purchase_summary") for name in ("first", "score")} == {
        name: "kept by this run's training (features.clv_summary)" for name in ("first", "score")}


def test_failing_challenger_is_rejected_and_changes_nothing(runs):
    before = q(runs["first"][1], "SELECT customer_id, churn_probability, scored_at FROM scores.churn ORDER BY 1")
    result, home = runs["retrain"]
    # a rejected challenger is an outcome, not a failure: the run goes through, the champion stays
    assert result.success
    gate = next(c for c in result.get_asset_check_evaluations() if c.check_name == "churn_gate")
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert "auc" in gate.metadata["failed"].value and "0.999" in gate.metadata["threshold"].value
    assert q(home, "SELECT version, alias FROM ml.model_registry WHERE model = 'churn' ORDER BY 1") == [(1, "champion"), (2, "rejected")]
    (outcome,), = q(home, f"SELECT outcome FROM ml.model_runs WHERE model = 'churn' AND run_id = '{result.run_id}'")
    assert outcome.startswith("kept champion v1 (challenger v2 rejected: auc ") and "not >= 0.999" in outcome
    assert q(home, "SELECT note FROM ml.model_registry WHERE model = 'churn' AND version = 2")[0][0].startswith("auc ")
    assert q(home, "SELECT customer_id, churn_probability, scored_at FROM scores.churn ORDER BY 1") == before
    # every gate compared with the champion re-scored on the challenger's holdout; on the same data that
    # reproduces the champion's own training figures exactly (same customers, same outcomes, same math)
    metrics = {m: json.loads(v) for m, v in q(home, "SELECT model, metrics FROM ml.model_registry WHERE version = 1")}
    latest = {m: json.loads(v) for m, v in q(home, "SELECT model, metrics FROM ml.model_registry WHERE version = 2")}
    for model, key in (("churn", "auc"), ("credit_risk", "auc"), ("recommendations", "map_at_5"),
                       ("segments", "silhouette")):
        again = latest[model]["champion_on_holdout"]
        assert again["version"] == 1 and again[key] == pytest.approx(metrics[model][key], abs=1e-9), model
    gates = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert gates["churn_gate"].metadata["champion"].value.endswith("on this holdout")


def test_daily_scoring_goes_on_with_the_champion_after_a_failed_retrain(runs):
    before = q(runs["retrain"][1], "SELECT max(scored_at) FROM scores.churn")[0][0]  # v1 champion, v2 rejected
    result, home = runs["score"]
    assert result.success
    ran = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "scores/churn" in ran and not any(k.startswith("ml/") for k in ran)  # scoring only, no training
    population = q(home, "SELECT count(*) FROM features.population")[0][0]
    assert q(home, "SELECT count(*), min(model_version), max(model_version) FROM scores.churn") == [(population, 1, 1)]
    assert q(home, "SELECT max(scored_at) FROM scores.churn")[0][0] > before
    # history keeps one set per snapshot and model version: the rerun replaced the first run's rows
    assert q(home, "SELECT count(*), count(DISTINCT run_id), max(run_id) FROM scores.churn_history") == [
        (population, 1, result.run_id)
    ]


def test_a_champion_that_cannot_be_rescored_is_compared_by_its_training_figures(runs):
    from assets.lifecycle import Trained, _champion_on_holdout

    _, home = runs["first"]  # churn v1 is the champion

    def gone(entry):
        raise KeyError("attr_income")  # the champion's input is no longer in the features

    lost = Trained(model=None, metrics={"auc": 0.9}, features=[], snapshot_date=None, data_hash="x", rescore=gone)
    scored = Trained(model=None, metrics={"auc": 0.9}, features=[], snapshot_date=None, data_hash="x",
                     rescore=lambda entry: {"auc": 0.5})
    for trained in (lost, scored):
        _champion_on_holdout(dg.build_asset_context(), Warehouse(home=str(home)), "churn", trained)
    assert lost.metrics == {"auc": 0.9} and scored.metrics["champion_on_holdout"] == {"version": 1, "auc": 0.5}


@pytest.fixture
def registry_home(tmp_path):
    """A home whose registry holds a churn champion (v1) and whatever the test adds."""
    from ml import registry

    home = tmp_path / "home"
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        registry.register(con, "churn", 1, snapshot_date=None, data_hash="a", features=["x"], params={},
                          metrics={"auc": 0.85}, artifact_path="m/1", run_id="run-a")
        registry.approve(con, "churn", 1, "passed")
        registry.promote(con, "churn", 1, "first")
    return home


def _champion_alone(home) -> dg.ExecuteInProcessResult:
    """`ml/churn_champion` materialized on its own, as from the UI: no challenger, no gate in this run."""
    champion = next(a for a in defs.assets if getattr(a, "key", None) == dg.AssetKey(["ml", "churn_champion"]))
    resources = {"warehouse": Warehouse(home=str(home)), "source": Source(source="synthetic", landing=str(home)),
                 "settings": Settings(home=str(home), source="synthetic")}
    return dg.materialize([champion], resources=resources)


@pytest.mark.parametrize("left_by_a_killed_run", ["challenger", "approved"])
def test_a_version_its_gate_did_not_approve_in_the_same_run_is_never_promoted(registry_home, left_by_a_killed_run):
    """A run killed after registering (or after its gate approved) leaves a version behind; materializing the
    champion alone later must not promote it (today's code promoted any `challenger`)."""
    from ml import registry

    with duckdb.connect(str(registry_home / "warehouse.duckdb")) as con:
        registry.register(con, "churn", 2, snapshot_date=None, data_hash="b", features=["x"], params={},
                          metrics={"auc": 0.9}, artifact_path="m/2", run_id="run-killed")
        if left_by_a_killed_run == "approved":
            registry.approve(con, "churn", 2, "passed")
    result = _champion_alone(registry_home)
    assert result.success
    assert q(registry_home, "SELECT version, alias FROM ml.model_registry ORDER BY 1") == [
        (1, "champion"), (2, left_by_a_killed_run)]
    mat = result.asset_materializations_for_node("ml__churn_champion")[0]
    assert mat.metadata["outcome"].value == "kept champion v1 (no challenger approved in this run)"


def test_a_jump_in_flagged_transactions_fails_the_fraud_check(runs, tmp_path):
    """fraud_flagged, called as a function: today's flagged count against what the champion flagged on its
    holdout, for as many transactions; a fraud wave (or a broken input) flagging many times more fails."""
    from assets.fraud import flagged_check

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(runs["first"][1] / "warehouse.duckdb", home / "warehouse.duckdb")
    wh, settings = Warehouse(home=str(home)), Settings(home=str(home), source="synthetic")
    calm = flagged_check(warehouse=wh, settings=settings)
    assert calm.passed and {"actual", "threshold", "flagged", "expected"} <= set(calm.metadata)
    expected = calm.metadata["expected"].value
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # a wave: the top 2% of the day flagged
        con.execute("UPDATE scores.fraud SET flagged = fraud_rank <= (SELECT count(*) * 0.02 FROM scores.fraud)")
        wave = con.execute("SELECT count(*) FILTER (WHERE flagged) FROM scores.fraud").fetchone()[0]
    result = flagged_check(warehouse=wh, settings=settings)
    assert wave > 3 * expected and not result.passed and result.metadata["flagged"].value == wave
    assert f"{wave:,} of" in result.metadata["actual"].value and "3 x the" in result.metadata["threshold"].value
