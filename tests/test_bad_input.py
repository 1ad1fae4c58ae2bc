"""The bad-input corpus: every kind of broken file a bank sends, written to tests/data/bad/ by this test.

Each file lands beside a good delivery already loaded. It gets a clear error naming the file (and the row or
column), or its bad rows go to quarantine with the reason; the counts reconcile (read = loaded + quarantined,
per file and per table); and the good delivery's rows are untouched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import xlsxwriter
import yaml
from msoffcrypto.format.ooxml import OOXMLFile

from warehouse.db import connect
from warehouse.ingest import ingest_table
from warehouse.schema import ensure_all_raw_tables
from warehouse.sources import load_source

CORPUS = Path(__file__).parent / "data" / "bad"
GOOD = {
    "customers.csv": "customer_id,birth_date,gender,income,segment\nC1,1980-01-02,F,50000,mass\nC2,1975-05-06,M,72000,affluent\n",
    "transactions.csv": "transaction_id,customer_id,transaction_date,amount,category\n"
                        "T1,C1,2024-01-05,-25.5,card\nT2,C2,2024-01-06,1200,salary\n",
    "loans.csv": "loan_id,customer_id,start_date,amount,duration_months\nL1,C1,2023-01-01,10000,24\n",
}


@dataclass
class Case:
    file: str  # name in the corpus; the table is its first word
    content: object  # bytes, or a function writing the file
    error: str | None = None  # expected in the file's error (whole file rejected)
    quarantined: dict[int, str] | None = None  # row -> expected in its reason
    loaded: int = 0


def _workbook(sheets: dict[str, list[list]], merge: str | None = None, formula: tuple | None = None):
    def write(path: Path) -> None:
        wb = xlsxwriter.Workbook(str(path))
        for name, rows in sheets.items():
            ws = wb.add_worksheet(name)
            for r, values in enumerate(rows):
                for c, v in enumerate(values):
                    ws.write(r, c, v)
            if merge and name == "customers":
                ws.merge_range(merge, "Customer file, exported 2024-06-30")
            if formula and name == "customers":
                ws.write_formula(*formula)
        wb.close()
    return write


def _locked(path: Path) -> None:
    plain = path.with_suffix(".plain.xlsx")
    _workbook({"customers": [["customer_id", "income"], ["C7", 10]]})(plain)
    with open(plain, "rb") as src, open(path, "wb") as out:
        OOXMLFile(src).encrypt("s3cret", out)
    plain.unlink()


CUSTOMER_HEADER = ["customer_id", "birth_date", "gender", "income", "segment"]
CASES = [
    Case("customers_semicolon.csv", b"customer_id;income\nC7;10\nC8;20\n", error="is the separator ';'"),
    Case("customers_no_id.csv", b"id,income\nC7,10\n", error="required column 'customer_id' of customers is missing"),
    Case("customers_extra.csv", b"customer_id,income,loyalty_tier,branch_code\nC7,10,gold,0042\n", loaded=1),
    Case("customers_dupkey.csv", b"customer_id,income\nC7,10\nC7,11\nC1,12\n", loaded=1,
         quarantined={3: "duplicate key", 4: "correction: customer_id already loaded from customers.csv row 2"}),
    Case("transactions_dates.csv", b"transaction_id,customer_id,transaction_date,amount\nT7,C1,2999-01-01,-5\n"
         b"T8,C1,2024-02-30,-5\nT9,C1,yesterday,-5\nT10,C2,2024-03-01,-5\n", loaded=1,
         quarantined={2: "transaction_date: 2999-01-01 00:00:00 is in the future", 3: "transaction_date: not a date-time",
                      4: "transaction_date: not a date-time"}),
    Case("transactions_nan.csv", b"transaction_id,customer_id,transaction_date,amount\nT7,C1,2024-01-01,NaN\n"
         b"T8,C1,2024-01-02,inf\nT9,C1,2024-01-03,\nT10,C1,2024-01-04,-3\n", loaded=1,
         quarantined={2: "amount: not a finite number", 3: "amount: not a finite number",
                      4: "amount"}),
    Case("loans_negative.csv", b"loan_id,customer_id,start_date,amount\nL7,C1,2024-01-01,-500\nL8,C2,2024-01-01,900\n",
         loaded=1, quarantined={2: "amount: -500"}),
    Case("customers_latin1.csv", "customer_id,city\nC7,Pr\u00e9rov\n".encode("latin-1"), error="is not valid utf-8 text"),
    Case("customers_empty.csv", b"", error="file is empty"),
    Case("customers_header_only.csv", b"customer_id,income\n", error="has a header but no data rows"),
    Case("customers_huge_field.csv", b"customer_id,income,segment\nC7,10,\"" + b"x" * 11_000_000 + b"\nC8,20,mass\n",
         error="row 2 is longer than 10,000,000 bytes"),
    # under the limit, a long field loads: two of them in a row fill a read buffer (warehouse/readers.py BUFFER)
    Case("customers_long_field.csv", b"customer_id,income,segment\nC7,10,\"" + b"x" * 9_500_000 + b"\"\nC8,20,\""
         + b"y" * 9_500_000 + b"\"\nC9,30,mass\n", loaded=3),
    Case("customers_sheets.xlsx", _workbook({"README": [["Export of the core banking system"]],
                                             "customers": [["customer_id", "income"], ["C7", 10], ["C8", "n/a"]]}),
         loaded=1, quarantined={3: "income: not a number"}),
    Case("customers_other_sheet.xlsx", _workbook({"README": [["Export of the core banking system"]],
                                                  "Sheet2": [["customer_id", "income"], ["C7", 10]]}),
         error="the workbook has sheets ['README', 'Sheet2'] and sheet 'README' was read"),
    Case("customers_merged_title.xlsx", _workbook({"customers": [[], ["customer_id", "income"], ["C7", 10]]},
                                                  merge="A1:B1"),
         error="required column 'customer_id' of customers is missing"),
    Case("customers_formulas.xlsx", _workbook({"customers": [["customer_id", "income"], ["C7", 0], ["C8", 5]]},
                                              formula=(1, 1, "=1000*2", None, 2000)), loaded=2),
    Case("customers_locked.xlsx", _locked, error="is a password-protected workbook"),
    Case("customers_renamed.xlsx", b"customer_id,income\nC7,10\n", error="is not a readable spreadsheet"),
]


def _write_corpus() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    CORPUS.mkdir(parents=True)
    for case in CASES:
        if callable(case.content):
            case.content(CORPUS / case.file)
        else:
            (CORPUS / case.file).write_bytes(case.content)


@pytest.fixture(scope="module")
def corpus():
    _write_corpus()
    return CORPUS


def _source(tmp_path: Path):
    """Each bad file is one more delivery of facts beside the good one (customers and loans as events): what
    is under test is how a broken file is reported, not which snapshot wins (tests/test_deliveries.py)."""
    cfg = tmp_path / "bank.yaml"
    cfg.write_text(yaml.safe_dump({"name": "badbank", "delivery": {"settle_seconds": 0}, "tables": {
        "customers": {"path": "customers*", "mode": "events"}, "transactions": {"path": "transactions*"},
        "loans": {"path": "loans*", "mode": "events"}}}))
    return load_source(cfg)


def _ingest(db: Path, source, landing: Path) -> dict:
    with connect(db) as con:
        ensure_all_raw_tables(con, {t: f[0].mode for t, f in source.feeds.items()})
        return {t: ingest_table(con, source, t, landing, run_id="t", log=lambda m: None)
                for t in ("customers", "transactions", "loans")}


def _rows(db: Path, sql: str):
    with connect(db, read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def ingested_once(tmp_path_factory) -> Path:
    """A landing folder with the good files and its warehouse, ingested once for the module."""
    root = tmp_path_factory.mktemp("good")
    (root / "landing").mkdir()
    for name, text in GOOD.items():
        (root / "landing" / name).write_text(text)
    _ingest(root / "w.duckdb", _source(root), root / "landing")
    return root


def _good_delivery(tmp_path: Path, ingested: Path):
    """A copy of the good delivery, ingested (files with their times, so the ledger sees them unchanged): what
    every bad file arrives after."""
    shutil.copytree(ingested / "landing", tmp_path / "landing")
    shutil.copy(ingested / "w.duckdb", tmp_path / "w.duckdb")
    return tmp_path / "landing", tmp_path / "w.duckdb", _source(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_bad_file_is_rejected_or_quarantined_and_counts_reconcile(corpus, ingested_once, tmp_path, case):
    landing, db, source = _good_delivery(tmp_path, ingested_once)
    table = case.file.split("_")[0]
    cols = ", ".join(f'"{c}"' for (c,) in _rows(db, f"SELECT column_name FROM (DESCRIBE raw.{table}) "
                                                   "WHERE column_name <> '_ingested_at'"))
    good = _rows(db, f"SELECT {cols} FROM raw.{table} ORDER BY ALL")

    shutil.copy(corpus / case.file, landing / case.file)
    report = _ingest(db, source, landing)[table]
    (bad,) = [f for f in report.files if f.path == case.file]
    if case.error:
        assert bad.status == "rejected" and case.file in bad.error and case.error in bad.error, bad.error
        assert (bad.rows_loaded, bad.rows_quarantined) == (0, 0)
    else:
        assert bad.error is None and bad.rows_read == bad.rows_loaded + bad.rows_skipped + bad.rows_quarantined
        assert bad.rows_loaded == case.loaded
        reasons = dict(_rows(db, f"SELECT _source_row, reason FROM quarantine.{table} WHERE _source_file = '{case.file}'"))
        assert sorted(reasons) == sorted(case.quarantined or {})
        for row, expected in (case.quarantined or {}).items():
            assert expected in reasons[row], (row, reasons[row])
    # read = loaded + quarantined for the whole table, from the ledger; the good delivery is untouched
    (read, loaded, quarantined), = _rows(db, "SELECT sum(rows_read), sum(rows_loaded), sum(rows_quarantined) FROM "
                                            f"raw.deliveries WHERE table_name = '{table}' AND state <> 'rejected'")
    assert read == loaded + quarantined
    assert _rows(db, f"SELECT count(*) FROM raw.{table}") == [(loaded,)]
    assert _rows(db, f"SELECT count(*) FROM quarantine.{table}") == [(quarantined,)]
    assert _rows(db, f"SELECT {cols} FROM raw.{table} WHERE _source_file = '{table}.csv' ORDER BY ALL") == good


def test_a_changed_file_that_turns_unreadable_keeps_its_earlier_rows(ingested_once, tmp_path):
    landing, db, source = _good_delivery(tmp_path, ingested_once)
    (landing / "customers.csv").write_text(GOOD["customers.csv"].replace(",", ";"))  # the next export is broken
    report = _ingest(db, source, landing)["customers"]
    assert "is the separator ';'" in report.errors[0]
    assert _rows(db, "SELECT count(*) FROM raw.customers") == [(2,)]
