"""Credit risk scorecard (WoE + logistic) and the monotone XGBoost beside it, the champion policy choosing which
serves, as plain functions on DataFrames: exact WoE on hand-made data, planted rare values that must not drive
the reason codes, quality on real data (German credit) and on the synthetic bank's loan holders."""

from __future__ import annotations

import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from realdata import DATA, build_warehouse, verify_md5
from sklearn.metrics import roc_auc_score

from ml.credit_risk import (
    CreditModel,
    CreditParams,
    bin_categorical,
    bin_numeric,
    champion_policy,
    choose_kind,
    credit_target,
    grade,
    load_credit_risk,
    rfm_proxy_target,
    save_credit_risk,
    train_credit_risk,
    woe_iv,
)
from ml.split import holdout_mask
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


def test_categorical_rare_levels_merge_into_the_closest_woe():
    # 110 customers, min share 5.5: r1 (2 of 2 bad) and r2 (1 of 2 bad) are closest in WoE to b (50% bad), not a
    values = pd.Series(["a"] * 60 + ["b"] * 36 + ["r1"] * 2 + ["r2"] * 2 + [None] * 10)
    y = np.r_[np.arange(60) < 6, np.arange(36) < 18, [1, 1], [1, 0], np.arange(10) < 5].astype(int)
    b = bin_categorical("c", values, y, CreditParams(min_bin_share=0.05, woe_smoothing=0))
    assert b.labels == ["b | r1 | r2", "a", "missing"] and list(b.total) == [40, 60, 10] and list(b.bad) == [21, 6, 5]
    assert b.woe[:2] == pytest.approx([np.log((19 / 78) / (21 / 32)), np.log((54 / 78) / (6 / 32))])
    got = b.assign(pd.Series(["a", "r2", "zzz", None, "b"]))
    assert list(got) == [1, 0, 2, 2, 0]  # rare levels score in their merged bin, unseen ones as missing
    as_category = b.assign(pd.Series(["a", "r2", "zzz", None, "b"], dtype="category"))
    assert list(as_category) == [1, 0, 2, 2, 0]


def test_categorical_bins_all_honour_min_bin_share():
    """Many rare levels: merged smallest first, each into the bin of the closest WoE, until every bin but the
    missing one holds min_bin_share; a level rarer than that with a low bad rate goes to the safest bin."""
    rng = np.random.default_rng(3)
    share = {"big_safe": 0.30, "big_risky": 0.25, "mid": 0.10, **{f"rare{i}": 0.02 for i in range(16)}, "tiny": 0.015,
             None: 0.015}
    names = list(share)
    values = pd.Series(rng.choice(np.array(names, dtype=object), size=20_000, p=list(share.values())))
    rate = {"big_safe": 0.05, "big_risky": 0.40, "mid": 0.2, "tiny": 0.01,
            **{f"rare{i}": 0.05 + 0.35 * i / 15 for i in range(16)}}
    y = (rng.random(len(values)) < values.map(rate).fillna(0.3).to_numpy()).astype(int)  # missing: 30%
    p = CreditParams(min_bin_share=0.05)
    b = bin_categorical("c", values, y, p)
    assert (b.total[:-1] >= p.min_bin_share * len(values)).all(), list(zip(b.labels, b.total, strict=True))
    assert b.labels[-1] == "missing" and b.total[-1] == values.isna().sum()  # missing: its own bin, exempt
    assert sum(b.total) == len(values) and len(b.labels) >= 4
    assert b.levels["tiny"] == b.levels["big_safe"] == len(b.labels) - 2  # the safest bin (bins riskiest first)
    assert b.levels["rare15"] == b.levels["big_risky"]
    assert np.all(np.diff(b.woe[:-1]) > 0)


