"""Churn model and registry, as plain functions on DataFrames (no Dagster): quality proven on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from realdata import DATA, build_warehouse, verify_md5

from ml.churn import ChurnParams, load_churn, recommend_action, risk_level, save_churn, train_churn
from ml.registry import NotApproved, approve, compare, get, next_version, promote, register, reject
from ml.split import holdout_mask, stratified_cap
from warehouse import features as F
from warehouse.db import connect
from warehouse.synthetic import generate_bank

CHURN_DATA = DATA / "churn_modelling"

def feature_frame(source: str, landing: Path, db: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Ingest + features as the pipeline builds them, then the frame a churn model trains on."""
    with connect(build_warehouse(source, landing, db)) as con:
        return F.training_frame(con, "churned")


@pytest.fixture(scope="module")
def churn_modelling(tmp_path_factory):
    verify_md5(CHURN_DATA / "Churn_Modelling.csv")
    return feature_frame("churn_modelling", CHURN_DATA, tmp_path_factory.mktemp("cm") / "w.duckdb")


def test_churn_modelling_holdout_auc(churn_modelling):
    """Issue 3's bar on real data: holdout AUC >= 0.855 (plain XGBoost 5-fold CV reaches 0.869 here)."""
    frame, y = churn_modelling
    model = train_churn(frame, y)
    m = model.metrics
    assert m["auc"] >= 0.855, m
    assert m["auc"] == pytest.approx(m["raw_auc"])  # calibration is monotone: ranking kept
    assert 1900 < m["holdout_rows"] < 2100 and 0.17 < m["holdout_positive_rate"] < 0.23
    assert m["brier"] < 0.12  # a constant 20% guess scores 0.16
    assert "attr_num_of_products" in list(model.importance())[:4]  # a known strong churn driver in this set


def test_scores_reasons_and_actions(churn_modelling, tmp_path):
    frame, y = churn_modelling
    params = ChurnParams(n_estimators=150)
    model = train_churn(frame, y, params)
    actions = {"attr_is_active_member": "call: inactive member", "level:High": "retention offer",
               "level:Medium": "check-in email"}
    scored = model.score(frame, actions)
    assert len(scored) == len(frame) and scored["customer_id"].is_unique
    assert scored["churn_probability"].between(0, 1).all()
    lo, hi = params.risk_cutoffs
    expected = np.where(scored.churn_probability >= hi, "High", np.where(scored.churn_probability >= lo, "Medium", "Low"))
    assert (scored["risk_level"].to_numpy() == expected).all()
    assert scored.loc[scored.risk_level == "High", "reason_1"].isin(model.spec.names).all()
    assert scored.loc[scored.risk_level == "Low", "recommended_action"].isna().all()
    assert scored.loc[scored.risk_level == "High", "recommended_action"].notna().all()
    # reasons: the top 3 positive contributions by a full sort, and each row's action from its own reasons
    contribs = model.booster.predict(model.dmatrix(frame), pred_contribs=True, approx_contribs=True)[:, :-1]
    names = np.array(model.spec.names, dtype=object)
    for row in range(0, len(frame), 97):
        top = [names[j] for j in np.argsort(-contribs[row])[:3] if contribs[row, j] > 0]
        got = scored.loc[row, ["reason_1", "reason_2", "reason_3"]].tolist()
        assert got == top + [None] * (3 - len(top))
        assert scored.loc[row, "recommended_action"] == recommend_action(scored.loc[row, "risk_level"], top, actions)
    # churners are scored higher than stayers, on average, by a wide margin
    assert scored.churn_probability[y.to_numpy() == 1].mean() > 2 * scored.churn_probability[y.to_numpy() == 0].mean()
    # saved and loaded, the model scores the same
    again = load_churn(save_churn(model, tmp_path / "models", 1))
    assert np.allclose(again.probability(frame), model.probability(frame))


