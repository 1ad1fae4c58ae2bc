"""Credit risk scorecard (WoE + logistic) and its monotone XGBoost challenger, as plain functions on DataFrames:
exact WoE on hand-made data, quality on real data (German credit) and on the synthetic bank's loan holders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from realdata import DATA, build_warehouse, verify_md5

from ml.credit_risk import (
    CreditModel,
    CreditParams,
    bin_categorical,
    bin_numeric,
    credit_target,
    grade,
    load_credit_risk,
    rfm_proxy_target,
    save_credit_risk,
    train_credit_risk,
    woe_iv,
)
from warehouse import features as F
from warehouse.db import connect
from warehouse.synthetic import generate_bank

LN2, LN3 = np.log(2), np.log(3)


def _verify_md5(rel: str) -> Path:
    return verify_md5(DATA / rel)


def feature_frame(source: str, landing: Path, db: Path, label: str = "defaulted") -> tuple[pd.DataFrame, pd.Series]:
    """Ingest + features as the pipeline builds them, then the frame a model trains on for `label`."""
    with connect(build_warehouse(source, landing, db)) as con:
        return F.training_frame(con, label)


@pytest.fixture(scope="module")
def german(tmp_path_factory):
    path = _verify_md5("german_credit/german.data")
    return feature_frame("german_credit", path.parent, tmp_path_factory.mktemp("gc") / "w.duckdb")


@pytest.fixture(scope="module")
def german_model(german):
    frame, y = german
    return train_credit_risk(frame, y)


# ---------------------------------------------------------------- exact numbers on hand-made data

def _numeric_case(bads: list[int], per_value: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """x = 1, 2, 3, 4 with `per_value` customers each, the first bads[i] of value i+1 bad."""
    x = np.repeat(np.arange(1.0, len(bads) + 1), per_value)
    y = np.concatenate([np.arange(per_value) < b for b in bads]).astype(int)
    return x, y


def test_woe_and_iv_textbook_numbers():
    # goods 90/80/70/60 of 300, bads 10/20/30/40 of 100: woe = ln(%good / %bad)
    woe, iv = woe_iv(np.array([10, 20, 30, 40]), np.array([100, 100, 100, 100]), smoothing=0)
    assert woe == pytest.approx([LN3, np.log(4 / 3), np.log(7 / 9), -LN2])
    assert iv == pytest.approx(0.2 * LN3 + (8 / 30 - 0.2) * np.log(4 / 3) + (7 / 30 - 0.3) * np.log(7 / 9)
                               + 0.2 * LN2)
    assert iv == pytest.approx(0.394285, abs=1e-6)


def test_numeric_bins_merge_until_monotone():
    # bad rates 10%, 30%, 20%, 40%: [2, 3) and [3, 4) violate the rising trend and are merged (50 of 200 bad)
    x, y = _numeric_case([10, 30, 20, 40])
    b = bin_numeric("x", x, y, CreditParams(n_prebins=4, min_bin_share=0.0, woe_smoothing=0))
    assert b.labels == ["< 2", "[2, 4)", ">= 4", "missing"] and b.direction == 1
    assert list(b.total) == [100, 200, 100, 0] and list(b.bad) == [10, 50, 40, 0]
    # goods 90/150/60 of 300, bads 10/50/40 of 100; the empty missing bin is neutral
    assert b.woe == pytest.approx([LN3, 0.0, -LN2, 0.0])
    assert b.iv == pytest.approx(0.2 * LN3 + 0.2 * LN2)
    assert list(b.assign(pd.Series([0.5, 1, 2, 3.99, 4, 1e9, np.nan]))) == [0, 0, 1, 1, 2, 2, 3]


def test_numeric_bins_falling_trend_and_small_bins():
    # bad rate falls with x; the pre-bin x = 4 (4 of 304 customers, under 5%) is merged into its neighbour
    x, y = _numeric_case([40, 30, 20, 2], per_value=100)
    x, y = np.r_[x[:300], x[300:304]], np.r_[y[:300], y[300:304]]
    b = bin_numeric("x", x, y, CreditParams(n_prebins=100, min_bin_share=0.05, woe_smoothing=0))
    assert b.direction == -1 and b.labels == ["< 2", "[2, 3)", ">= 3", "missing"]
    assert list(b.total) == [100, 100, 104, 0] and list(b.bad) == [40, 30, 22, 0]
    assert np.all(np.diff(b.woe[:-1]) > 0)  # falling bad rate = rising WoE


def test_woe_is_finite_with_empty_cells():
    # a level without a single bad, a bin without goods and an empty missing bin: smoothing keeps all finite
    s = 0.5
    woe, iv = woe_iv(np.array([0, 30, 20, 0]), np.array([50, 30, 120, 0]), smoothing=s)
    G, B, N = 150.0, 50.0, 200.0
    expected = [np.log((50 + s * G / N) / G) - np.log((s * B / N) / B),
                np.log((s * G / N) / G) - np.log((30 + s * B / N) / B),
                np.log((100 + s * G / N) / G) - np.log((20 + s * B / N) / B), 0.0]
    assert np.isfinite(woe).all() and np.isfinite(iv)
    assert woe == pytest.approx(expected)
    values = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 120)
    y = np.r_[np.zeros(50), np.ones(30), np.ones(20), np.zeros(100)]
    b = bin_categorical("c", values, y, CreditParams(woe_smoothing=s, min_bin_share=0.05))
    assert b.labels == ["b", "c", "a", "missing"]  # riskiest first
    assert b.woe == pytest.approx([expected[1], expected[2], expected[0], 0.0])


def test_categorical_rare_levels_and_unseen():
    values = pd.Series(["a"] * 60 + ["b"] * 36 + ["r1"] * 2 + ["r2"] * 2 + [None] * 10)
    y = np.r_[np.arange(60) < 6, np.arange(36) < 18, [1, 1], [1, 0], np.arange(10) < 5].astype(int)
    b = bin_categorical("c", values, y, CreditParams(min_bin_share=0.05, woe_smoothing=0))
    assert b.labels == ["(other)", "b", "a", "missing"] and list(b.total) == [4, 36, 60, 10]
    got = b.assign(pd.Series(["a", "r2", "zzz", None, "b"]))
    assert list(got) == [2, 0, 0, 3, 1]  # unseen levels score like the rare ones
    as_category = b.assign(pd.Series(["a", "r2", "zzz", None, "b"], dtype="category"))
    assert list(as_category) == [2, 0, 0, 3, 1]


def test_points_formula_and_pd():
    """factor = pdo/ln2, offset = base - factor*ln(base_odds); a score of 600 is 50:1 good:bad, +20 doubles it."""
    p = CreditParams(base_score=600, base_odds=50, pdo=20)
    assert p.factor == pytest.approx(20 / LN2) and p.offset == pytest.approx(600 - 20 / LN2 * np.log(50))
    x, y = _numeric_case([10, 20, 30, 40])
    b = bin_numeric("x", x, y, CreditParams(n_prebins=4, min_bin_share=0.0, woe_smoothing=0))
    model = CreditModel({"x": b}, {"x": -1.0}, -1.0986, p)
    assert model.points["x"] == pytest.approx(-(-1.0 * b.woe - 1.0986) * p.factor + p.offset)
    assert model.pd_from_score(np.array([600.0, 620.0, 580.0])) == pytest.approx([1 / 51, 1 / 101, 1 / 26])
    scored = model.score(pd.DataFrame({"customer_id": ["a", "b"], "x": [1.0, 4.0]}))
    # one feature: pd = sigmoid(intercept + coef*woe)
    assert scored["pd"].to_numpy() == pytest.approx(1 / (1 + np.exp(-(-1.0986 - b.woe[[0, 3]]))))
    assert list(scored["reason_1"]) == [None, "x"]  # in the best bin, nothing to explain


def test_grades_follow_pd_cutoffs():
    cut = (0.02, 0.05, 0.10, 0.20)
    assert list(grade(np.array([0.0, 0.0199, 0.02, 0.049, 0.05, 0.15, 0.2, 0.9]), cut)) == list("AABBCDEE")


# ---------------------------------------------------------------- German credit (real data)

def test_german_scorecard_quality(german_model):
    """Issue bar: scorecard holdout AUC >= 0.76 (plain XGBoost 5-fold CV: 0.794). Measured: 0.760, XGB 0.774;
    over 20 other random 80/20 splits the scorecard averages 0.791 and the challenger 0.793."""
    m = german_model.metrics
    print(f"\ngerman credit: scorecard auc {m['auc']:.4f}, xgb challenger auc {m['xgb_auc']:.4f}")
    assert m["auc"] >= 0.76, m
    assert m["xgb_auc"] >= 0.75, m
    assert m["gini"] == pytest.approx(2 * m["auc"] - 1) and 0.35 < m["ks"] < 0.6
    assert 190 < m["holdout_rows"] < 215 and 0.25 < m["positive_rate"] < 0.35
    assert m["brier"] < 0.19  # a constant 30% guess scores 0.21
    assert german_model.target_kind == "defaulted"
    # the strongest evidence in this data set: the checking account status
    assert next(iter(german_model.iv)) == "attr_checking_account" and german_model.iv["attr_checking_account"] > 0.5
    assert all(iv >= 0.02 for iv in (german_model.iv[f] for f in german_model.features))


def test_german_quality_over_other_splits(german):
    """The fixed holdout (195 applicants) is a hard draw: the scorecard sits at 0.760 +- 0.0003 under small
    changes of C. Over other 80/20 splits (customer ids re-salted) it averages ~0.79, level with the challenger."""
    frame, y = german
    aucs = np.array([[m.metrics["auc"], m.metrics["xgb_auc"]] for m in (
        train_credit_risk(frame.assign(customer_id=f"split{r}:" + frame["customer_id"]), y) for r in range(10))])
    print(f"\ngerman credit, 10 splits: scorecard auc {aucs[:, 0].mean():.4f}, xgb {aucs[:, 1].mean():.4f}")
    assert aucs[:, 0].mean() >= 0.77 and aucs[:, 1].mean() >= 0.77
    assert abs(aucs[:, 0].mean() - aucs[:, 1].mean()) < 0.03  # the interpretable model costs little here


def test_german_points_are_monotone(german_model):
    table = german_model.scorecard_table()
    assert all(c < 0 for c in german_model.coef.values())  # WoE up -> risk down -> points up
    numeric = [f for f, b in german_model.bins.items() if b.kind == "numeric"]
    assert {"attr_duration_months", "attr_credit_amount", "age"} <= set(numeric)
    for f, b in german_model.bins.items():
        pts = table.loc[(table.feature == f) & (table.label != "missing"), "points"].to_numpy()
        steps = np.diff(pts)
        if b.kind == "numeric":  # points strictly monotone in the value, bins in order
            assert (steps > 0).all() or (steps < 0).all(), (f, pts)
        else:  # categories are ordered riskiest first
            assert (steps >= 0).all(), (f, pts)
    duration = table[table.feature == "attr_duration_months"]
    assert duration.points.iloc[0] > duration.points.iloc[-2]  # longer credits lose points
    assert np.isfinite(table.woe).all() and np.isfinite(table.points).all()


def test_german_scores_pd_grades_and_reasons(german_model, german):
    frame, y = german
    s = german_model.score(frame)
    assert list(s.columns) == ["customer_id", "score", "pd", "grade", "reason_1", "reason_2", "reason_3",
                               "target_kind"]
    assert len(s) == 1000 and s.customer_id.is_unique and (s.target_kind == "defaulted").all()
    # pd = sigmoid(intercept + sum(coef * woe)), recomputed from the scorecard table
    t = german_model.scorecard_table()
    woe = sum(german_model.coef[f] * t[t.feature == f].woe.to_numpy()[b.assign(frame[f])]
              for f, b in german_model.bins.items())
    assert s.pd.to_numpy() == pytest.approx(1 / (1 + np.exp(-(german_model.intercept + woe))))
    assert (np.diff(s.sort_values("score").pd.to_numpy()) <= 0).all()  # more points, lower PD
    # grades are ordered by PD without overlap, and bad rates rise from grade to grade
    by = s.groupby("grade").pd.agg(["min", "max"])
    assert list(by.index) == sorted(by.index) and (by["max"].to_numpy()[:-1] < by["min"].to_numpy()[1:]).all()
    bad = y.groupby(s.grade.to_numpy()).mean()
    assert bad.loc["E"] > 0.4 and bad.loc[["A", "B"]].max() < 0.12
    # reasons: real features, distinct per customer, and the first one loses the most points
    assert s.reason_1.dropna().isin(german_model.features).all()
    r = s[["reason_1", "reason_2", "reason_3"]].dropna()
    assert (r.nunique(axis=1) == 3).all()
    worst = s.sort_values("score").iloc[0]
    assert worst.reason_1 in ("attr_checking_account", "attr_duration_months", "attr_credit_history",
                              "attr_foreign_worker", "attr_other_debtors", "attr_purpose")


def test_save_load_round_trip(german_model, german, tmp_path):
    frame, _ = german
    folder = save_credit_risk(german_model, tmp_path / "models", 3)
    assert folder == tmp_path / "models" / "credit_risk" / "v3" and (folder / "booster.json").is_file()
    again = load_credit_risk(folder)
    pd.testing.assert_frame_equal(again.score(frame), german_model.score(frame))
    pd.testing.assert_frame_equal(again.scorecard_table(), german_model.scorecard_table())
    assert np.array_equal(again.challenger_pd(frame), german_model.challenger_pd(frame))
    assert again.metrics == german_model.metrics and again.params == german_model.params


def test_scoring_speed(german_model, german):
    """>= 200k customers/s is the target on 2 cores (measured ~340-450k/s on 1M rows); the bar here is the
    pipeline's minimum of 50k/s so a busy machine does not fail it."""
    frame, _ = german
    big = pd.concat([frame] * 200, ignore_index=True)
    big["customer_id"] = np.arange(len(big)).astype(str)
    german_model.score(big.head(1000))
    t0 = time.perf_counter()
    s = german_model.score(big)
    rate = len(big) / (time.perf_counter() - t0)
    print(f"\nscoring: {rate:,.0f} customers/s")
    assert len(s) == 200_000 and rate > 50_000


