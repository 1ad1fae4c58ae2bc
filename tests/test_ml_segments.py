"""Customer segments: K-Means + names + RFM grid, as plain functions on DataFrames (no Dagster)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from realdata import DATA, build_warehouse, verify_md5
from sklearn.metrics import silhouette_samples, silhouette_score

from ml.segments import (
    NO_ACTIVITY,
    RFM_SEGMENTS,
    SegmentModel,
    SegmentParams,
    Transform,
    _name_clusters,
    assign,
    choose_features,
    load_segments,
    rfm_segments,
    save_segments,
    silhouettes,
    split,
    train_segments,
)
from ml.split import holdout_mask
from warehouse.db import connect
from warehouse.synthetic import generate_bank

CHURN_CSV = DATA / "churn_modelling" / "Churn_Modelling.csv"


def customer_features(source: str, landing: Path, db: Path) -> pd.DataFrame:
    """Ingest + features as the pipeline builds them; features.customer_features as a DataFrame."""
    with connect(build_warehouse(source, landing, db)) as con:
        return con.execute("SELECT * FROM features.customer_features ORDER BY customer_id").df()


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("seg")
    generate_bank(tmp / "landing", customers=3000, seed=3)
    return customer_features("synthetic", tmp / "landing", tmp / "w.duckdb")


@pytest.fixture(scope="module")
def bank_model(bank):
    return train_segments(bank)


@pytest.fixture(scope="module")
def churn_modelling(tmp_path_factory) -> pd.DataFrame:
    verify_md5(CHURN_CSV)
    return customer_features("churn_modelling", CHURN_CSV.parent, tmp_path_factory.mktemp("cm") / "w.duckdb")


def brute_silhouette(z: np.ndarray, labels: np.ndarray) -> float:
    """Rousseeuw's silhouette written out: a = mean distance to the own cluster (others), b = lowest mean
    distance to another cluster, s = (b - a) / max(a, b), 0 for a cluster of one."""
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    s = np.zeros(len(z))
    for i in range(len(z)):
        own = labels == labels[i]
        if own.sum() == 1:
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        s[i] = (b - a) / max(a, b)
    return float(s.mean())


def check_model(model, frame: pd.DataFrame) -> None:
    """What every trained segment model must satisfy, on any data set."""
    m = model.metrics
    assert 4 <= m["k"] <= 6 and model.k == m["k"] and set(m["silhouette_by_k"]) == {"4", "5", "6"}
    assert 0 < m["silhouette"] <= 1, m
    # the reported silhouette is sklearn's (and Rousseeuw's) on the documented holdout sample
    sp = split(frame, model.params)
    assert (sp.holdout == holdout_mask(frame["customer_id"], model.params.holdout_share)).all()
    assert sp.holdout[sp.evaluate].all() and not sp.holdout[sp.fit].any()
    z = model.transform.apply(frame.iloc[sp.evaluate])
    labels = assign(z, model.centers)[0]
    assert m["silhouette"] == pytest.approx(silhouette_score(z, labels), abs=1e-12)
    assert m["silhouette"] == pytest.approx(brute_silhouette(z, labels), abs=1e-9)
    assert m["silhouette_rows"] == len(sp.evaluate) and m["holdout_rows"] == sp.holdout.sum()
    # names: unique, non-empty, one per cluster; sizes add up
    assert len(model.names) == model.k == len(set(model.names)) and all(n.strip() for n in model.names)
    table = model.profile_table()
    assert list(table["segment_name"]) == model.names and table["size"].sum() == len(frame)
    assert table["description"].str.len().gt(0).all() and sum(m["sizes"].values()) == len(frame)
    assert m["min_share"] == pytest.approx(table["size"].min() / len(frame), abs=1e-6)
    # every customer scored exactly once, in its nearest segment
    scored = model.score(frame)
    assert len(scored) == len(frame) and scored["customer_id"].is_unique
    assert set(scored["customer_id"]) == set(frame["customer_id"])
    assert scored["segment_id"].between(0, model.k - 1).all()
    assert (scored["segment_name"].to_numpy() == np.array(model.names, dtype=object)[scored["segment_id"]]).all()
    z_all = model.transform.apply(frame)
    nearest = np.sqrt(((z_all[:, None, :] - model.centers[None]) ** 2).sum(-1))
    assert (scored["segment_id"].to_numpy() == nearest.argmin(axis=1)).all()
    assert np.allclose(scored["centroid_distance"], nearest.min(axis=1), rtol=1e-5, atol=1e-5)
    assert scored["rfm_segment"].isin(RFM_SEGMENTS).all()
    assert scored.groupby("segment_id").size().to_dict() == dict(enumerate(table["size"]))


def test_synthetic_bank_segments(bank, bank_model):
    check_model(bank_model, bank)
    used = bank_model.features
    # the synthetic bank has the behaviour columns: no attr_* top-up
    assert {"frequency", "monetary", "balance_now", "age"} <= set(used) and not any(c.startswith("attr_") for c in used)
    assert bank_model.metrics["features"] == used
    rfm = bank_model.score(bank)["rfm_segment"]
    assert (rfm.to_numpy() == rfm_segments(bank)).all() and rfm.nunique() >= 5  # a spread, not one bucket


def test_deterministic_and_order_free(bank, bank_model):
    again = train_segments(bank)
    shuffled = bank.sample(frac=1.0, random_state=1).reset_index(drop=True)
    other_order = train_segments(shuffled)
    a = bank_model.score(bank).set_index("customer_id")
    for model, frame in ((again, bank), (other_order, shuffled)):
        b = model.score(frame).set_index("customer_id").loc[a.index]
        assert model.names == bank_model.names and model.metrics == bank_model.metrics
        assert (a["segment_id"] == b["segment_id"]).all() and np.allclose(a["centroid_distance"], b["centroid_distance"])


def test_save_load_round_trip(bank, bank_model, tmp_path):
    folder = save_segments(bank_model, tmp_path / "models", 3)
    assert folder == tmp_path / "models" / "segments" / "v3" and (folder / "model.joblib").is_file()
    loaded = load_segments(folder)
    pd.testing.assert_frame_equal(loaded.score(bank), bank_model.score(bank))
    pd.testing.assert_frame_equal(loaded.profile_table(), bank_model.profile_table())
    assert loaded.metrics == bank_model.metrics and loaded.params == bank_model.params
    assert loaded.names == bank_model.names and loaded.descriptions == bank_model.descriptions


def test_churn_modelling_segments(churn_modelling):
    """Real data with customer attributes only: the attr_* columns top up the few behaviour columns, and the
    bank's balance sent twice (balance_now from the balance column and attr_balance) counts once."""
    model = train_segments(churn_modelling)
    check_model(model, churn_modelling)
    assert "attr_num_of_products" in model.features and "balance_now" in model.features
    assert "attr_balance" not in model.features and "duplicates balance_now" in model.skipped["attr_balance"]
    assert (model.score(churn_modelling)["rfm_segment"] == NO_ACTIVITY).all()  # no transactions in this set


