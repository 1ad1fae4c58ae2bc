"""Manager and agency performance without Dagster: the monthly book in DuckDB SQL (counted by hand on a small
bank), the score (composite on the T-score scale, objectives where raw.targets has them), the features (past
only), the regressor (skill over carrying the last score forward where a lasting effect exists) and what it
scores (rank, drivers, support for the bottom decile)."""

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from assets.settings import BookSettings
from ml import performance as P
from ml.errors import NotEnoughData
from ml.params import BookScoreParams, PerformanceParams
from warehouse import performance as W
from warehouse.contract import TABLES
from warehouse.db import sql
from warehouse.schema import ensure_all_raw_tables, storage

FILTER = BookSettings().activity_filter  # the default: all but fees and interest


def _insert(con, table: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)  # noqa: F841 (read by DuckDB)
    con.execute(f"INSERT INTO {storage(TABLES[table], TABLES[table].mode)} BY NAME SELECT * FROM frame")


@pytest.fixture()
def small_bank():
    con = duckdb.connect()
    ensure_all_raw_tables(con)
    _insert(con, "managers", [{"manager_id": "M1", "agency_id": "A1"}, {"manager_id": "M2", "agency_id": "A1"}])
    _insert(con, "customers", [{"customer_id": "C1", "manager_id": "M1"}, {"customer_id": "C2", "manager_id": "M1"},
                               {"customer_id": "C3", "manager_id": "M2"}])
    d = dt.date
    _insert(con, "accounts", [
        {"account_id": "a1", "customer_id": "C1", "product_id": "P", "opened_date": d(2026, 1, 10)},
        {"account_id": "a2", "customer_id": "C1", "product_id": "P", "opened_date": d(2025, 12, 1),
         "closed_date": d(2026, 2, 15)},
        {"account_id": "a3", "customer_id": "C2", "product_id": "P", "opened_date": d(2026, 2, 3)},
        {"account_id": "a4", "customer_id": "C3", "product_id": "P", "opened_date": d(2025, 6, 1)}])
    ts = dt.datetime
    _insert(con, "transactions", [
        {"transaction_id": "t1", "customer_id": "C1", "account_id": "a1", "transaction_date": ts(2026, 1, 20),
         "amount": -10.0, "category": "card"},
        {"transaction_id": "t2", "customer_id": "C1", "account_id": "a1", "transaction_date": ts(2026, 2, 5),
         "amount": -2.0, "category": "fee"},  # the bank's own booking: not the client using the product
        {"transaction_id": "t3", "customer_id": "C2", "account_id": "a3", "transaction_date": ts(2026, 2, 10),
         "amount": 500.0, "category": "salary"},
        {"transaction_id": "t4", "customer_id": "C3", "account_id": "a4", "transaction_date": ts(2026, 3, 31, 12),
         "amount": -40.0, "category": "card"}])
    _insert(con, "labels", [{"customer_id": "C1", "label": "churned", "value": 1, "label_date": d(2026, 2, 20)}])
    yield con
    con.close()


def test_the_book_month_by_month_counted_by_hand(small_bank):
    first, last = W.periods(small_bank, 3)
    assert (first, last) == (dt.date(2026, 1, 1), dt.date(2026, 3, 1))  # March is complete: its last day is there
    book = W.book(small_bank, first, last, FILTER).set_index(["level", "entity_id", "period"])
    cols = ["clients", "products_held", "products_active", "new_products", "closed_products", "active_clients",
            "churned_clients", "transactions"]
    jan, feb, mar = (pd.Timestamp(2026, m, 1) for m in (1, 2, 3))
    assert book.loc[("manager", "M1", jan), cols].tolist() == [1, 2, 1, 1, 0, 1, 0, 1]
    # a2 closed, a3 opened and used; a1's February booking is a fee; C1 left in February
    assert book.loc[("manager", "M1", feb), cols].tolist() == [2, 2, 1, 1, 1, 1, 1, 1]
    assert book.loc[("manager", "M2", mar), cols].tolist() == [1, 1, 1, 0, 0, 1, 0, 1]
    assert book.loc[("agency", "A1", mar), cols].tolist() == [3, 3, 1, 0, 0, 1, 0, 1]
    assert book.loc[("manager", "M1", jan), "agency_id"] == "A1"


