"""Fraud features in DuckDB (warehouse/fraud.py): exact on a hand-made history, and never informed by a later
transaction."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from warehouse.fraud import build_transaction_features
from warehouse.schema import ensure_all_raw_tables

COLUMNS = ("transaction_id", "customer_id", "transaction_date", "amount", "channel")


def load(con, rows, extra: str | None = None):
    ensure_all_raw_tables(con)
    if extra:
        con.execute(f"ALTER TABLE raw.transactions ADD COLUMN {extra} DOUBLE")
    for i, row in enumerate(rows):
        con.execute(f"INSERT INTO raw.transactions ({', '.join(COLUMNS)}, _source_file, _source_row, _ingested_at, "
                    f"_delivery_id{', ' + extra if extra else ''}) VALUES (?, ?, ?, ?, ?, 'f.csv', ?, now(), 'd1'"
                    f"{', ?' if extra else ''})", [*row[:5], i + 2, *row[5:]])


def features(con) -> dict[str, dict]:
    cur = con.execute("SELECT * FROM features.transaction_features")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


HISTORY = [  # customer a: three card payments, then a burst of small ones online at night, then a big transfer
    ("t1", "a", datetime(2026, 11, 1, 12), -40.0, "pos"),
    ("t2", "a", datetime(2026, 11, 2, 12), -60.0, "pos"),
    ("t3", "a", datetime(2026, 11, 3, 12), -50.0, "pos"),
    ("t4", "a", datetime(2026, 11, 4, 2, 0), -1.0, "online"),
    ("t5", "a", datetime(2026, 11, 4, 2, 10), -1.0, "online"),
    ("t6", "a", datetime(2026, 11, 4, 2, 10), -2.0, "online"),  # booked at the same moment as t5
    ("t7", "a", datetime(2026, 11, 4, 3, 30), -2000.0, "mobile"),
    ("u1", "b", datetime(2026, 11, 4, 2, 5), 300.0, "branch"),  # another customer: never counted for a
]


def test_each_transaction_against_its_customers_earlier_ones(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, HISTORY)
        assert build_transaction_features(con, since=datetime(2026, 11, 4)) == 5  # the day's; t1-t3 are history
        f = features(con)
    assert list(f) == ["t4", "u1", "t5", "t6", "t7"]  # in booking order
    assert [f[t]["txn_before"] for t in ("t4", "t5", "t6", "t7")] == [3, 4, 5, 6]
    assert f["t4"]["amount_vs_usual"] == pytest.approx(1 / 50) and f["t4"]["new_channel"] == 1
    assert f["t5"]["new_channel"] == 0 and f["t5"]["seconds_since_last"] == pytest.approx(600)
    # t5 and t6 share a timestamp: t6 counts t5 (before it by id), t5 does not count t6
    assert [f[t]["txn_last_hour"] for t in ("t4", "t5", "t6", "t7")] == [0, 1, 2, 0]
    # the last 24 hours reach back to t3 (14 hours before t4)
    assert [f[t]["txn_last_day"] for t in ("t4", "t5", "t6", "t7")] == [1, 2, 3, 4]
    assert f["t7"]["amount_last_day"] == pytest.approx(54.0) and f["t7"]["new_channel"] == 1
    assert f["t7"]["amount_vs_usual"] == pytest.approx(2000 / (154 / 6))
    assert (f["t7"]["hour"], f["t7"]["day_of_week"], f["t7"]["is_debit"], f["t7"]["amount"]) == (3, 3, 1, 2000.0)
    assert f["u1"]["txn_before"] == 0 and f["u1"]["amount_vs_usual"] is None and f["u1"]["new_channel"] == 0


def test_no_feature_is_informed_by_a_later_transaction(tmp_path):
    """The features of a day's transactions are the same whether or not the following days are in the table."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, HISTORY)
        build_transaction_features(con, since=datetime(2026, 11, 1))
        everything = features(con)
        con.execute("DELETE FROM raw.transactions WHERE transaction_id IN ('t6', 't7')")
        build_transaction_features(con, since=datetime(2026, 11, 1))
        without_later = features(con)
    assert without_later == {t: everything[t] for t in without_later} and len(without_later) == 6


def test_history_is_read_only_as_far_back_as_asked(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, HISTORY)
        build_transaction_features(con, since=datetime(2026, 11, 4), history_days=1)
        f = features(con)
    assert f["t4"]["txn_before"] == 1 and f["t4"]["amount_vs_usual"] == pytest.approx(1 / 50)  # t3 only


