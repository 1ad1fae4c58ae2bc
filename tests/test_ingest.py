"""Ingest on small files made here: quarantine reasons, reconciliation, whole-file errors, the ledger."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from warehouse.db import connect
from warehouse.ingest import ingest_table
from warehouse.schema import ensure_all_raw_tables
from warehouse.sources import load_source

CUSTOMERS = (
    "customer_id,birth_date,gender,income,segment\n"
    "C1,1980-01-02,F,50000,mass\n"
    "C2,1975-05-06,M,72000.5,affluent\n"
    "C3,1990-12-31,F,31000,mass\n"
)

TRANSACTIONS = (
    "transaction_id,customer_id,transaction_date,amount,category\n"
    "T1,C1,2024-01-05 10:00:00,-25.50,card\n"          # row 2 good
    "T2,C2,2024-01-06,1200,salary\n"                   # row 3 good (date without time)
    "T3,C1,2024-01-07,abc,card\n"                      # row 4: amount not a number
    "T4,,2024-01-08,-3,card\n"                         # row 5: customer missing
    "T5,C9,2024-01-09,-3,card\n"                       # row 6: unknown customer
    "T1,C3,2024-01-10,-7,card\n"                       # row 7: duplicate transaction_id of row 2
    "T7,C3,2999-01-01,-7,card\n"                       # row 8: in the future
    "T8,C3,2024-02-30,-7,card\n"                       # row 9: no such date
    "T9,C3,2024-03-01,-7,card,extra\n"                 # row 10: one field too many
    "T10,C3,2024-03-02,-9.25,bill\n"                   # row 11 good
)


def write_config(tmp_path: Path, **tables: dict) -> Path:
    import yaml

    cfg = tmp_path / "bank.yaml"
    # files written by the test are complete: no need to wait for them to settle
    cfg.write_text(yaml.safe_dump({"name": "testbank", "delivery": {"settle_seconds": 0}, "tables": tables}))
    return cfg


@pytest.fixture
def bank(tmp_path: Path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "customers.csv").write_text(CUSTOMERS)
    (landing / "transactions.csv").write_text(TRANSACTIONS)
    cfg = write_config(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "transactions.csv"})
    return landing, load_source(cfg), tmp_path / "w.duckdb"


def run(db: Path, source, landing: Path, *tables: str):
    with connect(db) as con:
        ensure_all_raw_tables(con)
        return {t: ingest_table(con, source, t, landing, run_id="test", log=lambda m: None) for t in tables}


def rows(db: Path, sql: str):
    with connect(db, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_quarantine_holds_exactly_the_bad_rows_with_reasons(bank):
    landing, source, db = bank
    reports = run(db, source, landing, "customers", "transactions")
    tx = reports["transactions"].files[0]
    assert (tx.rows_read, tx.rows_loaded, tx.rows_quarantined) == (10, 3, 7)
    assert rows(db, "SELECT transaction_id FROM raw.transactions ORDER BY _source_row") == [("T1",), ("T2",), ("T10",)]
    quarantined = dict(rows(db, "SELECT _source_row, reason FROM quarantine.transactions"))
    assert quarantined[4] == "amount: not a number"
    assert quarantined[5] == "customer_id: missing"
    assert quarantined[6].startswith("customer_id: not in customers")
    assert quarantined[7] == "duplicate key (transaction_id): first at row 2"
    assert quarantined[8].startswith("transaction_date: 2999-01-01") and quarantined[8].endswith("is in the future")
    assert quarantined[9] == "transaction_date: not a date-time"
    assert quarantined[10].startswith("malformed line:")
    assert set(quarantined) == {4, 5, 6, 7, 8, 9, 10}
    # the original record is kept, and the bad columns are listed
    rec, cols, file = rows(db, "SELECT record, columns, _source_file FROM quarantine.transactions WHERE _source_row = 4")[0]
    assert '"amount":"abc"' in rec and cols == ["amount"] and file == "transactions.csv"


def test_rows_after_a_malformed_line_keep_their_file_row_numbers(bank):
    landing, source, db = bank
    run(db, source, landing, "customers", "transactions")
    # T10 is on line 11 of the file, after the malformed line 10
    assert rows(db, "SELECT _source_row FROM raw.transactions WHERE transaction_id = 'T10'") == [(11,)]


def test_types_and_signed_amounts(bank):
    landing, source, db = bank
    run(db, source, landing, "customers", "transactions")
    assert rows(db, "SELECT income FROM raw.customers WHERE customer_id = 'C2'") == [(72000.5,)]
    assert rows(db, "SELECT sum(amount) FROM raw.transactions") == [(-25.5 + 1200 - 9.25,)]


def test_rerun_is_a_no_op_and_a_changed_file_adds_its_new_rows(bank):
    landing, source, db = bank
    run(db, source, landing, "customers", "transactions")
    again = run(db, source, landing, "customers", "transactions")
    assert [f.status for f in again["transactions"].files] == ["unchanged"]
    assert rows(db, "SELECT count(*) FROM raw.transactions") == [(3,)]
    assert rows(db, "SELECT count(*) FROM quarantine.transactions") == [(7,)]

    # the export of the same name again, one row longer: the rows it repeats are skipped, the new one loads
    (landing / "transactions.csv").write_text(TRANSACTIONS + "T11,C2,2024-04-01,-1,card\n")
    third = run(db, source, landing, "transactions")
    assert [f.status for f in third["transactions"].files] == ["loaded"]
    assert rows(db, "SELECT transaction_id FROM raw.transactions ORDER BY 1") == [("T1",), ("T10",), ("T11",), ("T2",)]
    assert rows(db, "SELECT rows_read, rows_loaded, rows_skipped, rows_quarantined, state FROM raw.deliveries "
                    "WHERE table_name = 'transactions' ORDER BY processed_at") == [
        (10, 3, 0, 7, "superseded"), (11, 1, 3, 7, "loaded")]


def test_the_only_file_of_a_table_and_a_second_file_give_the_same_table(tmp_path):
    """The first file of a table becomes raw.<table> directly (no second copy); a second file is appended.
    Both paths give the columns, types, row numbers and quarantine of a table built from the contract."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "customers.csv").write_text(CUSTOMERS)
    good = TRANSACTIONS.replace("T9,C3,2024-03-01,-7,card,extra\n", "")  # no malformed line: row order path
    (landing / "tx_1.csv").write_text(good)
    (landing / "tx_2.csv").write_text("transaction_id,customer_id,transaction_date,amount,category\n"
                                      "T20,C2,2024-05-01,-4,card\nT21,C9,2024-05-02,-4,card\n")
    cfg = write_config(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "tx_*.csv"})
    db = tmp_path / "w.duckdb"
    with connect(db) as con:
        ensure_all_raw_tables(con)
        contract_cols = con.execute("DESCRIBE raw.transactions").fetchall()
    run(db, load_source(cfg), landing, "customers", "transactions")
    assert rows(db, "DESCRIBE raw.transactions") == contract_cols
    assert rows(db, "SELECT transaction_id, _source_file, _source_row FROM raw.transactions ORDER BY 2, 3") == [
        ("T1", "tx_1.csv", 2), ("T2", "tx_1.csv", 3), ("T10", "tx_1.csv", 10), ("T20", "tx_2.csv", 2)]
    got = dict(rows(db, "SELECT _source_file || ':' || _source_row, reason FROM quarantine.transactions "
                        "WHERE _source_row IN (4, 3, 7)"))
    assert got["tx_1.csv:4"] == "amount: not a number"
    assert got["tx_1.csv:7"] == "duplicate key (transaction_id): first at row 2"
    assert got["tx_2.csv:3"].startswith("customer_id: not in customers")
    assert rows(db, "SELECT count(*) FROM raw.transactions WHERE _ingested_at IS NULL") == [(0,)]
    assert rows(db, "SELECT count(*) FROM quarantine.transactions") == [(7,)]  # 6 in tx_1, 1 in tx_2