def test_params_from_config():
    p = CreditParams.from_config({"grade_cutoffs": [0.01, 0.1], "exclude": ["gender"], "xgb": {"max_depth": 2}})
    assert p.grade_cutoffs == (0.01, 0.1) and p.exclude == ("gender",)
    assert p.xgb["max_depth"] == 2 and p.xgb["n_estimators"] == 300  # the rest of the xgb defaults kept
    assert list(grade(np.array([0.005, 0.05, 0.5]), p.grade_cutoffs)) == ["A", "B", "C"]


# ---------------------------------------------------------------- synthetic bank, RFM proxy

def test_synthetic_bank_defaults_of_loan_holders(tmp_path):
    landing = tmp_path / "landing"
    generate_bank(landing, customers=20_000, seed=3)
    frame, y = feature_frame("synthetic", landing, tmp_path / "w.duckdb")
    with connect(tmp_path / "w.duckdb") as con:
        labels = con.execute("SELECT customer_id, value FROM features.labels WHERE label = 'defaulted'").df()
    loan = (frame["loans_count"] > 0).to_numpy()
    # the defaulted label exists exactly for the loan holders: credit_target picks the same population
    picked, target, proxy = credit_target(frame, labels)
    assert not proxy and set(picked.customer_id) == set(frame.customer_id[loan])
    expected = y[loan].set_axis(frame.customer_id[loan]).loc[picked.customer_id]
    assert (target.to_numpy() == expected.to_numpy()).all() and 0.07 < target.mean() < 0.12
    model = train_credit_risk(frame[loan].reset_index(drop=True), y[loan].reset_index(drop=True))
    m = model.metrics
    print(f"\nsynthetic loan holders: scorecard auc {m['auc']:.4f}, xgb challenger auc {m['xgb_auc']:.4f}", m)
    assert m["auc"] > 0.75 and m["xgb_auc"] > 0.75, m
    assert 0.05 < m["positive_rate"] < 0.15 and m["holdout_rows"] > 600
    # the generator's default drivers: credit score, debt-to-income
    assert {"credit_score", "debt_to_income"} <= set(model.features)
    scored = model.score(frame)  # everyone can be scored, loan holder or not
    assert len(scored) == len(frame) and scored.pd.between(0, 1).all()