# RF grid cells as the published regex map writes them (R score then F score); Lost and No activity on top.
PUBLISHED_RF_MAP = {
    r"[1-2][1-2]": "Hibernating", r"[1-2][3-4]": "At risk", r"[1-2]5": "Can't lose them",
    r"3[1-2]": "About to sleep", r"33": "Need attention", r"[3-4][4-5]": "Loyal customers", r"41": "Promising",
    r"51": "New customers", r"[4-5][2-3]": "Potential loyalists", r"5[4-5]": "Champions",
}


def test_rfm_grid_on_hand_made_scores():
    cells = [(r, f) for r in range(1, 6) for f in range(1, 6)]
    frame = pd.DataFrame({"rfm_r": [r for r, _ in cells], "rfm_f": [f for _, f in cells], "rfm_m": 3,
                          "recency_days": 10.0})
    expected = [next(seg for pat, seg in PUBLISHED_RF_MAP.items() if re.fullmatch(pat, f"{r}{f}")) for r, f in cells]
    assert list(rfm_segments(frame)) == expected
    extra = pd.DataFrame({
        "rfm_r": [1, 1, 1, 5, 2, 1],
        "rfm_f": [1, 1, 1, 5, 1, 3],
        "rfm_m": [1, 2, 1, 5, 1, 1],
        "recency_days": [400.0, 400.0, None, None, 200.0, 300.0],
    })
    assert list(rfm_segments(extra)) == ["Lost", "Hibernating", NO_ACTIVITY, NO_ACTIVITY, "Hibernating", "At risk"]
    # without rfm_m, R = F = 1 is Lost; without recency_days, frequency 0 means no activity
    no_m = pd.DataFrame({"rfm_r": [1, 4], "rfm_f": [1, 1], "frequency": [3, 0]})
    assert list(rfm_segments(no_m)) == ["Lost", NO_ACTIVITY]
    assert set(PUBLISHED_RF_MAP.values()) | {"Lost", NO_ACTIVITY} == set(RFM_SEGMENTS)


