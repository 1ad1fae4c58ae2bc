"""CLV: the purchase summary in SQL, BG/NBD + Gamma-Gamma fits, scoring; the paper's figures on real CDNOW data."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from realdata import DATA, build_warehouse, verify_md5

from ml.clv import (
    CLVParams,
    _alive_closed_form,
    _alive_quadrature,
    compare_with_supervised,
    expected_purchases,
    expected_purchases_new,
    fit_bgnbd,
    fit_gamma_gamma,
    load_clv,
    p_alive,
    save_clv,
    tier,
    train_clv,
)
from warehouse.clv import clv_summary, keep_summary, kept_summary, summary_key
from warehouse.db import connect
from warehouse.features import resolve_snapshot
from warehouse.schema import ensure_all_raw_tables
from warehouse.synthetic import generate_bank

CDNOW = DATA / "cdnow"
PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, "Counting your customers"
PAPER_GG = {"p": 6.25, "q": 3.74, "v": 15.44}  # FHL 2005, "RFM and CLV" (gamma there is v here)


def ingest(source: str, landing: Path, db: Path) -> None:
    build_warehouse(source, landing, db, features=False)


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory):
    """The paper's set-up: the 1/10 sample, 39-week calibration to 1997-09-30, 39-week holdout to 1998-06-30.
    Every row of the file is a purchase, $0 ones too (8 rows): the event is the category, not amount < 0."""
    sample = CDNOW / "CDNOW_sample.txt"
    verify_md5(sample)
    db = tmp_path_factory.mktemp("cdnow") / "w.duckdb"
    ingest("cdnow_sample", CDNOW, db)
    with connect(db) as con:
        return clv_summary(con, date(1997, 9, 30), date(1998, 6, 30), event_filter="category = 'purchase'")


@pytest.mark.realdata
def test_cdnow_summary_is_the_papers(cdnow):
    assert len(cdnow) == 2357 and cdnow["customer_id"].is_unique
    # Totals of the paper's calibration data (lifetimes' cdnow_customers_summary.csv, Hardie's): 2,457 repeat
    # purchase days; the holdout has 1,882 (BTYD's cdnowSummary x.star).
    assert cdnow["frequency"].sum() == 2457 and cdnow["holdout_x"].sum() == 1882
    first = cdnow.set_index("customer_id").loc["00004"]  # ID 1 in the paper's data
    assert (first.frequency, round(first.recency, 2), round(first["T"], 2)) == (2, 30.43, 38.86)
    assert cdnow["holdout_t"].iloc[0] == 39.0


@pytest.mark.realdata
def test_cdnow_reproduces_the_papers(cdnow):
    """Issue bar: the BG/NBD parameters within 1% of the paper's (we get them to 0.03%), Gamma-Gamma's too."""
    model = train_clv(cdnow)
    m = model.metrics
    for k, v in PAPER_BGNBD.items():
        assert m["bgnbd_params"][k] == pytest.approx(v, rel=0.01), (k, m["bgnbd_params"])
    for k, v in PAPER_GG.items():
        assert m["gg_params"][k] == pytest.approx(v, rel=0.01), (k, m["gg_params"])
    assert model.bgnbd["loglik"] == pytest.approx(-9582.4, abs=0.1)  # the paper's LL
    assert m["converged"] and m["customers"] == 2357 and m["repeat_customers"] == 946
    # Holdout, conditional on each customer's history: 1,653 predicted vs 1,882 actual purchase days (-12.1%).
    # That is what the paper's own parameters give (BTYD's per-frequency table shows the same under-forecast
    # for customers with 0-2 calibration purchases); the 10% on this window alone is out of reach
    # without changing the data definition that reproduces the parameters. Pinned here, not loosened.
    assert m["holdout_actual"] == 1882
    assert m["holdout_error"] == pytest.approx(-0.121, abs=0.003)
    assert m["holdout_value_error"] == pytest.approx(-0.156, abs=0.005)
    # The paper's tracking view, cumulative repeat purchases from each customer's first purchase to the end
    # of week 78 (1998-06-30), is within 10%: 4,161 predicted vs 4,339 actual (-4.1%).
    predicted = expected_purchases_new(model.bgnbd, cdnow["T"].to_numpy() + 39).sum()
    actual = cdnow["frequency"].sum() + cdnow["holdout_x"].sum()
    assert actual == 4339 and predicted / actual - 1 == pytest.approx(-0.041, abs=0.005)


@pytest.mark.realdata
def test_cdnow_supervised_challenger(cdnow):
    """The optional XGBoost challenger on the same 39-week holdout, with the summary as its only features: no
    better than the probabilistic model at ranking customers' future value (measured: Spearman 0.38 vs 0.36,
    top-decile capture 0.44 vs 0.43 on 467 holdout customers)."""
    cmp = compare_with_supervised(train_clv(cdnow), cdnow, n_estimators=150)
    assert cmp["holdout_customers"] == pytest.approx(0.2 * 2357, abs=60) and cmp["features"] == 4
    for name in ("bgnbd_gg", "xgboost"):
        assert 0.3 < cmp[name]["spearman"] < 0.5 and 0.35 < cmp[name]["top_decile_capture"] < 0.55, cmp
    assert abs(cmp["xgboost"]["spearman"] - cmp["bgnbd_gg"]["spearman"]) < 0.08, cmp


def test_papers_conditional_expectation():
    """FHL 2005 section 5: a customer with x=2, t_x=30.43, T=38.86 is expected to make 1.226 purchases in the
    next 39 weeks (with the paper's parameters)."""
    e = expected_purchases(PAPER_BGNBD, 39, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert e[0] == pytest.approx(1.226, abs=0.0005)


# ------------------------------------------------------------------------------------- the SQL summary

HAND = [  # customer, timestamp, amount, category
    ("A", "2024-01-01 10:00", -10.0, "card"),
    ("A", "2024-01-01 15:00", -5.0, "card"),  # same day: one purchase day worth 15
    ("A", "2024-01-08 09:00", -20.0, "card"),
    ("A", "2024-01-15 09:00", 100.0, "salary"),  # money in: not a purchase
    ("A", "2024-01-29 09:00", -30.0, "bill"),
    ("A", "2024-01-31 23:59", -40.0, "card"),  # on calibration_end: calibration
    ("A", "2024-02-10 12:00", -7.0, "card"),  # holdout
    ("A", "2024-03-02 08:00", -99.0, "card"),  # after holdout_end: ignored
    ("B", "2024-01-20 12:00", -12.5, "card"),  # one purchase only
    ("B", "2024-02-01 00:00", -3.0, "card"),
    ("B", "2024-03-01 23:00", -4.0, "card"),  # on holdout_end: holdout
    ("C", "2024-02-05 12:00", -50.0, "card"),  # first purchase after calibration: not in the summary
    ("D", "2024-01-05 12:00", 80.0, "salary"),  # never buys: not in the summary
    ("E", "2023-12-25 08:00", -1.0, "cash"),
    ("E", "2023-12-25 18:00", -2.0, "cash"),
    ("E", "2024-01-25 08:00", -3.0, "card"),
    ("E", "2024-01-25 09:00", -4.0, "card"),
]
CAL, HOLD = date(2024, 1, 31), date(2024, 3, 1)


@pytest.fixture
def hand_con():
    con = duckdb.connect()
    ensure_all_raw_tables(con)
    con.executemany(
        "INSERT INTO raw.transactions (transaction_id, customer_id, transaction_date, amount, category) "
        "VALUES (?, ?, CAST(? AS TIMESTAMP), ?, ?)",
        [(f"t{i}", c, ts, amt, cat) for i, (c, ts, amt, cat) in enumerate(HAND)],
    )
    yield con
    con.close()


def pandas_summary(rows, cal: date, hold: date, unit: float) -> pd.DataFrame:
    """The definition, the slow obvious way."""
    t = pd.DataFrame(rows, columns=["customer_id", "ts", "amount", "category"])
    t = t[t.amount < 0].assign(day=lambda d: pd.to_datetime(d.ts).dt.normalize(), value=lambda d: -d.amount)
    days = t[t.day <= pd.Timestamp(hold)].groupby(["customer_id", "day"], as_index=False).value.sum()
    out = []
    for cid, g in days.groupby("customer_id"):
        c, h = g[g.day <= pd.Timestamp(cal)].sort_values("day"), g[g.day > pd.Timestamp(cal)]
        if c.empty:
            continue
        first, x = c.day.iloc[0], len(c) - 1
        out.append({"customer_id": cid, "frequency": x, "recency": (c.day.iloc[-1] - first).days / unit,
                    "T": (pd.Timestamp(cal) - first).days / unit,
                    "monetary": c.value.iloc[1:].mean() if x else 0.0,
                    "holdout_x": len(h), "holdout_value": h.value.sum(), "holdout_t": (hold - cal).days / unit})
    return pd.DataFrame(out)


def test_summary_matches_hand_and_pandas(hand_con):
    s = clv_summary(hand_con, CAL, HOLD)
    assert list(s.customer_id) == ["A", "B", "E"]  # C bought first after calibration_end, D never bought
    a, b, e = (s.set_index("customer_id").loc[c] for c in "ABE")
    # A: purchase days 01-01 (15), 01-08 (20), 01-29 (30), 01-31 (40); holdout 02-10 (7)
    assert (a.frequency, a.recency, a["T"], a.monetary, a.holdout_x, a.holdout_value) == (3, 30 / 7, 30 / 7, 30.0, 1, 7.0)
    # B: one purchase on 01-20; holdout 02-01 (3) and 03-01 (4, on holdout_end)
    assert (b.frequency, b.recency, b["T"], b.monetary, b.holdout_x, b.holdout_value) == (0, 0.0, 11 / 7, 0.0, 2, 7.0)
    # E: 12-25 (1+2) and 01-25 (3+4): one repeat day worth 7
    assert (e.frequency, e.recency, e["T"], e.monetary, e.holdout_x, e.holdout_value) == (1, 31 / 7, 37 / 7, 7.0, 0, 0.0)
    assert (s.holdout_t == 30 / 7).all()
    pd.testing.assert_frame_equal(s, pandas_summary(HAND, CAL, HOLD, 7.0), check_dtype=False)
    # in days, without a holdout, purchases of one category only
    d = clv_summary(hand_con, CAL, None, event_filter="category = 'card'", time_unit_days=1)
    assert list(d.columns) == ["customer_id", "frequency", "recency", "T", "monetary"]
    assert d.set_index("customer_id").loc["A"].tolist() == [2, 30.0, 30.0, 30.0]  # 01-01, 01-08, 01-31: (20+40)/2
    with pytest.raises(ValueError, match="after calibration_end"):
        clv_summary(hand_con, CAL, CAL)


# ---------------------------------------------------------------------------------------- the models


def simulate(n: int, bg: dict, gg: dict, t_hold: float, seed: int) -> pd.DataFrame:
    """Customers drawn from BG/NBD + Gamma-Gamma with known parameters, observed for T ~ U(10, 52) weeks after
    their first purchase, then for t_hold more."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(bg["r"], 1 / bg["alpha"], n), rng.beta(bg["a"], bg["b"], n)
    T = rng.uniform(10, 52, n)
    t, tx, x, xh = np.zeros(n), np.zeros(n), np.zeros(n, int), np.zeros(n, int)
    alive = np.ones(n, bool)
    while alive.any():
        i = np.flatnonzero(alive)
        t[i] += rng.exponential(1 / lam[i])
        over = t[i] > T[i] + t_hold
        alive[i[over]] = False
        i = i[~over]
        cal = t[i] <= T[i]
        x[i[cal]] += 1
        tx[i[cal]] = t[i[cal]]
        xh[i[~cal]] += 1
        alive[i[rng.random(len(i)) < p[i]]] = False  # drops out after a repeat purchase with probability p
    nu = rng.gamma(gg["q"], 1 / gg["v"], n)
    m = np.where(x > 0, rng.gamma(gg["p"] * np.maximum(x, 1), 1 / (nu * np.maximum(x, 1))), 0.0)
    return pd.DataFrame({"customer_id": [f"S{i:05d}" for i in range(n)], "frequency": x, "recency": tx, "T": T,
                         "monetary": m, "holdout_x": xh, "holdout_value": 0.0, "holdout_t": t_hold})


@pytest.fixture(scope="module")
def simulated():
    return simulate(20_000, {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}, {"p": 6.0, "q": 4.0, "v": 15.0}, 26, seed=1)


def test_recovers_simulated_parameters(simulated):
    bg = fit_bgnbd(simulated)
    assert bg["converged"] and not bg["at_bound"]
    assert bg["r"] == pytest.approx(0.5, rel=0.10) and bg["alpha"] == pytest.approx(5.0, rel=0.10)
    assert bg["a"] == pytest.approx(0.8, rel=0.25) and bg["b"] == pytest.approx(2.5, rel=0.25)
    gg = fit_gamma_gamma(simulated)
    assert gg["p"] == pytest.approx(6.0, rel=0.15) and gg["q"] == pytest.approx(4.0, rel=0.15)
    assert gg["v"] == pytest.approx(15.0, rel=0.25)
    m = train_clv(simulated).metrics
    assert abs(m["holdout_error"]) < 0.05, m  # the model's own process: the aggregate forecast is right
    # a sample of 5,000 gives nearly the same fit
    small = fit_bgnbd(simulated, fit_sample=5000)
    assert small["fit_customers"] == 5000 and small["r"] == pytest.approx(bg["r"], rel=0.2)


def test_expectation_where_hyp2f1_fails():
    """A fit with no spread in purchase rates (r, alpha in the tens of thousands) and almost no dropout: scipy's
    hyp2f1 fails there; the quadrature fallback gives the Poisson limit (r+x) t / (alpha+T)."""
    bg = {"r": 5e4, "alpha": 1e5, "a": 1e-5, "b": 300.0}
    x, T = np.array([0.0, 5.0, 40.0]), np.array([10.0, 30.0, 50.0])
    e = expected_purchases(bg, 52, x, T, T)
    assert np.allclose(e, (bg["r"] + x) * 52 / (bg["alpha"] + T), rtol=1e-3)
    # and where both work, they agree
    bg = PAPER_BGNBD
    x, T = np.array([0.0, 1, 3, 10, 30]), np.array([38.86, 20, 30, 38, 25])
    assert np.allclose(_alive_quadrature(bg, 39, x, T), _alive_closed_form(bg, 39, x, T), rtol=1e-4)


def test_scores_are_sane_and_tiers_partition(simulated, tmp_path):
    params = CLVParams.from_config({"horizon_months": 6, "annual_discount_rate": 0.08, "margin": 0.3,
                                    "tiers": {"Top": 0.05, "High": 0.15, "Mid": 0.3, "Low": None}})
    assert params.tiers == (("Top", 0.05), ("High", 0.15), ("Mid", 0.3), ("Low", None))
    model = train_clv(simulated, params)
    s = model.score(simulated)
    assert list(s.columns) == ["customer_id", "expected_purchases_horizon", "p_alive", "expected_avg_value", "clv",
                               "clv_tier"]
    assert len(s) == len(simulated) and (s.customer_id == simulated.customer_id).all()
    assert s.p_alive.between(0, 1).all() and (s.p_alive[simulated.frequency == 0] == 1).all()
    assert (s.clv >= 0).all() and (s.expected_purchases_horizon >= 0).all() and (s.expected_avg_value > 0).all()
    assert s.clv_tier.value_counts().to_dict() == {"Top": 1000, "High": 3000, "Mid": 6000, "Low": 10000}
    assert s.groupby("clv_tier").clv.min()["Top"] >= s.groupby("clv_tier").clv.max()["High"]
    # clv = discounted monthly purchases x value x margin: below the undiscounted product, above it discounted
    # at the horizon's end
    undiscounted = s.expected_purchases_horizon * s.expected_avg_value * 0.3
    assert (s.clv <= undiscounted + 1e-9).all() and (s.clv >= undiscounted / 1.08**0.5 - 1e-9).all()
    # a customer who bought often and lately is worth more and more likely alive than one who stopped early
    bg = model.bgnbd
    assert p_alive(bg, np.array([10.0]), np.array([50.0]), np.array([52.0]))[0] > 0.9
    assert p_alive(bg, np.array([10.0]), np.array([5.0]), np.array([52.0]))[0] < 0.1
    again = load_clv(save_clv(model, tmp_path / "models", 3))
    assert (tmp_path / "models" / "clv" / "v3" / "model.joblib").is_file()
    pd.testing.assert_frame_equal(again.score(simulated), s)
    assert again.metrics == model.metrics and again.params == params


def test_tiers_exact_shares_with_ties():
    values = np.r_[np.full(500, 1000.0), np.arange(500.0)]  # half of the customers tie at the top
    names = tier(values, (("P", 0.1), ("G", 0.2), ("S", 0.3), ("B", 0.4)))
    assert dict(zip(*np.unique(names, return_counts=True), strict=True)) == {"P": 100, "G": 200, "S": 300, "B": 400}
    # equal values are split in input order; below the ties, the highest values come first
    assert (names[:100] == "P").all() and (names[100:300] == "G").all() and (names[300:500] == "S").all()
    assert set(names[values >= 400][500:]) == {"S"} and set(names[values < 400]) == {"B"}
    with pytest.raises(ValueError, match="add up"):
        tier(np.ones(3), (("P", 0.7), ("G", 0.5), ("B", None)))


def test_generated_bank_end_to_end(tmp_path):
    """The generated bank through the pipeline's raw tables: summary as of the snapshot, 90-day holdout."""
    landing = tmp_path / "landing"
    generate_bank(landing, customers=3000, seed=3)
    db = tmp_path / "w.duckdb"
    ingest("synthetic", landing, db)
    with connect(db) as con:
        snap = resolve_snapshot(con, None, 90)
        summary = clv_summary(con, snap, snap + timedelta(days=90))
    assert 2500 < len(summary) <= 3000 and summary["holdout_t"].iloc[0] == pytest.approx(90 / 7)
    model = train_clv(summary)
    m = model.metrics
    assert m["converged"] and m["holdout_error"] is not None
    # The generated bank is not a BG/NBD world (its churners leave right after the snapshot, without warning
    # in their purchase history), so the forecast runs high; the default gate (models.clv.gate) would reject it.
    assert 0.1 < m["holdout_error"] < 0.6, m
    s = model.score(summary)
    assert s.p_alive.between(0, 1).all() and (s.clv >= 0).all()
    counts = s.clv_tier.value_counts()
    tiers = CLVParams().tiers
    rest = 1 - sum(share for _, share in tiers[:-1])  # the last tier (share null) takes the rest
    for name, share in [*tiers[:-1], (tiers[-1][0], rest)]:
        assert abs(counts[name] - share * len(s)) <= 1, counts


def test_a_training_runs_summary_serves_its_scoring_and_nothing_else(tmp_path):
    """The challenger's summary (with the holdout) is kept for the scoring step of its run: the same frame as
    the scoring summary computed again, and never used for another snapshot, purchase definition or delivery."""
    landing, db = tmp_path / "landing", tmp_path / "w.duckdb"
    generate_bank(landing, customers=1500, seed=4)
    ingest("synthetic", landing, db)
    with connect(db) as con:
        snap = resolve_snapshot(con, None, 90)
        key = summary_key(con, snap, "amount < 0", "-amount", 7.0)
        assert kept_summary(con, key) is None
        keep_summary(con, clv_summary(con, snap, snap + timedelta(days=90)), key)
        kept = kept_summary(con, key)
        pd.testing.assert_frame_equal(kept, clv_summary(con, snap), check_exact=True)
        assert len(kept) > 1000
        for other in (summary_key(con, snap - timedelta(days=1), "amount < 0", "-amount", 7.0),
                      summary_key(con, snap, "amount < -10", "-amount", 7.0),
                      summary_key(con, snap, "amount < 0", "-amount", 30.0)):
            assert kept_summary(con, other) is None
        customer = kept["customer_id"].iloc[0]
    (landing / "transactions_late.csv").write_text(
        f"transaction_id,customer_id,transaction_date,amount\nLATE1,{customer},{snap - timedelta(days=3)},-50.0\n")
    (landing / "_SUCCESS").touch()  # the export job's marker, written after its files
    ingest("synthetic", landing, db)  # a later delivery of transactions: the ledger moves
    with connect(db) as con:
        assert con.execute("SELECT count(*) FROM raw.transactions WHERE transaction_id = 'LATE1'").fetchone()[0] == 1
        assert kept_summary(con, summary_key(con, snap, "amount < 0", "-amount", 7.0)) is None


def test_summary_is_the_same_whatever_the_row_order(tmp_path):
    """Sums of doubles depend on their order ((0.1 + 0.2) + 0.3 != 0.3 + 0.2 + 0.1); the summary sums exactly,
    so a reload or a parallel scan that meets the rows in another order fits the very same CLV model."""
    amounts = [-51.19, -95.05, -14.42, -94.87, -31.19, -42.34, -82.77]  # old double sums: 180.32000000000002 / 180.32
    days = ["2024-01-01", "2024-02-01", "2024-02-01", "2024-02-01", "2024-03-01", "2024-03-01", "2024-03-01"]
    rows = [(f"T{i}", "C1", d, a) for i, (d, a) in enumerate(zip(days, amounts, strict=True))]
    out = []
    for order in (rows, rows[::-1]):
        with duckdb.connect(str(tmp_path / f"w{len(out)}.duckdb")) as con:
            con.execute("CREATE SCHEMA raw; CREATE TABLE raw.transactions (transaction_id VARCHAR, customer_id "
                        "VARCHAR, transaction_date TIMESTAMP, amount DOUBLE)")
            con.executemany("INSERT INTO raw.transactions VALUES (?, ?, ?, ?)", order)
            out.append(clv_summary(con, date(2024, 3, 31)))
    assert out[0]["monetary"].iloc[0] == out[1]["monetary"].iloc[0] == 180.32  # (204.34 + 156.30) / 2