def test_rfm_proxy_least_engaged_cluster_is_bad():
    rng = np.random.default_rng(1)
    n = 300
    groups = np.repeat([0, 1, 2], n)  # 0 loyal, 1 regular, 2 lapsed
    frame = pd.DataFrame({
        "recency_days": np.r_[rng.integers(1, 10, n), rng.integers(20, 60, n), rng.integers(200, 365, n)],
        "frequency": np.r_[rng.integers(80, 120, n), rng.integers(20, 40, n), rng.integers(1, 4, n)],
        "monetary": np.r_[rng.uniform(5e3, 9e3, n), rng.uniform(1e3, 2e3, n), rng.uniform(10, 100, n)],
    })
    frame.loc[5, "recency_days"] = np.nan  # no transaction: as lapsed as it gets
    frame.loc[5, ["frequency", "monetary"]] = 0
    y = rfm_proxy_target(frame, seed=7)
    assert list(y.index) == list(frame.index) and y.name == "rfm_proxy"
    assert (y.to_numpy() == (groups == 2) | (np.arange(3 * n) == 5)).all()
    assert (rfm_proxy_target(frame, seed=7) == y).all()


def test_rfm_proxy_on_cdnow_and_proxy_model(tmp_path):
    path = _verify_md5("cdnow/CDNOW_sample.txt")
    frame, _ = feature_frame("cdnow_sample", path.parent, tmp_path / "w.duckdb")
    labels = pd.DataFrame({"customer_id": [], "value": []})
    picked, y, proxy = credit_target(frame, labels)
    assert proxy and len(picked) == len(frame) == 2357
    # CDNOW: most customers bought once in the first 9 months and not since: they are the high-risk cluster
    assert 0.4 < y.mean() < 0.75
    g = frame.assign(y=y.to_numpy()).groupby("y")[["recency_days", "frequency", "monetary"]].median()
    assert g.loc[1, "recency_days"] > g.loc[0, "recency_days"] + 60
    assert g.loc[1, "frequency"] < g.loc[0, "frequency"] and g.loc[1, "monetary"] < g.loc[0, "monetary"]
    model = train_credit_risk(picked, y, proxy=True)
    assert model.target_kind == "rfm_proxy" and (model.score(frame).target_kind == "rfm_proxy").all()
    # the proxy's own inputs are not features of the proxy model
    assert not {"recency_days", "frequency", "monetary", "rfm_score"} & set(model.iv)
    assert model.metrics["auc"] > 0.8