def test_the_book_is_the_same_with_duckdbs_pre_aggregation_off_and_the_connection_is_left_as_it_was(small_bank):
    """W.book switches off DuckDB's partial aggregate pushdown (the money flows pre-aggregated per customer and month
    before the join with the books: most of the step's time and memory at 1M customers), for its query only."""
    first, last = W.periods(small_bank, 3)
    small_bank.execute("SET disabled_optimizers = 'top_n'")
    book = W.book(small_bank, first, last, FILTER)
    assert small_bank.execute("SELECT current_setting('disabled_optimizers')").fetchone() == ("top_n",)
    small_bank.execute("SET disabled_optimizers = ''")
    plain = small_bank.execute(sql("book_performance").replace("{activity}", FILTER), [first, last]).df()
    pd.testing.assert_frame_equal(book, plain, check_exact=True)
    assert len(book) == 9 and book["transactions"].sum() > 0


def test_no_transactions_no_book():
    with duckdb.connect() as con:
        ensure_all_raw_tables(con)
        assert W.periods(con, 3) is None
        con.register("_frame", pd.DataFrame({"a": [1]}))  # nothing left unfinished on the connection


def test_objectives_are_read_by_month_within_the_books_months(small_bank):
    _insert(small_bank, "targets", [
        {"level": "manager", "entity_id": "M1", "period": dt.date(2026, 2, 1), "objective": "new_products",
         "target": 4.0, "achieved": 3.0},
        {"level": "agency", "entity_id": "A1", "period": dt.date(2026, 3, 15), "objective": "clients",
         "target": 3.0, "achieved": 3.0},  # dated mid-month: counts for March
        {"level": "manager", "entity_id": "M1", "period": dt.date(2025, 12, 1), "objective": "new_products",
         "target": 4.0, "achieved": 4.0}])  # before the book's first month: not read
    targets = W.targets(small_bank, *W.periods(small_bank, 3))
    assert sorted(zip(targets["entity_id"], targets["period"].dt.month, strict=True)) == [("A1", 3), ("M1", 2)]
    book = W.book(small_bank, *W.periods(small_bank, 3), FILTER)
    scored = P.period_scores(book, BookScoreParams(), targets).set_index(["level", "entity_id", "period"])
    assert scored.loc[("manager", "M1", pd.Timestamp(2026, 2, 1)), "score"] == pytest.approx(75.0)
    assert scored.loc[("agency", "A1", pd.Timestamp(2026, 3, 1)), "score_source"] == "objectives"
    assert scored.loc[("manager", "M2", pd.Timestamp(2026, 3, 1)), "score_source"] == "book composite"


def _book(entities: int, periods: int, effect: float, seed: int = 0) -> pd.DataFrame:
    """A network whose managers differ lastingly by `effect` (plus month-to-month noise)."""
    rng = np.random.default_rng(seed)
    quality = rng.standard_normal(entities)
    rows = []
    for e in range(entities):
        for m in range(periods):
            held = 300
            p = 1 / (1 + np.exp(-(-0.5 + effect * quality[e] + 0.3 * rng.standard_normal())))
            rows.append({"level": "manager", "entity_id": f"M{e:03d}", "agency_id": "A1",
                         "period": pd.Timestamp(2025, 1, 1) + pd.DateOffset(months=m), "clients": 100,
                         "products_held": held, "products_active": rng.binomial(held, p),
                         "new_products": rng.poisson(max(4 + 2 * effect * quality[e], 0)),
                         "closed_products": rng.poisson(3), "active_clients": 80, "churned_clients": 1,
                         "transactions": 900, "net_flow": 0.0})
    return pd.DataFrame(rows)


def test_the_composite_is_a_t_score_within_each_period_and_objectives_replace_it():
    scored = P.period_scores(_book(40, 4, 0.5), BookScoreParams())
    by_period = scored.groupby("period")["score"]
    assert np.allclose(by_period.mean(), 50) and np.allclose(by_period.std(), 10)
    assert (scored["score_source"] == "book composite").all()
    targets = pd.DataFrame([
        {"level": "manager", "entity_id": "M001", "period": pd.Timestamp(2025, 2, 1), "objective": "new_products",
         "target": 10.0, "achieved": 8.0},
        {"level": "manager", "entity_id": "M001", "period": pd.Timestamp(2025, 2, 1), "objective": "balances",
         "target": 100.0, "achieved": 130.0},  # beaten: counts as 100% (achievement_cap 1)
        {"level": "manager", "entity_id": "M002", "period": pd.Timestamp(2025, 2, 1), "objective": "balances",
         "target": 100.0, "achieved": None}])  # open: the composite stays
    with_targets = P.period_scores(_book(40, 4, 0.5), BookScoreParams(), targets).set_index(["entity_id", "period"])
    row = with_targets.loc[("M001", pd.Timestamp(2025, 2, 1))]
    assert row["score"] == pytest.approx(90.0) and row["score_source"] == "objectives"
    assert with_targets.loc[("M002", pd.Timestamp(2025, 2, 1)), "score_source"] == "book composite"


