"""Drift math (quality/drift.py) on numbers whose answers are known; a model's drift band (score-led, inputs
weighted by importance) and what the check reports; constant columns skipped; a smaller delivery is not drift."""

from datetime import date

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from quality import drift


def test_psi_of_a_known_shift_and_of_identical_shares():
    assert drift.psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2) + 0.1 * np.log(1 / 0.8))
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_an_empty_bin_gives_a_large_finite_psi_not_a_division_error():
    value = drift.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2], epsilon=1e-4)
    assert np.isfinite(value) and value > 1.0


def test_bands_follow_the_rule_of_thumb_and_config():
    bands = drift.Bands()
    assert [bands.band(x) for x in (0.0, 0.099, 0.10, 0.2499, 0.25, 3.0)] == [
        "stable", "stable", "warn", "warn", "alert", "alert"]
    assert drift.Bands.from_config({"psi_warn": 0.2, "psi_alert": 0.5}).band(0.3) == "warn"


def test_numeric_profile_bins_at_training_deciles_with_a_missing_bin():
    values = pd.Series([*range(1, 101), None], dtype="float64")
    profile = drift.profile_column(values)
    assert profile["edges"] == pytest.approx(np.quantile(np.arange(1, 101), np.linspace(0.1, 0.9, 9)))
    assert len(profile["shares"]) == 11 and profile["shares"][-1] == pytest.approx(1 / 101)
    assert sum(profile["shares"]) == pytest.approx(1.0)


def test_same_population_is_stable_and_a_shifted_one_drifts_with_the_right_ks():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000)})
    same = pd.DataFrame({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000)})
    shifted = same.assign(x=same["x"] + 0.8)
    profile = drift.build_profile(ref, ["x", "y"])
    calm = drift.compare(profile, same)
    assert (calm["band"] == "stable").all() and calm["psi"].max() < 0.01 and calm["ks"].max() < 0.02
    moved = drift.compare(profile, shifted).set_index("feature")
    assert moved.loc["x", "band"] == "alert" and moved.loc["y", "band"] == "stable"
    # KS from 1,001 reference quantiles matches scipy's two-sample KS on the full samples
    exact = stats.ks_2samp(ref["x"], shifted["x"]).statistic
    assert moved.loc["x", "ks"] == pytest.approx(exact, abs=0.002)
    assert moved.loc["x", "ks"] == pytest.approx(2 * stats.norm.cdf(0.4) - 1, abs=0.01)  # theory: 0.311
    assert moved.loc["x", "current_mean"] - moved.loc["x", "reference_mean"] == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_ks_equals_the_largest_gap_over_every_step_of_both_functions(seed):
    """ks_statistic counts new values per reference quantile instead of sorting them; the answer must be the
    supremum over every point where either distribution function steps, ties and all."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 5, 300) if seed % 2 else rng.normal(size=300)
    cur = rng.integers(0, 7, 250) if seed % 2 else np.round(rng.normal(0.3, 1, 250), 1)
    q = np.quantile(ref.astype(float), np.linspace(0, 1, drift.N_QUANTILES))
    grid = np.union1d(q, cur)
    brute = np.max(np.abs(np.searchsorted(q, grid, side="right") / len(q)
                          - np.searchsorted(np.sort(cur), grid, side="right") / len(cur)))
    assert drift.ks_statistic(q.tolist(), pd.Series(cur)) == pytest.approx(brute, abs=1e-12) and brute > 0.05


def test_categorical_new_values_pool_into_other_and_show_as_drift():
    ref = pd.Series(["a"] * 60 + ["b"] * 40)
    profile = {"c": drift.profile_column(ref)}
    assert profile["c"]["categories"] == ["a", "b", drift.OTHER] and profile["c"]["shares"] == [0.6, 0.4, 0.0]
    new = pd.DataFrame({"c": ["a"] * 50 + ["z"] * 30 + [None] * 20})
    shares = drift.current_shares(new["c"], profile["c"])
    assert shares == pytest.approx([0.5, 0.0, 0.5])  # "z" and missing are not reference categories
    row = drift.compare(profile, new).iloc[0]
    assert row["band"] == "alert" and np.isnan(row["ks"])


def test_distribution_rows_show_reference_and_current_shares():
    ref = drift.profile_column(pd.Series(["Low"] * 80 + ["High"] * 20))
    rows = drift.distribution_rows(ref, pd.Series(["Low"] * 50 + ["High"] * 50))
    assert rows == [("Low", pytest.approx(0.8), pytest.approx(0.5)), ("High", pytest.approx(0.2), pytest.approx(0.5))]


# ------------------------------------------------------------------ a model's band: score-led, importance-weighted

def _checked(rows: pd.DataFrame, bands: drift.Bands = drift.DEFAULT_BANDS):
    """The drift check on a run's rows, and its metadata as the alert builder reads it."""
    from assets.lifecycle import drift_result

    result = drift_result(rows.assign(model_version=1), bands)
    return result, {k: getattr(v, "value", v) for k, v in result.metadata.items()}