def test_extra_columns_come_after_lineage_on_either_path(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "customers_a.csv").write_text("customer_id,nickname\nC1,ann\n")
    (landing / "customers_b.csv").write_text("customer_id,nickname,vip\nC2,bob,1\n")
    cfg = write_config(tmp_path, customers=[{"path": "customers_a.csv"}, {"path": "customers_b.csv"}])
    db = tmp_path / "w.duckdb"
    run(db, load_source(cfg), landing, "customers")
    names = [r[0] for r in rows(db, "DESCRIBE raw.customers")]
    assert names[-6:] == ["_source_file", "_source_row", "_ingested_at", "_delivery_id", "nickname", "vip"]
    assert rows(db, "SELECT customer_id, nickname, vip, _source_row FROM raw.customers ORDER BY 1") == [
        ("C1", "ann", None, 2), ("C2", "bob", 1.0, 2)]


def test_touched_but_identical_file_is_not_reloaded(bank):
    landing, source, db = bank
    run(db, source, landing, "customers")
    os.utime(landing / "customers.csv", ns=(1, 1))
    again = run(db, source, landing, "customers")
    assert [f.status for f in again["customers"].files] == ["unchanged"]


# ---- whole-file errors: a clear message naming the file and what is wrong, and nothing loaded from it
def _only_customers(tmp_path: Path, content: bytes, name: str = "customers.csv", **read) -> tuple:
    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    (landing / name).write_bytes(content)
    cfg = write_config(tmp_path, customers={"path": name, **read})
    db = tmp_path / "w.duckdb"
    report = run(db, load_source(cfg), landing, "customers")["customers"]
    return report, rows(db, "SELECT count(*) FROM raw.customers")[0][0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (CUSTOMERS.replace(",", ";").encode(), "is the separator ';'"),
        (b"id,gender\nC1,F\n", "required column 'customer_id' of customers is missing"),
        ("customer_id,city\nC1,Pr\u00e9rov\n".encode("latin-1"), "is not valid utf-8 text"),
        (b"", "file is empty"),
        (b"customer_id,gender\n", "has a header but no data rows"),
    ],
    ids=["wrong-separator", "missing-column", "not-utf8", "empty", "header-only"],
)
def test_unreadable_csv_fails_clearly_and_loads_nothing(tmp_path, content, expected):
    report, loaded = _only_customers(tmp_path, content)
    assert len(report.errors) == 1
    assert "customers.csv" in report.errors[0] and expected in report.errors[0]
    assert loaded == 0