def test_features_look_back_only_and_within_one_entity():
    f = P.features(P.period_scores(_book(3, 5, 0.5), BookScoreParams()))
    one = f[f["entity_id"] == "M001"].reset_index(drop=True)
    assert np.isnan(one.loc[0, "score_lag_1"]) and one.loc[1, "score_lag_1"] == one.loc[0, "score"]
    assert one.loc[2, "score_mean_all"] == pytest.approx(one.loc[:2, "score"].mean())
    assert one.loc[3, "next_score"] == one.loc[4, "score"] and np.isnan(one.loc[4, "next_score"])


def test_a_lasting_effect_is_learnt_and_judged_against_carrying_the_score_forward():
    monthly = BookScoreParams(window_periods=1)  # each month on its own: no overlap to carry a score forward
    frame = P.features(P.period_scores(_book(120, 12, 0.6), monthly))
    model = P.train_performance(frame, "manager", PerformanceParams(), min_entities=20)
    m = model.metrics
    assert m["rmse"] < 8 and m["skill"] > 0.1 and m["r2"] > 0.5
    assert m["holdout_rows"] == 2 * 120 and m["cv_folds"] == 5 and 0 < m["cv_rmse"] < 8
    # a network of pure month-to-month noise: no better than predicting its average for everyone (an RMSE of 10
    # on the T-score scale), which the managers' gate (rmse <= 10) turns away
    noise = P.train_performance(P.features(P.period_scores(_book(120, 12, 0.0), monthly)), "manager",
                                PerformanceParams(), min_entities=20)
    assert noise.metrics["rmse"] > 9.5 and noise.metrics["r2"] < 0.1
    # the rows' order never changes the fit (the warehouse may hand them over in any order)
    shuffled = P.train_performance(frame.sample(frac=1, random_state=3), "manager", PerformanceParams(), min_entities=20)
    assert shuffled.metrics == m
    with pytest.raises(NotEnoughData, match="at least 20 are needed"):
        P.train_performance(frame[frame["entity_id"] < "M010"], "manager", PerformanceParams(), min_entities=20)
    with pytest.raises(NotEnoughData, match="periods of book history"):
        P.train_performance(frame[frame["period"] < pd.Timestamp(2025, 3, 1)], "manager", PerformanceParams(),
                            min_entities=20)


def test_scores_rank_explain_and_recommend_support_for_the_bottom_decile(tmp_path):
    frame = P.features(P.period_scores(_book(50, 10, 0.6), BookScoreParams()))
    model = P.train_performance(frame, "manager", PerformanceParams(), min_entities=20)
    latest = frame[frame["period"] == frame["period"].max()].reset_index(drop=True)
    support = {"activity": "reactivate dormant products", "default": "coaching"}
    scored = model.score(latest, support, bottom_share=0.1)
    assert len(scored) == 50 and scored["performance_rank"].tolist() == list(range(1, 51))
    assert scored["predicted_score"].is_monotonic_decreasing
    assert scored["percentile"].iloc[0] == 100 and scored["percentile"].iloc[-1] == 0
    bottom = scored[scored["percentile"] <= 10]
    assert len(bottom) == 5 and bottom["support"].isin(support.values()).all()
    assert scored.loc[scored["percentile"] > 10, "support"].isna().all()
    # the drivers are the largest contributions, strongest first, and they add up to the predicted change
    effects = scored[["driver_1_effect", "driver_2_effect", "driver_3_effect"]].abs()
    assert (effects["driver_1_effect"] >= effects["driver_2_effect"]).all()
    again = P.PerformanceModel.load(model.save(tmp_path, 1))
    assert np.allclose(again.predict(latest), model.predict(latest))
