"""The synthetic bank: contract shape, keys, determinism, label signal and the xlsx variant."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from python_calamine import CalamineWorkbook

from warehouse import synthetic
from warehouse.contract import TABLES as CONTRACT

# every contract table but the optional objectives (raw.targets): a bank's own, not something to invent
TABLES = {name: table for name, table in CONTRACT.items() if name != "targets"}

N = 2_000
SEED = 7
SNAPSHOT = "DATE '2026-07-02'"  # end_date 2026-09-30 minus 90 days
# contract columns the generator leaves out on purpose (retail-style item counts mean nothing for a bank; fraud
# labels and counterparties only with a fraud rate: a bank generated without one is the same byte for byte)
NOT_WRITTEN = {("transactions", "quantity"), ("transactions", "counterparty"), ("transactions", "fraud")}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank")
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "CHUNK", 800)  # several chunks, so ids must stay unique across them
        counts = synthetic.generate_bank(out, customers=N, seed=SEED, progress=messages.append)
    return out, counts, messages


@pytest.fixture(scope="module")
def db(bank):
    out, _, _ = bank
    con = duckdb.connect()
    for name in TABLES:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{out / name}.csv', header = true)")
    return con


def one(con, sql):
    return con.execute(sql).fetchone()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_one_file_per_table_with_the_returned_row_counts(bank, db):
    out, counts, messages = bank
    # one file per table, and the ready marker written after them (docs/deliveries.md)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{t}.csv" for t in TABLES), "_SUCCESS"])
    assert (out / "_SUCCESS").stat().st_mtime_ns >= max((out / f"{t}.csv").stat().st_mtime_ns for t in TABLES)
    assert set(counts) == set(TABLES)
    assert counts["customers"] == N
    for name in TABLES:
        assert one(db, f"SELECT count(*) FROM {name}")[0] == counts[name], name
    assert len(messages) == 3 and messages[-1].startswith("chunk 3/3")


def test_contract_columns_and_formats(bank, db):
    out, _, _ = bank
    for name, table in TABLES.items():
        with open(out / f"{name}.csv", encoding="utf-8", newline="") as f:
            header = next(csv.reader(f))
        missing = {c.name for c in table.columns} - set(header)
        assert {(name, c) for c in missing} <= NOT_WRITTEN, (name, missing)
        assert header[: len(synthetic.COLUMNS[name])] == list(synthetic.COLUMNS[name])
    extra = {"occupation", "marital_status", "dependents", "digital_user", "complaints_12m"}
    assert extra <= set((out / "customers.csv").read_text(encoding="utf-8").splitlines()[0].split(","))
    line = (out / "transactions.csv").read_text(encoding="utf-8").splitlines()[1]
    assert re.match(r"T\d{10},C\d{7},A\d{9},\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,-?\d+(\.\d{1,2})?,", line)
    types = dict(db.execute("SELECT column_name, column_type FROM (DESCRIBE customers)").fetchall())
    assert types["birth_date"] == types["joined_date"] == "DATE"
    types = dict(db.execute("SELECT column_name, column_type FROM (DESCRIBE transactions)").fetchall())
    assert types["transaction_date"] == "TIMESTAMP" and types["amount"] == "DOUBLE"
    # values inside the contract's bounds and allowed sets
    assert one(db, "SELECT min(age) >= 17 AND max(age) <= 120 FROM customers")[0]
    assert one(db, "SELECT min(credit_score) >= 300 AND max(credit_score) <= 850 FROM customers")[0]
    assert one(db, "SELECT bool_and(gender IN ('F', 'M')) AND min(income) > 0 FROM customers")[0]
    assert one(db, "SELECT min(interest_rate) > 0 AND max(interest_rate) < 100 FROM loans")[0]
    assert one(db, "SELECT count(DISTINCT segment) FROM customers")[0] == 3
    cats = {r[0] for r in db.execute("SELECT DISTINCT category FROM transactions").fetchall()}
    assert cats == set(synthetic.TX_CATEGORIES)
    assert one(db, "SELECT count(*) FROM agencies")[0] == 40
    assert one(db, "SELECT count(DISTINCT category) FROM products")[0] == 6


@pytest.mark.parametrize("table, key", [
    ("customers", "customer_id"), ("agencies", "agency_id"), ("managers", "manager_id"),
    ("products", "product_id"), ("accounts", "account_id"), ("transactions", "transaction_id"),
    ("loans", "loan_id"), ("labels", "customer_id || '/' || label"),
])
def test_keys_are_unique_and_present(db, table, key):
    rows, distinct, nulls = one(db, f"SELECT count(*), count(DISTINCT {key}), count(*) - count({key}) FROM {table}")
    assert rows == distinct and nulls == 0


@pytest.mark.parametrize("child, column, parent, key", [
    ("accounts", "customer_id", "customers", "customer_id"),
    ("transactions", "customer_id", "customers", "customer_id"),
    ("loans", "customer_id", "customers", "customer_id"),
    ("labels", "customer_id", "customers", "customer_id"),
    ("transactions", "account_id", "accounts", "account_id"),
    ("loans", "account_id", "accounts", "account_id"),
    ("accounts", "product_id", "products", "product_id"),
    ("customers", "agency_id", "agencies", "agency_id"),
    ("customers", "manager_id", "managers", "manager_id"),
    ("managers", "agency_id", "agencies", "agency_id"),
])
def test_foreign_keys(db, child, column, parent, key):
    orphans = one(db, f"SELECT count(*) FROM {child} WHERE {column} NOT IN (SELECT {key} FROM {parent})")[0]
    assert orphans == 0
    if (child, column) == ("transactions", "account_id"):  # and the account belongs to the same customer
        assert one(db, "SELECT count(*) FROM transactions t JOIN accounts a USING (account_id) "
                       "WHERE a.customer_id <> t.customer_id")[0] == 0


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthetic.generate_bank(tmp_path / name, customers=300, seed=seed)
    a, b, c = (digests(tmp_path / x) for x in "abc")
    assert a == b
    assert a["transactions.csv"] != c["transactions.csv"] and a["customers.csv"] != c["customers.csv"]
    # the bank's network is the same whatever the seed: seeds draw customers, as next month's export would
    assert a["agencies.csv"] == c["agencies.csv"] and a["managers.csv"] == c["managers.csv"]


def test_fraud_is_planted_from_its_own_generator(tmp_path):
    """fraud_rate 0 writes the bank byte for byte as before; a rate adds the fraud rows and their `fraud` column
    to transactions, and the balances they leave on accounts; nothing else (customers, loans, labels)."""
    for name, rate in (("plain", None), ("zero", 0.0), ("fraud", 0.05)):
        synthetic.generate_bank(tmp_path / name, customers=300, seed=3,
                                **({} if rate is None else {"fraud_rate": rate}))
    plain, zero, fraud = (digests(tmp_path / x) for x in ("plain", "zero", "fraud"))
    assert zero == plain
    assert {f for f in plain if plain[f] != fraud[f]} == {"transactions.csv", "accounts.csv"}
    header = (tmp_path / "fraud" / "transactions.csv").open().readline().strip().split(",")
    assert header[-1] == "fraud" and "fraud" not in (tmp_path / "plain" / "transactions.csv").open().readline()
    with pytest.raises(ValueError, match="fraud_rate must be between 0 and 1"):
        synthetic.generate_bank(tmp_path / "bad", customers=1, fraud_rate=2)


def test_a_manager_effect_moves_only_the_clients_and_zero_writes_the_bank_as_before(tmp_path):
    """manager_effect 0 writes the bank byte for byte as without it; 1 makes a good manager's clients busier and more
    loyal (so manager and agency performance have something lasting to find), the network itself unchanged."""
    for name, effect in (("plain", None), ("zero", 0.0), ("effect", 1.0)):
        synthetic.generate_bank(tmp_path / name, customers=2_000, seed=3,
                                **({} if effect is None else {"manager_effect": effect}))
    plain, zero, effect = (digests(tmp_path / x) for x in ("plain", "zero", "effect"))
    assert zero == plain
    assert all(plain[f] == effect[f] for f in ("agencies.csv", "managers.csv", "products.csv"))
    assert plain["transactions.csv"] != effect["transactions.csv"]
    quality = synthetic._Reference(np.random.default_rng([0, 1 << 40]), synthetic._Calendar("2026-09-30")).manager_quality
    best = {f"M{i + 1:04d}" for i in np.argsort(-quality)[:60]}
    worst = {f"M{i + 1:04d}" for i in np.argsort(quality)[:60]}
    customers = pd.read_csv(tmp_path / "effect" / "customers.csv", usecols=["customer_id", "manager_id"])
    per_client = pd.read_csv(tmp_path / "effect" / "transactions.csv", usecols=["customer_id"]).merge(
        customers, on="customer_id").groupby("manager_id").size() / customers.groupby("manager_id").size()
    assert per_client[per_client.index.isin(best)].mean() > 1.3 * per_client[per_client.index.isin(worst)].mean()
    with pytest.raises(ValueError, match="manager_effect must be >= 0"):
        synthetic.generate_bank(tmp_path / "bad", customers=1, manager_effect=-1)


def test_transaction_history_volume_and_balances(db):
    first, last = one(db, "SELECT min(transaction_date), max(transaction_date) FROM transactions")
    assert first >= dt.datetime(2025, 7, 1) and last < dt.datetime(2026, 10, 1)
    per_year = one(db, "SELECT count(*) / (SELECT count(*) FROM customers) FROM transactions "
                       "WHERE transaction_date >= DATE '2025-10-01'")[0]
    assert 40 <= per_year <= 60
    # balance_after is a true running balance and ends at the account's balance
    assert one(db, """
        WITH x AS (SELECT amount, balance_after,
                          lag(balance_after) OVER (PARTITION BY account_id ORDER BY transaction_id) AS prev
                   FROM transactions)
        SELECT count(*) FROM x WHERE prev IS NOT NULL AND abs(balance_after - prev - amount) > 0.005""")[0] == 0
    assert one(db, """
        WITH last AS (SELECT account_id, arg_max(balance_after, transaction_id) AS b FROM transactions GROUP BY 1)
        SELECT count(*) FROM accounts JOIN last USING (account_id) WHERE abs(balance - b) > 0.005""")[0] == 0
    # every customer has exactly one current account
    assert one(db, """SELECT count(*) FROM (SELECT customer_id FROM accounts WHERE product_id IN ('P01', 'P02')
                      GROUP BY 1 HAVING count(*) = 1)""")[0] == N


def test_label_rates(db):
    churned, rate = one(db, "SELECT count(*), avg(value) FROM labels WHERE label = 'churned'")
    assert churned == N and 0.12 <= rate <= 0.24
    holders, rate = one(db, "SELECT count(*), avg(value) FROM labels WHERE label = 'defaulted'")
    assert holders == one(db, "SELECT count(DISTINCT customer_id) FROM loans")[0]
    assert 0.14 * N <= holders <= 0.26 * N and 0.05 <= rate <= 0.15
    assert one(db, "SELECT count(*) FROM loans l JOIN labels b ON b.customer_id = l.customer_id "
                   "AND b.label = 'defaulted' WHERE l.defaulted <> (b.value = 1)")[0] == 0
    # outcomes fall after the snapshot
    assert one(db, f"SELECT min(label_date) > {SNAPSHOT} AND max(label_date) = DATE '2026-09-30' FROM labels")[0]


def test_churners_fade_before_the_snapshot_and_leave_after_it(db):
    rows = dict(db.execute(f"""
        WITH recent AS (SELECT customer_id, count(*) AS n FROM transactions
                        WHERE transaction_date >= {SNAPSHOT} - INTERVAL 90 DAY AND transaction_date < {SNAPSHOT}
                        GROUP BY 1)
        SELECT l.value, avg(coalesce(r.n, 0)) FROM labels l JOIN customers c USING (customer_id)
        LEFT JOIN recent r USING (customer_id)
        WHERE l.label = 'churned' AND c.joined_date < {SNAPSHOT} - INTERVAL 180 DAY GROUP BY 1""").fetchall())
    assert rows[1] < 0.85 * rows[0], rows
    salary = dict(db.execute(f"""
        SELECT l.value, avg((SELECT count(*) FROM transactions t WHERE t.customer_id = l.customer_id
                             AND t.category = 'salary' AND t.transaction_date >= {SNAPSHOT} - INTERVAL 90 DAY
                             AND t.transaction_date < {SNAPSHOT}))
        FROM labels l WHERE l.label = 'churned' GROUP BY 1""").fetchall())
    assert salary[1] < 0.8 * salary[0], salary
    products = dict(db.execute(f"""
        SELECT l.value, avg((SELECT count(*) FROM accounts a WHERE a.customer_id = l.customer_id
                             AND a.opened_date <= {SNAPSHOT}
                             AND (a.closed_date IS NULL OR a.closed_date > {SNAPSHOT})))
        FROM labels l WHERE l.label = 'churned' GROUP BY 1""").fetchall())
    assert products[1] < products[0], products
    # after leaving: no movement, every account closed on the churn date at a zero balance
    assert one(db, """SELECT count(*) FROM transactions t JOIN labels l USING (customer_id)
                      WHERE l.label = 'churned' AND l.value = 1
                      AND CAST(t.transaction_date AS DATE) > l.label_date""")[0] == 0
    assert one(db, """SELECT count(*) FROM accounts a JOIN labels l USING (customer_id)
                      WHERE l.label = 'churned' AND l.value = 1
                      AND (a.closed_date IS NULL OR a.closed_date > l.label_date OR a.status <> 'closed'
                           OR coalesce(a.balance, 0) <> 0)""")[0] == 0
    assert one(db, """SELECT count(*) FROM accounts a JOIN labels l USING (customer_id)
                      WHERE l.label = 'churned' AND l.value = 0 AND a.product_id IN ('P01', 'P02')
                      AND a.closed_date IS NOT NULL""")[0] == 0


def test_default_depends_on_credit_score_and_stops_instalments(db):
    rates = [r[1] for r in db.execute("""
        SELECT q, avg(value) FROM (SELECT l.value, ntile(3) OVER (ORDER BY c.credit_score) AS q
                                   FROM labels l JOIN customers c USING (customer_id)
                                   WHERE l.label = 'defaulted') GROUP BY 1 ORDER BY 1""").fetchall()]
    assert rates[0] > 2 * rates[2], rates
    assert one(db, """SELECT count(*) FROM transactions t JOIN labels l USING (customer_id)
                      WHERE l.label = 'defaulted' AND l.value = 1 AND t.category = 'loan'
                      AND CAST(t.transaction_date AS DATE) >= l.label_date""")[0] == 0


def test_xlsx_is_readable_and_split_in_parts(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "XLSX_PART_ROWS", 4_000)
        counts = synthetic.generate_bank(tmp_path / "x", customers=150, seed=1, fmt="xlsx")
        synthetic.generate_bank(tmp_path / "y", customers=150, seed=1, fmt="xlsx")
    assert digests(tmp_path / "x") == digests(tmp_path / "y")  # no wall-clock timestamps inside
    parts = sorted((tmp_path / "x").glob("transactions_*.xlsx"))
    assert len(parts) == -(-counts["transactions"] // 4_000) >= 2
    assert not (tmp_path / "x" / "transactions.xlsx").exists()
    tx_rows = 0
    for part in parts:
        book = CalamineWorkbook.from_path(str(part))
        assert book.sheet_names == ["transactions"]
        rows = book.get_sheet_by_index(0).to_python()
        assert rows[0] == list(synthetic.COLUMNS["transactions"]) and len(rows) - 1 <= 4_000
        assert isinstance(rows[1][3], dt.datetime) and isinstance(rows[1][4], float)
        tx_rows += len(rows) - 1
    assert tx_rows == counts["transactions"]
    for name in TABLES:
        if name == "transactions":
            continue
        rows = CalamineWorkbook.from_path(str(tmp_path / "x" / f"{name}.xlsx")).get_sheet_by_index(0).to_python()
        assert rows[0] == list(synthetic.COLUMNS[name]) and len(rows) - 1 == counts[name], name
    customers = CalamineWorkbook.from_path(str(tmp_path / "x" / "customers.xlsx")).get_sheet_by_index(0)
    first = customers.to_python()[1]
    assert first[0] == "C0000001" and isinstance(first[1], dt.date)


def test_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError):
        synthetic.generate_bank(tmp_path, customers=10, fmt="parquet")