def _rows(score_psi: float, inputs: dict[str, tuple[float, float]], rows: tuple[int, int] = (5000, 4000)):
    """monitoring.drift rows of one run: the score, and inputs as name -> (PSI, weight)."""
    bands = drift.DEFAULT_BANDS
    out = [{"feature": "churn_probability", "kind": "score", "psi": score_psi, "ks": 0.1, "band": bands.band(score_psi),
            "reference_mean": 0.2, "current_mean": 0.3 if score_psi >= 0.1 else 0.2, "weight": np.nan}]
    out += [{"feature": f, "kind": "feature", "psi": psi, "ks": 0.2, "band": bands.band(psi), "reference_mean": 100.0,
             "current_mean": 150.0, "weight": w} for f, (psi, w) in inputs.items()]
    frame = pd.DataFrame(out).assign(reference_rows=rows[0], current_rows=rows[1])
    return frame.sort_values("psi", ascending=False).reset_index(drop=True)


def test_an_unimportant_input_that_shifted_under_a_stable_score_does_not_alarm():
    result, md = _checked(_rows(0.02, {"agency_avg_income": (6.0, 0.01), "income": (0.02, 0.6), "age": (0.01, 0.39)}))
    # weighted input PSI 0.01 x 6 + 0.6 x 0.02 + 0.39 x 0.01 = 0.076: stable (the worst column alone said ERROR)
    assert result.passed and md["band"] == "stable" and md["input_psi"] == pytest.approx(0.0759, abs=1e-4)


def test_important_inputs_drifted_under_a_stable_score_are_a_warning_not_an_error():
    result, md = _checked(_rows(0.03, {"income": (0.6, 0.4), "tenure_months": (2.0, 0.3), "age": (0.01, 0.3)}))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert (md["band"], md["score_band"], md["input_band"]) == ("warn", "stable", "alert")
    # inputs listed by how much they weigh in the verdict (weight x PSI), after the score
    assert [d["column"] for d in md["drifted"]] == ["churn_probability", "tenure_months", "income"]


def test_a_drifted_score_gives_the_model_its_band():
    result, md = _checked(_rows(0.30, {"income": (0.01, 1.0)}))
    assert result.severity == dg.AssetCheckSeverity.ERROR and md["band"] == "alert"
    result, md = _checked(_rows(0.15, {"income": (3.0, 0.9), "age": (3.0, 0.1)}))  # inputs raise to warn at most
    assert result.severity == dg.AssetCheckSeverity.WARN and md["band"] == "warn"