def test_scoring_by_row_chunks_gives_the_same_rows_as_at_once(churn_modelling, monkeypatch):
    import ml.frame

    frame, y = churn_modelling
    model = train_churn(frame, y)
    actions = {"attr_num_of_products": "call", "level:Medium": "email"}
    whole = model.score(frame, actions)
    monkeypatch.setattr(ml.frame, "SCORE_CHUNK_ROWS", 1_000)
    pd.testing.assert_frame_equal(model.score(frame, actions), whole)
    assert len(frame) > 1_000 * 9 and whole["recommended_action"].notna().any()


def test_holdout_is_stable_per_customer():
    ids = pd.Series([f"C{i}" for i in range(5000)])
    a, b = holdout_mask(ids, 0.2), holdout_mask(ids[::-1].reset_index(drop=True), 0.2)[::-1]
    assert (a == b).all() and 0.18 < a.mean() < 0.22


def test_a_training_cap_keeps_each_outcomes_share_and_the_same_customers():
    rng = np.random.default_rng(3)
    ids = np.array([f"C{i}" for i in range(10_000)], dtype=object)
    y = (rng.random(10_000) < 0.07).astype(int)
    rows = ~holdout_mask(pd.Series(ids), 0.2)
    kept = stratified_cap(ids, y, rows, 2_000)
    assert abs(kept.sum() - 2_000) <= 1 and not (kept & ~rows).any()
    # each class keeps the same share of its rows: the sample's churn rate is the population's, to one customer
    for v in (0, 1):
        assert abs(kept[y == v].sum() - round((rows & (y == v)).sum() * 2_000 / rows.sum())) == 0
    order = rng.permutation(10_000)  # the same customers whatever the row order
    assert set(ids[order][stratified_cap(ids[order], y[order], rows[order], 2_000)]) == set(ids[kept])
    assert stratified_cap(ids, y, rows, None) is rows and stratified_cap(ids, y, rows, 10_000) is rows


def test_churn_fits_on_the_capped_sample_and_is_judged_on_the_whole_holdout(churn_modelling):
    frame, y = churn_modelling
    whole, capped = (train_churn(frame, y, ChurnParams(max_train_rows=cap)) for cap in (None, 2_000))
    assert capped.metrics["fit_rows"] in (1_999, 2_000, 2_001) and whole.metrics["fit_rows"] > 6_000
    assert capped.metrics["holdout_rows"] == whole.metrics["holdout_rows"]
    assert 0.80 < capped.metrics["auc"] < whole.metrics["auc"]  # fewer rows learn less, still far from chance


def test_reason_codes_are_the_same_row_chunk_by_row_chunk():
    from ml.frame import top_names

    rng = np.random.default_rng(5)
    values = rng.normal(size=(1_000, 9)).astype(np.float32)
    values[::7, 2] = values[::7, 5]  # ties: the first named wins, in every chunk
    names = [f"f{i}" for i in range(9)]
    whole = top_names(values, names, 3, floor=0.5, chunk_rows=10**6)
    assert (top_names(values, names, 3, floor=0.5, chunk_rows=64) == whole).all()
    row = values[0]
    expected = [names[i] if row[i] > 0.5 else None for i in np.argsort(-row, kind="stable")[:3]]
    assert list(whole[0]) == expected and (whole == None).any()  # noqa: E711 (elementwise)


def test_risk_levels_and_actions():
    assert list(risk_level(np.array([0.1, 0.3, 0.59, 0.6, 0.95]), (0.3, 0.6))) == ["Low", "Medium", "Medium", "High", "High"]
    actions = {"recency": "win-back", "level:Medium": "email"}
    assert recommend_action("High", ["balance_now", "recency_days"], actions) == "win-back"
    assert recommend_action("Medium", ["balance_now"], actions) == "email"
    assert recommend_action("Low", ["recency_days"], actions) is None


def test_generated_bank_has_learnable_churn(tmp_path):
    landing = tmp_path / "landing"
    generate_bank(landing, customers=4000, seed=3)
    frame, y = feature_frame("synthetic", landing, tmp_path / "w.duckdb")
    model = train_churn(frame, y, ChurnParams(n_estimators=200))
    assert model.metrics["auc"] > 0.75, model.metrics