def test_importance_is_how_far_apart_the_centres_lie():
    """What drift monitoring weighs each input's drift by: a feature all centres share tells no segment apart."""
    transform = Transform(["a", "b"], np.zeros(2), np.full(2, np.nan), np.zeros(2), np.ones(2), 3.0)
    model = SegmentModel(transform, np.array([[-1.0, 0.5], [1.0, 0.5]]), ["x", "y"], ["", ""], SegmentParams(),
                         pd.DataFrame({"segment_id": [0, 1], "share": [0.5, 0.5]}))
    assert model.importance() == {"a": 1.0, "b": 0.0}


def test_naming_rules():
    cols = ["age", "channel_share_mobile", "monetary", "income", "balance_now", "recency_days", "tenure_months",
            "products_held"]

    def effects(**d):
        return [d.get(c, 0.0) for c in cols]

    rows = [
        effects(age=-1.0, channel_share_mobile=0.9, monetary=1.2),
        effects(income=1.2, balance_now=1.0),
        effects(recency_days=1.5, balance_now=-0.8),
        effects(tenure_months=-1.2),
        effects(products_held=1.3, tenure_months=0.8),
        effects(age=0.2, income=-0.3),
        effects(age=-1.0, income=0.8, balance_now=-0.6),
        effects(age=-1.0, income=0.8, products_held=0.6),
        effects(age=-1.0, income=0.8, balance_now=-0.6),
    ]
    names = _name_clusters(np.array(rows), cols, SegmentParams())
    assert names == [
        "young digital spenders", "affluent savers", "dormant low-balance customers", "new customers",
        "multi-product loyalists", "mainstream customers", "young affluent low-balance customers",
        "young affluent multi-product customers", "young affluent low-balance customers (2)",
    ]


def test_feature_choice():
    n = 1000
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "recency_days": rng.integers(0, 300, n),
                         "frequency": rng.poisson(3, n), "monetary": rng.gamma(2, 50, n),
                         "products_held": 1, "attr_score": rng.normal(size=n), "attr_text": "x"})
    p = SegmentParams()
    # transactions only (CDNOW-like): the behaviour columns, a constant one left out; too few -> attr_* added
    cols, skipped = choose_features(base, p)
    assert cols == ["recency_days", "frequency", "monetary", "attr_score"]
    assert "constant" in skipped["products_held"] and skipped["attr_text"] == "not numeric"
    # enough behaviour columns: no top-up; mostly missing columns are left out; exclude is honoured
    rich = base.assign(income=rng.lognormal(10, 1, n), age=rng.integers(18, 90, n), tenure_months=rng.integers(0, 200, n),
                       balance_now=np.where(rng.random(n) < 0.7, np.nan, 1.0))
    cols, skipped = choose_features(rich, SegmentParams(exclude=("age",)))
    assert cols == ["recency_days", "frequency", "monetary", "income", "tenure_months", "attr_score"]
    assert "balance_now" in skipped and "age" not in cols
    cols, _ = choose_features(rich.assign(age=rng.integers(18, 90, n)), p)
    assert cols == ["recency_days", "frequency", "monetary", "income", "age", "tenure_months"]