def test_inputs_weigh_by_the_importance_saved_with_the_reference_else_equally():
    profile = {"features": {"a": {}, "b": {}, "c": {}, "d": {}}}
    assert drift.feature_weights(profile) == {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    weights = drift.feature_weights({**profile, "importance": {"a": 3.0, "b": 1.0, "zz": 9.0}})
    assert weights == {"a": 0.75, "b": 0.25, "c": 0.0, "d": 0.0}  # an input the model never uses weighs nothing


# ------------------------------------------------------------------------------- constant columns are skipped

def test_a_column_constant_in_the_reference_is_skipped_not_flagged():
    """P(alive) of 1 for everyone but rounding (the demo bank's CLV, docs/scores.md): its deciles split rounding
    noise, so a population whose noise is a little smaller 'drifts' with PSI in the alert band."""
    from assets.lifecycle import Scored, measure_drift

    rng = np.random.default_rng(3)
    n = 5000
    ref_scores = pd.DataFrame({"clv": rng.gamma(2, 100, n), "p_alive": 1 - rng.uniform(0, 3e-10, n)})
    ref_inputs = pd.DataFrame({"frequency": rng.poisson(30, n).astype(float),
                               "flag": np.r_[np.zeros(n - 2), 1.0, 1.0], "kind": ["retail"] * n})
    reference = {"model": "clv", "version": 1, "snapshot_date": "2026-01-31", "rows": n,
                 "scores": drift.build_profile(ref_scores, ["clv", "p_alive"]),
                 "features": drift.build_profile(ref_inputs, ["frequency", "flag", "kind"])}
    now = Scored(pd.DataFrame({"clv": rng.gamma(2, 100, n), "p_alive": 1 - rng.uniform(0, 1e-10, n)}),
                 date(2026, 4, 30), inputs=pd.DataFrame({"frequency": rng.poisson(30, n).astype(float),
                                                         "flag": np.zeros(n), "kind": ["retail"] * n}))
    rows = measure_drift(reference, now, drift.DEFAULT_BANDS).set_index("feature")
    assert rows.loc["p_alive", "psi"] > 0.25  # what the PSI says ...
    assert rows.loc["p_alive", "band"] == "skipped" and "constant in the reference" in rows.loc["p_alive", "note"]
    assert rows.loc["flag", "band"] == "skipped" and "one value (0) in 99.9" in rows.loc["flag", "note"]
    assert rows.loc["kind", "band"] == "skipped" and "one value (retail) in 100.00%" in rows.loc["kind", "note"]
    assert rows.loc["clv", "band"] == rows.loc["frequency", "band"] == "stable"
    result, md = _checked(rows.reset_index())  # ... and the check: nothing counted drifted
    assert result.passed and {s["column"] for s in md["skipped"]} == {"p_alive", "flag", "kind"}
    assert all(s["why"] for s in md["skipped"])


def test_a_network_of_forty_agencies_is_too_few_rows_for_psi():
    """PSI over ten bins of 40 values moves by ~0.4 between two draws of the same population: an agency table's
    drift is measured but not counted (monitoring.drift.min_rows), never a false alarm; 400 rows are counted."""
    from assets.lifecycle import Scored, measure_drift

    rng = np.random.default_rng(5)
    for n, counted in ((40, False), (400, True)):
        ref = pd.DataFrame({"predicted_score": rng.normal(50, 10, n)})
        reference = {"model": "agency_performance", "version": 1, "snapshot_date": "2026-08-01", "rows": n,
                     "scores": drift.build_profile(ref, ["predicted_score"]),
                     "features": drift.build_profile(ref.rename(columns={"predicted_score": "score"}), ["score"])}
        now = rng.normal(50, 10, n)
        rows = measure_drift(reference, Scored(pd.DataFrame({"predicted_score": now}), date(2026, 9, 1),
                                               inputs=pd.DataFrame({"score": now})), drift.DEFAULT_BANDS)
        if counted:
            assert (rows["band"] != "skipped").all()
        else:
            assert (rows["band"] == "skipped").all() and rows["note"].str.contains("40 rows: too few for PSI").all()
            result, _ = _checked(rows)
            assert result.passed


def test_a_varied_column_is_not_taken_for_a_constant_one():
    rng = np.random.default_rng(4)
    for values in (rng.normal(1e6, 50, 2000), rng.uniform(0, 1e-4, 2000), np.r_[np.zeros(1990), np.ones(10)]):
        assert drift.constant_reason(drift.profile_column(pd.Series(values))) is None


# ------------------------------------------------------------------- finding 8: a delivery with fewer customers

@pytest.fixture(scope="module")
def bank_and_subset(tmp_path_factory):
    """A generated bank's features and churn outcomes as the pipeline builds them, and the features rebuilt over a
    random 40% of its customers: a delivery with fewer customers from the same population."""
    from realdata import build_warehouse

    from warehouse import features as F
    from warehouse.db import connect
    from warehouse.synthetic import generate_bank

    tmp = tmp_path_factory.mktemp("subset")
    generate_bank(tmp / "landing", customers=3000, seed=5)
    with connect(build_warehouse("synthetic", tmp / "landing", tmp / "w.duckdb")) as con:
        full, y = F.training_frame(con, "churned")
        snap = con.execute("SELECT max(snapshot_date) FROM features.population").fetchone()[0]
        con.execute("DELETE FROM features.population WHERE hash(customer_id) % 5 >= 2")
        for build in (F.build_rfm, F.build_balances, F.build_holdings, F.build_customer_features):
            build(con, snap)
        part = con.execute("SELECT * FROM features.customer_features").df()
    return full, y, part, snap


def test_fewer_customers_from_the_same_population_is_not_drift(bank_and_subset):
    from assets.lifecycle import Scored, measure_drift
    from ml.churn import ChurnParams, train_churn

    full, y, part, snap = bank_and_subset
    assert 0.3 < len(part) / len(full) < 0.5
    model = train_churn(full, y, ChurnParams(n_estimators=60))
    reference = {"model": "churn", "version": 1, "snapshot_date": str(snap), "rows": len(full),
                 "features": drift.build_profile(full, model.spec.names),
                 "scores": drift.build_profile(model.score(full), ["churn_probability", "risk_level"]),
                 "importance": model.importance()}
    rows = measure_drift(reference, Scored(model.score(part), snap, inputs=part), drift.DEFAULT_BANDS)
    by = rows.set_index("feature")
    assert (by.loc[["churn_probability", "risk_level"], "band"] == "stable").all()  # the score did not move
    group = [c for c in by.index if c.startswith(("agency_", "manager_customer"))]
    assert len(group) == 4  # the agency's share of customers, mean income and balance, the manager's share
    for c in group:  # sizes are shares: the same agency weighs the same in a smaller delivery ...
        assert by.loc[c, "current_mean"] == pytest.approx(by.loc[c, "reference_mean"], rel=0.15), c
        assert by.loc[c, "band"] in ("stable", "skipped"), (c, by.loc[c, "psi"])  # ... and is not counted
    result, md = _checked(rows)
    assert result.passed or result.severity == dg.AssetCheckSeverity.WARN, md["actual"]
    assert md["band"] != "alert" and md["counts"]["reference_rows"] == len(full) and md["current_rows"] == len(part)


# --------------------------------------------------------------------------------------------- the drift alert

def test_the_drift_alert_shows_means_rows_and_whether_the_scores_were_published():
    from quality.alerts import drift_alert

    _, md = _checked(_rows(0.30, {"income": (0.62, 0.5), "age": (0.01, 0.5)}, rows=(4843, 1937)))
    check = {"asset": "scores/churn", "check": "churn_drift", "passed": False, "severity": "ERROR", "metadata": md}
    run = {"run_id": "r1", "job": "score", "home": "/srv/scorehouse"}
    alert = drift_alert([check], {**run, "published": True})
    (detail,) = alert.details
    assert detail.startswith("churn v1 [alert]: score churn_probability PSI 0.30 KS 0.10 (mean 0.2 → 0.3)")
    assert "income PSI 0.62 KS 0.20 weight 0.50 (mean 100 → 150)" in detail
    assert "rows 4,843 (reference) → 1,937 (this run)" in detail
    assert "These scores were published" in alert.what and "`scorehouse rollback --home /srv/scorehouse`" in alert.what
    assert alert.severity == "error" and "PSI warn >= 0.1, alert >= 0.25" in alert.what
    held = drift_alert([check], {**run, "published": False})
    assert "These scores were not published" in held.what and "rollback" not in held.what