def test_declared_encoding_reads_latin1(tmp_path):
    report, loaded = _only_customers(tmp_path, "customer_id,city\nC1,Pr\u00e9rov\n".encode("latin-1"), encoding="latin-1")
    assert report.errors == [] and loaded == 1


def _xlsx(path: Path, rows_: list[list]) -> None:
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("customers")
    for r, values in enumerate(rows_):
        for c, v in enumerate(values):
            ws.write(r, c, v)
    wb.close()


def test_xlsx_is_read_with_row_numbers(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _xlsx(landing / "customers.xlsx", [["customer_id", "income", "gender"], ["C1", 1000, "F"], ["C2", "lots", "M"]])
    cfg = write_config(tmp_path, customers={"path": "customers.xlsx"})
    db = tmp_path / "w.duckdb"
    report = run(db, load_source(cfg), landing, "customers")["customers"]
    assert (report.total("rows_loaded"), report.total("rows_quarantined")) == (1, 1)
    assert rows(db, "SELECT customer_id, income FROM raw.customers") == [("C1", 1000.0)]
    assert rows(db, "SELECT _source_row, reason FROM quarantine.customers") == [(3, "income: not a number")]


def test_truncated_xlsx_fails_clearly(tmp_path):
    good = tmp_path / "good.xlsx"
    _xlsx(good, [["customer_id"], ["C1"]])
    data = good.read_bytes()
    assert zipfile.is_zipfile(good)
    report, loaded = _only_customers(tmp_path, data[: len(data) // 2], name="customers.xlsx")
    assert "customers.xlsx" in report.errors[0] and "not a readable spreadsheet" in report.errors[0]
    assert loaded == 0


def test_csv_renamed_xlsx_fails_clearly(tmp_path):
    report, loaded = _only_customers(tmp_path, CUSTOMERS.encode(), name="customers.xlsx")
    assert "not a readable spreadsheet" in report.errors[0] and loaded == 0


def test_value_maps_dates_derive_and_extras(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "clients.txt").write_text("ID;SEX;BORN;PAY;Branch Code;Score Band\n007;female;311299;1.234,5;0042;A\n")
    cfg = write_config(tmp_path, customers={
        "path": "clients.txt", "sep": ";", "decimal": ",", "thousands": ".",
        "rename": {"ID": "customer_id", "BORN": "birth_date"},
        "dates": {"birth_date": "%d%m%y"},
        "value_maps": {"gender": {"female": "F", "male": "M"}},
        "derive": {"gender": "src.SEX", "income": "src.PAY"},
    })
    db = tmp_path / "w.duckdb"
    run(db, load_source(cfg), landing, "customers")
    got = rows(db, 'SELECT customer_id, gender, birth_date::VARCHAR, income, branch_code, score_band, sex FROM raw.customers')
    assert got == [("007", "F", "1999-12-31", 1234.5, "0042", "A", "female")]


def test_blank_lines_do_not_shift_row_numbers(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "customers.csv").write_text("customer_id,income\nC1,1\n\nC2,x\n\nC3,3\n")
    cfg = write_config(tmp_path, customers={"path": "customers.csv"})
    db = tmp_path / "w.duckdb"
    run(db, load_source(cfg), landing, "customers")
    assert rows(db, "SELECT customer_id, _source_row FROM raw.customers ORDER BY 1") == [("C1", 2), ("C3", 6)]
    assert rows(db, "SELECT _source_row, reason FROM quarantine.customers") == [(4, "income: not a number")]


def test_derived_numbers_ignore_the_files_number_format(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "c.csv").write_text("id;pay;dc\nA;1.234,50;D\nB;12,00;C\n")
    cfg = write_config(tmp_path, customers={
        "path": "c.csv", "sep": ";", "decimal": ",", "thousands": ".", "rename": {"id": "customer_id"},
        "derive": {"income": "CASE src.dc WHEN 'D' THEN 2 ELSE 1 END * TRY_CAST(replace(replace(src.pay, '.', ''), ',', '.') AS DOUBLE)"},
    })
    db = tmp_path / "w.duckdb"
    run(db, load_source(cfg), landing, "customers")
    assert rows(db, "SELECT customer_id, income, pay FROM raw.customers ORDER BY 1") == [("A", 2469.0, 1234.5), ("B", 12.0, 12.0)]


def test_a_mapping_that_does_not_fit_the_file_is_reported_not_raised(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "c.csv").write_text("customer_id\nC1\n")
    cfg = write_config(tmp_path, customers={"path": "c.csv", "derive": {"income": "src.no_such_column"}})
    db = tmp_path / "w.duckdb"
    report = run(db, load_source(cfg), landing, "customers")["customers"]
    assert "c.csv" in report.errors[0] and "derive/joins" in report.errors[0]
    assert rows(db, "SELECT count(*) FROM raw.customers") == [(0,)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 1 << 24])
def test_file_scans_find_blank_lines_and_count_lines_across_chunk_boundaries(tmp_path, chunk):
    import random

    import xxhash

    from warehouse.readers import blank_lines, scan_file

    rnd = random.Random(chunk)
    for trial in range(40):
        lines = [rnd.choice([b"a,b", b"", b"\r", b"xyz,1"]) for _ in range(rnd.randint(1, 30))]
        data = b"\n".join(lines) + b"\n"
        path = tmp_path / f"f{trial}.csv"
        path.write_bytes(data)
        expected = [i + 1 for i, ln in enumerate(data.split(b"\n")[:-1]) if ln.strip(b"\r") == b"" and i > 0]
        assert blank_lines(path, chunk_size=chunk) == expected, data
        scan = scan_file(path, chunk_size=chunk)
        assert (scan.checksum, scan.lines, scan.terminated) == (
            xxhash.xxh3_128(data).hexdigest(), data.count(b"\n"), True), data


def test_balance_of_a_day_with_several_postings_is_the_last_row_of_the_file(tmp_path):
    """Date-only exports give every posting of a day the same timestamp: the balance at a date is the
    balance after the day's last row in the file, the same on every run (not whichever row DuckDB meets)."""
    from datetime import date

    from warehouse.features import build_balances

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "customers.csv").write_text(CUSTOMERS)
    postings = [("T1", "2024-06-01", 500, 500), ("T2", "2024-06-30", -100, 400), ("T3", "2024-06-30", 250, 650),
                ("T4", "2024-06-30", -600, 50), ("T5", "2024-05-31", 10, 490)]
    (landing / "transactions.csv").write_text(
        "transaction_id,customer_id,account_id,transaction_date,amount,balance_after\n"
        + "".join(f"{t},C1,A1,{d},{a},{b}\n" for t, d, a, b in postings))
    cfg = write_config(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "transactions.csv"})
    db = tmp_path / "w.duckdb"
    run(db, load_source(cfg), landing, "customers", "transactions")
    with connect(db) as con:
        con.execute("CREATE TABLE features.population AS SELECT 'C1' AS customer_id, DATE '2024-06-30' AS snapshot_date")
        build_balances(con, date(2024, 6, 30))
    assert rows(db, "SELECT balance_now, balance_30d_ago FROM features.balances") == [(50.0, 490.0)]