def planted_rare_category(n: int = 20_000, seed: int = 11) -> tuple[pd.DataFrame, pd.Series]:
    """Issue 16 finding 7 in miniature: a strong feature (IV ~0.9) and a weak categorical (IV ~0.03) one of whose
    values, 'broker', holds 1.5% of the borrowers with a low bad rate."""
    rng = np.random.default_rng(seed)
    strong = rng.normal(size=n)
    channel = rng.choice(["branch", "online", "broker"], size=n, p=[0.55, 0.435, 0.015])
    logit = (-2.0 + 1.6 * np.maximum(strong, 0)
             + np.select([channel == "branch", channel == "online"], [-0.15, 0.2], -2.5))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return (pd.DataFrame({"customer_id": [f"c{i:06d}" for i in range(n)], "strong": strong, "channel": channel}),
            pd.Series(y))


def planted_rare_missing(n: int = 20_000, seed: int = 12) -> tuple[pd.DataFrame, pd.Series]:
    """A weak numeric feature missing for 1.5% of borrowers, who rarely default (the missing bin is exempt from
    min_bin_share, so it keeps its own, best, points)."""
    rng = np.random.default_rng(seed)
    strong, weak = rng.normal(size=n), rng.normal(size=n)
    miss = rng.random(n) < 0.015
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1.6 + 1.3 * strong + 0.15 * weak - 2.5 * miss)))).astype(int)
    return (pd.DataFrame({"customer_id": [f"c{i:06d}" for i in range(n)], "strong": strong,
                          "weak": np.where(miss, np.nan, weak)}), pd.Series(y))


@pytest.mark.parametrize("planted, weak", [(planted_rare_category, "channel"), (planted_rare_missing, "weak")])
def test_reasons_lead_with_the_strong_feature_not_a_rare_bin(planted, weak):
    """Before: the rare value had its own bin, the best one, so every other borrower lost ~60-70 points on the
    weak feature and it was reason 1 for 88% (category) / 63% (missing). Now a rare category is merged into the
    bin of the closest WoE, and points lost are counted against the best bin holding min_bin_share."""
    frame, y = planted()
    model = train_credit_risk(frame, y, policy="scorecard")
    assert model.kind == "scorecard" and set(model.features) == {"strong", weak}
    assert next(iter(model.iv)) == "strong" and model.iv["strong"] > 0.8 and model.iv[weak] < 0.1
    b = model.bins[weak]
    if b.kind == "categorical":
        bins = list(zip(b.labels, b.total, strict=True))
        assert (b.total[:-1] >= model.params.min_bin_share * b.total.sum()).all(), bins
        assert "(other)" not in b.labels and b.levels["broker"] == b.levels["branch"]  # closest WoE: the safer one
    first = model.score(frame)["reason_1"].value_counts(normalize=True)
    assert first.get(weak, 0) < 0.5, first
    assert first.idxmax() == "strong", first


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


