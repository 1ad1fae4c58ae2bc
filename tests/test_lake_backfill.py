"""Issue 14: two past snapshot dates backfilled in the lake (job lake's daily partitions, a run each) after later
deliveries changed the bank. Each date's feature tables equal those of a warehouse that only ever received the
deliveries up to that date: no later transaction, customer or correction leaks into a past snapshot. The
serving file keeps the newest snapshot's scores current when a past date's scores are published."""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from assets.lake import KEY, LakeResource, build_lake
from assets.models import SPECS
from assets.resources import Settings, Source, Warehouse, WarehouseReader
from tests.lakes import assert_same, frame, new_lake
from warehouse import features as F
from warehouse import shard_features as S
from warehouse import shard_scores as SS
from warehouse.db import Home, connect
from warehouse.ingest import ingest_table
from warehouse.lake import Lake
from warehouse.sources import load_source
from warehouse.synthetic import generate_bank

D1, D2, D3 = date(2026, 3, 31), date(2026, 5, 31), date(2026, 9, 30)
GLOBS = {"customers": "customers*.csv", "agencies": "agencies.csv", "managers": "managers.csv",
         "products": "products.csv", "accounts": "accounts*.csv", "loans": "loans*.csv", "labels": "labels*.csv",
         "transactions": "transactions_*.csv"}


def _deliver(landing, name: str, rows: pd.DataFrame, day: date) -> None:
    path = landing / name
    rows.to_csv(path, index=False)
    at = datetime.combine(day, datetime.min.time()).replace(hour=23).timestamp()  # the bank's export that evening
    os.utime(path, (at, at))


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """Three days of deliveries into one warehouse; after days 1 and 2 a copy of it: what the bank had sent then.

    day 1  everything up to D1, but 20 customers who are not delivered yet
    day 2  those 20 customers and their rows; 15 customers' incomes changed; the transactions up to D2, some in a
           channel and a spending category new that month (pivot columns D1 never had)
    day 3  the transactions up to D3; 15 other incomes changed; accounts and loans opened since"""
    root = tmp_path_factory.mktemp("backfill")
    generate_bank(root / "gen", customers=600, seed=7)
    read = {t: pd.read_csv(root / "gen" / f"{t}.csv", dtype=str, keep_default_na=False)
            for t in ("customers", "agencies", "managers", "products", "accounts", "loans", "labels", "transactions")}
    customers, tx = read["customers"], read["transactions"]
    late = set(customers["customer_id"].iloc[-20:])
    booked = pd.to_datetime(tx["transaction_date"]).dt.date

    def known(t: str, day: date, ids=None) -> pd.DataFrame:
        rows = read[t]
        opened = {"accounts": "opened_date", "loans": "start_date"}.get(t)
        if opened:
            rows = rows[pd.to_datetime(rows[opened]).dt.date <= day]
        return rows if ids is None else rows[rows["customer_id"].isin(ids)]

    landing, db = root / "landing", root / "warehouse.duckdb"
    landing.mkdir()
    cfg = root / "bank.yaml"
    cfg.write_text(yaml.safe_dump({"name": "backfill", "delivery": {"settle_seconds": 0},
                                   "tables": {t: {"path": g} for t, g in GLOBS.items()}}))
    source = load_source(cfg)

    def ingest(copy_to=None):
        with connect(db) as con:
            for t in GLOBS:
                ingest_table(con, source, t, landing, run_id="t", log=lambda m: None)
        if copy_to:
            shutil.copy(db, root / copy_to)
            return root / copy_to

    early = customers[~customers["customer_id"].isin(late)]
    for t in ("agencies", "managers", "products"):
        _deliver(landing, f"{t}.csv", read[t], D1)
    _deliver(landing, "customers.csv", early, D1)
    _deliver(landing, "accounts.csv", known("accounts", D1, early["customer_id"]), D1)
    _deliver(landing, "loans.csv", known("loans", D1, early["customer_id"]), D1)
    _deliver(landing, "labels.csv", known("labels", D1, early["customer_id"]), D1)
    _deliver(landing, "transactions_1.csv", tx[(booked <= D1) & ~tx["customer_id"].isin(late)], D1)
    day1 = ingest("day1.duckdb")

    day2 = customers.copy()
    changed = day2["customer_id"].iloc[:15]
    day2.loc[day2["customer_id"].isin(changed), "income"] = "250000"
    _deliver(landing, "customers_2.csv", day2, D2)
    _deliver(landing, "accounts_2.csv", known("accounts", D2), D2)
    _deliver(landing, "loans_2.csv", known("loans", D2), D2)
    _deliver(landing, "labels_2.csv", known("labels", D2, late), D2)
    second = tx[((booked > D1) | tx["customer_id"].isin(late)) & (booked <= D2)].copy()
    new = second.index[(booked[second.index] > D1) & second["amount"].str.startswith("-")][::10]
    second.loc[new, ["channel", "category"]] = ["open_banking", "crypto"]
    _deliver(landing, "transactions_2.csv", second, D2)
    for name in ("customers.csv", "accounts.csv", "loans.csv"):
        (landing / name).unlink()  # the bank's newer snapshot replaces them
    day2_db = ingest("day2.duckdb")

    day3 = day2.copy()
    day3.loc[day3["customer_id"].isin(customers["customer_id"].iloc[15:30]), "income"] = "1"
    _deliver(landing, "customers_3.csv", day3, D3)
    _deliver(landing, "accounts_3.csv", known("accounts", D3), D3)
    _deliver(landing, "loans_3.csv", known("loans", D3), D3)
    _deliver(landing, "transactions_3.csv", tx[booked > D2], D3)
    ingest()
    return {"root": root, "db": db, "cfg": cfg, "controls": {D1: day1, D2: day2_db}}