def test_rfm_segments_follow_recency_not_a_tie_in_the_quintiles(tmp_path):
    """A delivery where most customers were seen 2 days before the snapshot (a tie at the top of recency): the
    mid-rank quintiles put them in R 2, but nobody active within models.segments.rfm_active_days is
    called Hibernating, At risk, Can't lose them, About to sleep or Lost; long-quiet customers still are."""
    from datetime import date

    from assets.settings import load_settings
    from warehouse import features as F
    from warehouse.schema import ensure_all_raw_tables, ensure_schemas

    snap = date(2025, 6, 30)
    with connect(tmp_path / "w.duckdb") as con:
        ensure_schemas(con)
        ensure_all_raw_tables(con)
        # 1,000 customers: 45% seen on the snapshot day, 50% two days before (a tie that mid-rank places at
        # 0.7 of the scale: R 2), 5% 60-300 days before; each with 1-12 transactions over the year before that
        con.execute(f"""
            INSERT INTO raw.transactions BY NAME
            SELECT 'T' || c || '-' || k AS transaction_id, 'C' || lpad(c::VARCHAR, 4, '0') AS customer_id,
                   (DATE '{snap}' - (CASE WHEN c < 450 THEN 0 WHEN c < 950 THEN 2 ELSE 60 + (c - 950) * 5 END)::INTEGER
                    - (k * 25)::INTEGER)::TIMESTAMP AS transaction_date, -10.0 AS amount
            FROM range(1000) r(c), range(12) t(k) WHERE k <= c % 12""")
        F.build_population(con, snap)
        F.build_rfm(con, snap)
        frame = con.execute("SELECT * FROM features.rfm").df()
    recent = frame["recency_days"] <= 2
    assert recent.mean() == 0.95 and set(frame.loc[frame["recency_days"] == 2, "rfm_r"]) == {2}  # the premise
    assert set(rfm_segments(frame)[(frame["recency_days"] == 2).to_numpy()]) & {"Hibernating", "At risk"}  # the bug
    days = load_settings()["models"]["segments"]["rfm_active_days"]
    segments = pd.Series(rfm_segments(frame, days), index=frame.index)
    asleep = {"Hibernating", "At risk", "Can't lose them", "About to sleep", "Lost"}
    assert not segments[frame["recency_days"] <= days].isin(asleep).any()
    assert segments[frame["recency_days"] >= 200].isin(asleep).all()
    assert set(segments[recent]) <= {"Champions", "Loyal customers", "Potential loyalists", "New customers", "Promising"}


def test_silhouettes_of_several_labelings_equal_sklearns_one_by_one():
    rng = np.random.default_rng(3)
    z = np.vstack([rng.normal(size=(700, 5)), rng.normal(3, 1, size=(500, 5))])
    labelings = [rng.integers(0, k, len(z)) for k in (4, 5, 6)] + [(z[:, 0] > 1.5).astype(int)]
    labelings[-1][17] = 9  # a cluster of one row: silhouette 0, as sklearn defines it
    got = silhouettes(z, [*labelings, np.zeros(len(z), dtype=int)], chunk_bytes=1 << 20)  # several chunks
    for labels, (mean, rows) in zip(labelings, got[:-1], strict=True):
        expected = silhouette_samples(z, labels)
        assert np.abs(rows - expected).max() < 1e-12 and mean == pytest.approx(expected.mean(), abs=1e-12)
    assert got[3][1][17] == 0.0 and np.isnan(got[-1][0])  # one cluster: no silhouette