def many_small_effects(n: int = 6_000, seed: int = 5, k: int = 24) -> tuple[pd.DataFrame, pd.Series]:
    """Additive risk spread over one clear driver and `k` faint ones: the scorecard keeps at most max_features
    (15) and leaves out those under min_iv, the XGBoost adds all of them up: it is clearly better here."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k + 1))
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1.2 + 0.6 * X[:, 0] + 0.13 * X[:, 1:].sum(axis=1))))).astype(int)
    frame = pd.DataFrame(X, columns=["main", *(f"small_{i}" for i in range(k))])
    frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(n)])
    return frame, pd.Series(y)


def test_champion_policy_parsing():
    assert champion_policy(None) == champion_policy("best") == ("best", 0.0)
    assert champion_policy("scorecard") == ("scorecard", float("inf"))
    assert champion_policy({"scorecard_within": 0.01}) == ("scorecard_within: 0.01", 0.01)
    assert champion_policy("scorecard_within: 0.02") == ("scorecard_within: 0.02", 0.02)
    for bad in ("xgboost", {"scorecard_within": -0.1}, {"scorecard_within": "x"}, "scorecard_within", {"best": 1}):
        with pytest.raises(ValueError, match="champion_policy"):
            champion_policy(bad)
    # which one serves, given both holdout AUCs; a tie goes to the scorecard
    assert choose_kind("best", 0.70, 0.72)[0] == "xgboost" and choose_kind("best", 0.72, 0.72)[0] == "scorecard"
    assert choose_kind("scorecard", 0.60, 0.90)[0] == "scorecard"
    assert choose_kind({"scorecard_within": 0.02}, 0.70, 0.715)[0] == "scorecard"
    assert choose_kind({"scorecard_within": 0.02}, 0.70, 0.73)[0] == "xgboost"
    kind, why = choose_kind({"scorecard_within": 0.01}, 0.7577, 0.7766)
    assert why == ("scorecard_within: 0.01: the XGBoost serves (holdout AUC scorecard 0.7577, XGBoost 0.7766; "
                   "XGBoost +0.0189 > 0.01)")


@pytest.fixture(scope="module")
def small_effects():
    return many_small_effects()


@pytest.mark.parametrize("policy, served", [("best", "xgboost"), ("scorecard", "scorecard"),
                                            ({"scorecard_within": 0.05}, "scorecard"),
                                            ({"scorecard_within": 0.01}, "xgboost")])
def test_policy_picks_the_model_as_configured(small_effects, policy, served):
    frame, y = small_effects
    model = train_credit_risk(frame, y, policy=policy)
    m = model.metrics
    assert m["xgb_auc"] > m["scorecard_auc"] + 0.02, m  # the XGBoost is clearly better on this data
    assert model.kind == m["model_kind"] == served and m["champion_policy"] == champion_policy(policy)[0]
    assert m["auc"] == m[{"scorecard": "scorecard_auc", "xgboost": "xgb_auc"}[served]]
    assert m["model_kind_why"].startswith(f"{m['champion_policy']}: the {dict(xgboost='XGBoost').get(served, served)}")
    # the served model's holdout figures are the ones the metrics carry
    hold = holdout_mask(frame["customer_id"], model.params.holdout_share, salt="holdout")
    assert m["auc"] == pytest.approx(roc_auc_score(y[hold], model.predict_pd(frame[hold])))
    assert model.features == (model.spec.names if served == "xgboost" else list(model.bins))
    assert (model.score(frame.head(50))["model_kind"] == served).all()


def test_both_kinds_give_the_same_columns(small_effects):
    frame, y = small_effects
    model = train_credit_risk(frame, y)
    card, boost = model.score(frame, kind="scorecard"), model.score(frame, kind="xgboost")
    assert list(card.columns) == list(boost.columns) == ["customer_id", "score", "pd", "grade", "reason_1", "reason_2",
                                                         "reason_3", "target_kind", "model_kind"]
    assert list(card.dtypes) == list(boost.dtypes)
    assert set(card.model_kind) == {"scorecard"} and set(boost.model_kind) == {"xgboost"}
    p = model.params
    for s, kind, names in ((card, "scorecard", list(model.bins)), (boost, "xgboost", model.spec.names)):
        # points on one scale: base_score at base_odds, pdo points double the odds
        assert s.pd.to_numpy() == pytest.approx(1 / (1 + np.exp((s.score.to_numpy() - p.offset) / p.factor)))
        assert s.pd.to_numpy() == pytest.approx(model.predict_pd(frame, kind), rel=1e-6)
        assert (s.grade == grade(s.pd.to_numpy(), p.grade_cutoffs)).all()
        reasons = s[["reason_1", "reason_2", "reason_3"]]
        assert reasons.stack().isin(names).all() and reasons.reason_1.notna().mean() > 0.9
    # the XGBoost's points: its own PD on the scorecard's scale
    odds = (1 - boost.pd) / boost.pd
    assert boost.score.to_numpy() == pytest.approx(p.offset + p.factor * np.log(odds.to_numpy()), rel=1e-9)
    # its reasons: the features adding most to this customer's log-odds (features well above average risk
    # where the clear driver is high)
    high = frame["main"] > 1.5
    assert (boost.reason_1[high] == "main").mean() > 0.8


def test_importance_names_the_clear_driver_whichever_model_serves(small_effects):
    """What drift monitoring weighs each input's drift by: the XGBoost's gain share, the scorecard's spread of
    points per feature."""
    frame, y = small_effects
    model = train_credit_risk(frame, y)
    for kind in ("scorecard", "xgboost"):
        model.kind = kind
        importance = model.importance()
        assert set(importance) <= set(model.features) and min(importance.values()) >= 0
        assert max(importance, key=importance.get) == "main", (kind, importance)


def test_grades_follow_pd_cutoffs():
    cut = (0.02, 0.05, 0.10, 0.20)
    assert list(grade(np.array([0.0, 0.0199, 0.02, 0.049, 0.05, 0.15, 0.2, 0.9]), cut)) == list("AABBCDEE")


# ---------------------------------------------------------------- German credit (real data)

def test_german_credit_quality_and_champion(german_model):
    """Issue bar: holdout AUC >= 0.76 (plain XGBoost 5-fold CV: 0.794), met by the model the policy serves.
    Measured on the 195 holdout applicants: monotone XGBoost 0.7766, scorecard 0.7577 (0.7601 before rare
    categories were merged: attr_foreign_worker's 'no', 4.6% of the training applicants, no longer has a bin of
    its own, so the feature drops out). Paired bootstrap 95% interval of XGBoost - scorecard: [-0.014, +0.053];
    over ten other splits both average ~0.79 (next test)."""
    m = german_model.metrics
    print(f"\ngerman credit: served {m['model_kind']} auc {m['auc']:.4f}; scorecard {m['scorecard_auc']:.4f}, "
          f"xgboost {m['xgb_auc']:.4f}")
    assert m["auc"] >= 0.76, m
    assert m["model_kind"] == german_model.kind == "xgboost" and m["champion_policy"] == "best"  # the higher AUC
    assert m["auc"] == m["xgb_auc"] >= 0.76 and m["scorecard_auc"] >= 0.75, m
    assert m["model_kind_why"].startswith("best: the XGBoost serves (holdout AUC scorecard 0.75")
    assert m["gini"] == pytest.approx(2 * m["auc"] - 1) and 0.35 < m["ks"] < 0.6
    assert 190 < m["holdout_rows"] < 215 and 0.25 < m["positive_rate"] < 0.35
    assert m["brier"] < 0.19  # a constant 30% guess scores 0.21
    assert german_model.target_kind == "defaulted"
    # the strongest evidence in this data set: the checking account status
    assert next(iter(german_model.iv)) == "attr_checking_account" and german_model.iv["attr_checking_account"] > 0.5
    assert all(iv >= 0.02 for iv in (german_model.iv[f] for f in german_model.bins))
    for b in german_model.bins.values():  # every bin but the missing one holds min_bin_share of the applicants
        assert (b.total[:-1] >= 0.05 * b.total.sum()).all(), (b.feature, list(zip(b.labels, b.total, strict=True)))


def test_german_quality_over_other_splits(german):
    """The fixed holdout (195 applicants) is a hard draw: the scorecard sits at 0.760 +- 0.0003 under small
    changes of C. Over other 80/20 splits (customer ids re-salted) it averages ~0.79, level with the challenger."""
    frame, y = german
    aucs = np.array([[m.metrics["scorecard_auc"], m.metrics["xgb_auc"]] for m in (
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
    s = german_model.score(frame, kind="scorecard")
    assert list(s.columns) == ["customer_id", "score", "pd", "grade", "reason_1", "reason_2", "reason_3",
                               "target_kind", "model_kind"]
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
    assert s.reason_1.dropna().isin(list(german_model.bins)).all()
    r = s[["reason_1", "reason_2", "reason_3"]].dropna()
    assert (r.nunique(axis=1) == 3).all()
    worst = s.sort_values("score").iloc[0]
    assert worst.reason_1 in ("attr_checking_account", "attr_duration_months", "attr_credit_history",
                              "attr_other_debtors", "attr_purpose")
    # reason 1 mostly names a strong feature: the strongest leads
    first = s.reason_1.value_counts()
    assert first.index[0] == "attr_checking_account", first


def test_german_xgboost_scores(german_model, german):
    """The served XGBoost: the same columns, points on the scorecard's scale, reasons named by feature."""
    frame, y = german
    s = german_model.score(frame)
    card = german_model.score(frame, kind="scorecard")
    assert list(s.columns) == list(card.columns) and (s.model_kind == "xgboost").all()
    assert (np.diff(s.sort_values("score").pd.to_numpy()) <= 0).all()
    assert s.pd.to_numpy() == pytest.approx(german_model.predict_pd(frame, "xgboost"))
    bad = y.groupby(s.grade.to_numpy()).mean()
    assert bad.is_monotonic_increasing and bad.iloc[-1] > 0.4, bad
    assert s[["reason_1", "reason_2", "reason_3"]].stack().isin(german_model.spec.names).all()
    first = s.reason_1.value_counts()
    assert first.index[0] == "attr_checking_account", first