def test_the_sources_own_columns_come_along(tmp_path):
    """A card processor's signals (the ULB set's V1..V28) are features as delivered."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, [(*row, float(i)) for i, row in enumerate(HISTORY)], extra="v1")
        build_transaction_features(con, since=datetime(2026, 11, 4))
        f = features(con)
    assert f["t7"]["v1"] == 6.0 and "_source_row" not in f["t7"] and "balance_after" not in f["t7"]


def test_history_older_than_a_day_counts_as_well(tmp_path):
    """History beyond the day the hour and day counts reach is folded per customer: still counted, averaged,
    and remembered for its channels and its last time."""
    rows = [("x1", "x", datetime(2026, 10, 20, 9), -10.0, "mobile"), ("x2", "x", datetime(2026, 10, 21, 9), -20.0, "atm"),
            ("x3", "x", datetime(2026, 11, 4, 9), -45.0, "mobile"), ("x4", "x", datetime(2026, 11, 4, 9), -5.0, "pos")]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, rows)
        build_transaction_features(con, since=datetime(2026, 11, 4))
        f = features(con)
    assert (f["x3"]["txn_before"], f["x3"]["amount_vs_usual"], f["x3"]["new_channel"]) == (2, 3.0, 0)
    assert f["x3"]["seconds_since_last"] == 14 * 86_400 and f["x3"]["txn_last_day"] == 0
    # booked at the same moment as x3, after it by id: x3 is before it, 0 seconds before
    assert (f["x4"]["txn_before"], f["x4"]["seconds_since_last"], f["x4"]["new_channel"]) == (3, 0, 1)
    assert f["x4"]["amount_vs_usual"] == pytest.approx(5 / 25)


def test_a_counterparty_never_dealt_with_before_is_new(tmp_path):
    """Payees seen in the folded history, earlier the same day, or never: only the first deal with a payee is new;
    without counterparties in the source the feature is null (not a constant 0 a model would learn from)."""
    rows = [("p1", "p", datetime(2026, 10, 20, 9), -10.0, "mobile"), ("p2", "p", datetime(2026, 11, 4, 8), -20.0, "mobile"),
            ("p3", "p", datetime(2026, 11, 4, 9), -900.0, "mobile"), ("p4", "p", datetime(2026, 11, 4, 10), -800.0, "mobile"),
            ("q1", "q", datetime(2026, 11, 4, 9), -5.0, "pos")]
    payees = {"p1": "landlord", "p2": "grocer", "p3": "mule-account", "p4": "mule-account", "p9": None}
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, rows)
        for t, payee in payees.items():
            con.execute("UPDATE raw.transactions SET counterparty = ? WHERE transaction_id = ?", [payee, t])
        build_transaction_features(con, since=datetime(2026, 11, 4))
        f = features(con)
    assert [f[t]["new_counterparty"] for t in ("p2", "p3", "p4", "q1")] == [1, 1, 0, None]
    assert "counterparty" not in f["p3"]  # an id, not a feature: only whether it is new
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("UPDATE raw.transactions SET counterparty = 'landlord' WHERE transaction_id = 'p2'")
        build_transaction_features(con, since=datetime(2026, 11, 4))
        assert features(con)["p2"]["new_counterparty"] == 0  # paid before, in the folded history


def test_a_training_sample_keeps_every_defrauded_customer_and_weighs_the_others(tmp_path):
    """Above max_rows, customers are sampled by a hash of their id: a sampled customer's rows are exactly those
    of the full build, each defrauded customer is kept (weight 1), the others weigh 1 / the share read."""
    from warehouse.fraud import training_frame

    rows = [(f"t{c}-{i}", f"c{c}", datetime(2026, 11, 1 + i % 5, 8 + c % 12, i), -10.0 - i, "pos")
            for c in range(400) for i in range(10)]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load(con, [(*r, None) for r in rows], extra="v1")
        con.execute("ALTER TABLE raw.transactions ADD COLUMN memo VARCHAR")  # a bank's free-text extra column
        con.execute("UPDATE raw.transactions SET fraud = customer_id IN ('c7', 'c300') AND transaction_id LIKE '%-9', "
                    "v1 = amount, memo = 'rent ' || customer_id")
        full, share = training_frame(con, datetime(2026, 11, 2), datetime(2026, 11, 6), 90, max_rows=10_000)
        sample, part = training_frame(con, datetime(2026, 11, 2), datetime(2026, 11, 6), 90, max_rows=800)
    assert share == 1.0 and len(full) == 3_200 and set(full["sample_weight"]) == {1.0}
    assert part == 800 / 3_200
    kept = sample.groupby("customer_id")["sample_weight"].first()
    assert kept[["c7", "c300"]].tolist() == [1.0, 1.0] and sample["fraud"].sum() == 2
    others = kept.drop(["c7", "c300"])
    assert set(others) == {4.0} and 40 <= len(others) <= 160  # about a quarter of 398 customers
    cols = [c for c in full.columns if c != "sample_weight"]
    assert "memo" not in full.columns and "v1" in full.columns  # free text is never an input; a signal is
    same = full[full["customer_id"].isin(kept.index)][cols].reset_index(drop=True)
    assert same.equals(sample[cols].reset_index(drop=True))