def test_two_past_snapshots_backfilled_use_only_the_data_delivered_by_then(bank, postgres_url, tmp_path):
    root = bank["root"]
    with connect(bank["db"], read_only=True) as con:  # the warehouse holds the later data the backfill must not see
        assert con.execute("SELECT max(transaction_date)::DATE FROM raw.transactions").fetchone()[0] > D2

    home = tmp_path / "home"
    Home.resolve(home).warehouse.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(bank["db"], Home.resolve(home).warehouse)
    location = new_lake(postgres_url, "lake_backfill", tmp_path / "lake")
    assets, _ = build_lake(2, "2026-01-01", SPECS, dg.in_process_executor)
    resources = {"warehouse": Warehouse(home=str(home)), "warehouse_reader": WarehouseReader(home=str(home)),
                 "lake": LakeResource(catalog=location.catalog, location=location.warehouse),
                 "settings": Settings(home=str(home)), "source": Source(source=str(bank["cfg"]))}
    for snap in (D1, D2):  # D2 brings pivot columns D1's lake rows lack
        result = dg.materialize(assets, selection=[KEY], partition_key=snap.isoformat(), resources=resources)
        assert result.success

    lake, seen = Lake(location), {}
    for snap, control in bank["controls"].items():
        with connect(control) as con:  # what the bank had delivered by then, built the embedded way
            F.build_all(con, snap)
            expected = {t: frame(con, t) for t in S.FEATURE_TABLES}
        with connect(root / f"read_{snap}.duckdb") as con:
            S.load_features(con, lake, None, snap)
            for t in S.FEATURE_TABLES:
                got = frame(con, t)
                # pivot columns come in the order they were first built (features.pivots): a build history, not data
                assert set(got.columns) == set(expected[t].columns), t
                assert_same(expected[t], got[expected[t].columns], t)
            seen[snap] = con.execute("SELECT count(*), sum(txn_count_365d), max(income) FROM "
                                     "features.customer_features").fetchone()
            seen[snap, "new"] = {c for c in frame(con, "customer_features").columns if "crypto" in c or "open_b" in c}
    # the two dates differ in what the deliveries changed: the 20 late customers (and those who joined since),
    # more transactions, new incomes
    assert seen[D2][0] >= seen[D1][0] + 20 and seen[D1][1] < seen[D2][1], seen
    assert seen[D1][2] < 250_000 <= seen[D2][2], seen
    assert not seen[D1, "new"] and {"channel_share_open_banking", "category_spend_share_crypto"} <= seen[D2, "new"]


def test_a_published_past_snapshot_joins_the_history_and_the_newest_stays_current(postgres_url, tmp_path):
    lake = Lake(new_lake(postgres_url, "lake_publish_dates", tmp_path / "lake"))
    for snap, score in ((date(2026, 6, 30), 0.7), (date(2026, 3, 31), 0.2)):  # the past date written last
        rows = pa.table({"customer_id": ["C1", "C2"], "churn_probability": [score, score],
                         "snapshot_date": [snap, snap]})
        lake.write_part(SS.table("churn"), rows, shard=0, snapshot=snap)
    pins = lake.pin([SS.table("churn")])
    with connect(tmp_path / "w.duckdb") as con:
        con.execute("ATTACH ':memory:' AS staged")
        counts, dates = SS.stage_publish(con, "staged", lake, ["churn"], pins)
        current = con.execute("SELECT DISTINCT snapshot_date, churn_probability FROM staged.scores.churn").fetchall()
        history = con.execute("SELECT count(*) FROM staged.scores.churn_history").fetchone()[0]
    assert dates == {"churn": date(2026, 6, 30)} and current == [(date(2026, 6, 30), 0.7)]
    assert history == 4 and counts == {"scores.churn": 2, "scores.churn_history": 4}