def test_save_load_round_trip(german_model, german, tmp_path):
    frame, _ = german
    folder = save_credit_risk(german_model, tmp_path / "models", 3)
    assert folder == tmp_path / "models" / "credit_risk" / "v3" and (folder / "booster.json").is_file()
    again = load_credit_risk(folder)
    pd.testing.assert_frame_equal(again.score(frame), german_model.score(frame))
    pd.testing.assert_frame_equal(again.scorecard_table(), german_model.scorecard_table())
    pd.testing.assert_frame_equal(again.score(frame, kind="scorecard"), german_model.score(frame, kind="scorecard"))
    assert again.kind == german_model.kind == "xgboost"
    assert again.metrics == german_model.metrics and again.params == german_model.params
    # a version saved before the XGBoost could serve has no kind: it is a scorecard
    rest = joblib.load(folder / "model.joblib")
    del rest["kind"]
    joblib.dump(rest, folder / "model.joblib")
    older = load_credit_risk(folder)
    assert older.kind == "scorecard" and older.features == list(older.bins)
    pd.testing.assert_frame_equal(older.score(frame), german_model.score(frame, kind="scorecard"))


def test_scoring_speed(german_model, german):
    """The scorecard: >= 200k customers/s is the target on 2 cores (measured ~300-450k/s on 1M rows); the bar
    here is the pipeline's minimum of 50k/s so a busy machine does not fail it. The XGBoost with its reason codes
    (Saabas contributions) measured 17-22k/s with the 2 cores shared (exact TreeSHAP: 2.7k/s); its bar is 5k/s."""
    frame, _ = german
    big = pd.concat([frame] * 200, ignore_index=True)
    big["customer_id"] = np.arange(len(big)).astype(str)
    for kind, n, bar in (("scorecard", 200_000, 50_000), ("xgboost", 50_000, 5_000)):
        german_model.score(big.head(1000), kind=kind)
        t0 = time.perf_counter()
        s = german_model.score(big.head(n), kind=kind)
        rate = n / (time.perf_counter() - t0)
        print(f"\nscoring ({kind}): {rate:,.0f} customers/s")
        assert len(s) == n and rate > bar


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
    print(f"\nsynthetic loan holders: scorecard auc {m['scorecard_auc']:.4f}, xgb auc {m['xgb_auc']:.4f}", m)
    assert m["scorecard_auc"] > 0.75 and m["xgb_auc"] > 0.75, m
    assert 0.05 < m["positive_rate"] < 0.15 and m["holdout_rows"] > 600
    # the generator's default drivers: credit score, debt-to-income
    assert {"credit_score", "debt_to_income"} <= set(model.bins)
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


def test_scoring_by_row_chunks_gives_the_same_rows_as_at_once(german, german_model, monkeypatch):
    """Both kinds: the XGBoost's contributions and the scorecard's points, 1,000 customers 64 at a time."""
    import ml.frame

    frame, _ = german
    whole = {kind: german_model.score(frame, kind=kind) for kind in ("scorecard", "xgboost")}
    monkeypatch.setattr(ml.frame, "SCORE_CHUNK_ROWS", 64)
    for kind, expected in whole.items():
        pd.testing.assert_frame_equal(german_model.score(frame, kind=kind), expected)
    assert len(frame) > 64 * 10