def test_registry_promotion_and_gate(tmp_path):
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert next_version(con, "churn") == 1
        register(con, "churn", 1, snapshot_date=None, data_hash="a", features=["x"], params={}, metrics={"auc": 0.86},
                 artifact_path="m/1")
        assert get(con, "churn", "challenger").version == 1 and get(con, "churn", "champion") is None
        with pytest.raises(NotApproved, match="churn v1 is challenger, not approved by its gate"):
            promote(con, "churn", 1, "never gated")  # a version its gate did not approve is never promoted
        approve(con, "churn", 1, "passed")
        promote(con, "churn", 1, "first model")
        assert get(con, "churn", "champion").metrics == {"auc": 0.86}
        register(con, "churn", 2, snapshot_date=None, data_hash="b", features=["x"], params={}, metrics={"auc": 0.84},
                 artifact_path="m/2")
        ok, why = compare({"auc": 0.84}, get(con, "churn", "champion").metrics, {"auc": (">=", 0.80)}, {"auc": True})
        assert not ok and why == ["auc 0.8400 worse than champion's 0.8600"]
        reject(con, "churn", 2, "; ".join(why))
        with pytest.raises(NotApproved, match="v2 is rejected"):
            promote(con, "churn", 2, "rejected")
        register(con, "churn", 3, snapshot_date=None, data_hash="c", features=["x"], params={}, metrics={"auc": 0.88},
                 artifact_path="m/3")
        approve(con, "churn", 3, "passed")
        promote(con, "churn", 3, "beats v1")
        aliases = dict(con.execute("SELECT version, alias FROM ml.model_registry ORDER BY 1").fetchall())
        assert aliases == {1: "retired", 2: "rejected", 3: "champion"}
    ok, why = compare({"auc": 0.79}, None, {"auc": (">=", 0.80)}, {"auc": True})
    assert not ok and why == ["auc 0.79 not >= 0.8"]


def test_the_same_data_gives_the_same_frame_and_the_same_model(tmp_path):
    """Features are stored in customer order: a parallel join's order changed from build to build, and with it
    the rows XGBoost samples, so one bank's data gave other models (churn AUC 0.8657-0.8687 on churn_modelling)."""
    landing = tmp_path / "landing"
    generate_bank(landing, customers=12_000, seed=3)
    (a, ya), (b, yb) = (feature_frame("synthetic", landing, tmp_path / f"{n}.duckdb") for n in ("a", "b"))
    assert a["customer_id"].is_monotonic_increasing and a["customer_id"].is_unique
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_series_equal(ya, yb)
    params = ChurnParams(n_estimators=60)
    assert train_churn(a, ya, params).metrics == train_churn(b, yb, params).metrics


def test_training_frame_looks_outcomes_up_beside_the_stored_rows():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE SCHEMA features")
    con.execute("CREATE TABLE features.customer_features AS SELECT * FROM (VALUES ('C1', 1.0), ('C2', 2.0), "
                "('C3', 3.0)) t(customer_id, x)")
    con.execute("CREATE TABLE features.labels AS SELECT * FROM (VALUES ('C3', 'churned', 1.0), ('C1', 'churned', 0.0), "
                "('C2', 'defaulted', 1.0)) t(customer_id, label, value)")
    frame, y = F.training_frame(con, "churned")
    assert frame["customer_id"].tolist() == ["C1", "C2", "C3"] and y.tolist() == [0, 0, 1] and y.dtype == "int32"
    assert F.training_frame(con, "unknown")[1].tolist() == [0, 0, 0]
    # two outcomes for one customer (not what the pipeline builds): a row per outcome, as a join gives
    con.execute("INSERT INTO features.labels VALUES ('C3', 'churned', 0.0)")
    frame, y = F.training_frame(con, "churned")
    assert frame["customer_id"].tolist() == ["C1", "C2", "C3", "C3"] and y.tolist() == [0, 0, 0, 1]
