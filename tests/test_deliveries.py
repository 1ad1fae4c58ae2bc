"""Deliveries as banks send them (issue 11), on small files made here: snapshots and their history, events and
corrections, the volume guard, late arrivals, files in flight, archived files, confinement, plausibility and
messages that never quote a customer's values."""

from __future__ import annotations

import gzip
import os
from datetime import datetime
from pathlib import Path

import pytest
import xlsxwriter
import yaml

from warehouse import deliveries
from warehouse import features as F
from warehouse.db import connect
from warehouse.ingest import ingest_table
from warehouse.sources import SourceConfigError, load_source

DAY1, DAY2, DAY3 = (datetime(2024, 6, d, 6, 0) for d in (1, 2, 3))
CUSTOMERS = "customer_id,income,segment\n" + "".join(f"C{i},{1000 * i},mass\n" for i in range(1, 21))


def _cfg(tmp_path: Path, delivery: dict | None = None, **tables) -> Path:
    cfg = tmp_path / "bank.yaml"
    cfg.write_text(yaml.safe_dump({"name": "bank", "delivery": {"settle_seconds": 0, **(delivery or {})},
                                   "tables": tables}))
    return cfg


def _write(landing: Path, name: str, text: str | bytes, at: datetime | None = None) -> Path:
    """A delivered file; `at`: when the bank delivered it (its modification time)."""
    path = landing / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if at is not None:
        os.utime(path, (at.timestamp(), at.timestamp()))
    return path


@pytest.fixture
def bank(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    db = tmp_path / "w.duckdb"

    def ingest(cfg: Path, *tables: str, log=None):
        source = load_source(cfg)
        with connect(db) as con:
            return {t: ingest_table(con, source, t, landing, run_id="t", log=log or (lambda m: None))
                    for t in tables}

    def q(sql: str, *args):
        with connect(db, read_only=True) as con:
            return con.execute(sql, list(args)).fetchall()

    return landing, ingest, q


# ------------------------------------------------------------------------------------------- snapshots
def test_a_new_snapshot_under_a_new_name_becomes_the_current_state_with_history(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers")
    # a month later: C1 earns more, C20 has left, C21 joined (the old file is still in landing)
    nov = CUSTOMERS.replace("C1,1000,", "C1,1500,").replace("C20,20000,mass\n", "") + "C21,21000,mass\n"
    _write(landing, "customers_2026-11.csv", nov, DAY2)
    report = ingest(cfg, "customers")["customers"]
    (new,) = [f for f in report.files if f.path == "customers_2026-11.csv"]
    assert (new.status, new.rows_read, new.rows_loaded, new.rows_skipped) == ("loaded", 20, 2, 18)
    assert q("SELECT income FROM raw.customers WHERE customer_id = 'C1'") == [(1500.0,)]
    assert q("SELECT count(*) FROM raw.customers WHERE customer_id = 'C20'") == [(0,)]
    assert q("SELECT count(*) FROM raw.customers") == [(20,)]
    # nothing deleted: the old versions are closed at the new delivery's time
    assert q("SELECT income, _valid_from, _valid_to FROM raw.customers_history WHERE customer_id = 'C1' "
             "ORDER BY _valid_to NULLS LAST") == [(1000.0, None, DAY2), (1500.0, DAY2, None)]
    assert q("SELECT _valid_to FROM raw.customers_history WHERE customer_id = 'C20'") == [(DAY2,)]
    assert q("SELECT source_file, state, rows_closed FROM raw.deliveries ORDER BY delivered_at") == [
        ("customers.csv", "superseded", 0), ("customers_2026-11.csv", "loaded", 1)]


def test_the_same_file_resent_the_same_day_corrects_that_delivery_and_the_next_day_is_a_new_version(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers")
    # the bank re-sends the day's export with a fix: it replaces that delivery, at its time (no history of the
    # mistaken values)
    _write(landing, "customers.csv", CUSTOMERS.replace("C2,2000,", "C2,2500,"), DAY1.replace(hour=9))
    ingest(cfg, "customers")
    assert q("SELECT income, _valid_from, _valid_to FROM raw.customers_history WHERE customer_id = 'C2'") == [
        (2500.0, None, None)]
    assert q("SELECT count(*) FROM raw.customers_history") == [(20,)]
    # the next day's export under the same name is a new snapshot: a new version from its time
    _write(landing, "customers.csv", CUSTOMERS.replace("C2,2000,", "C2,3000,"), DAY2)
    ingest(cfg, "customers")
    assert q("SELECT income, _valid_from, _valid_to FROM raw.customers_history WHERE customer_id = 'C2' "
             "ORDER BY _valid_to NULLS LAST") == [(2500.0, None, DAY2), (3000.0, DAY2, None)]
    assert q("SELECT state FROM raw.deliveries ORDER BY processed_at") == [
        ("superseded",), ("superseded",), ("loaded",)]


def test_features_as_of_a_date_read_the_state_as_it_was_then(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers", "transactions", "accounts", "loans", "products", "managers", "agencies", "labels")
    _write(landing, "customers_b.csv", CUSTOMERS.replace("C1,1000,", "C1,1500,") + "C21,21000,mass\n", DAY2)
    ingest(cfg, "customers")
    with connect(landing.parent / "w.duckdb") as con:
        got = {}
        for day in (DAY1.date(), DAY2.date()):
            F.build_all(con, day)
            got[day] = con.execute("SELECT count(*), max(income) FILTER (WHERE customer_id = 'C1') "
                                   "FROM features.customer_features").fetchone()
    # as of day 1 the day-2 delivery does not exist yet: no C21, C1 at its old income (no leakage)
    assert got == {DAY1.date(): (20, 1000.0), DAY2.date(): (21, 1500.0)}


def test_a_truncated_resend_is_held_back_whole_and_the_state_kept(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "transactions.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    _write(landing, "transactions.csv", "transaction_id,customer_id,transaction_date,amount\n"
           + "".join(f"T{i},C{i},2024-05-0{1 + i % 9},-{i}\n" for i in range(1, 21)), DAY1)
    ingest(cfg, "customers", "transactions")
    half = "".join(CUSTOMERS.splitlines(keepends=True)[:11])  # header + 10 of 20 customers, same name
    _write(landing, "customers.csv", half, DAY2)
    report = ingest(cfg, "customers", "transactions")
    (held,) = report["customers"].files
    assert held.status == "held" and report["customers"].held == [held]
    assert q("SELECT count(*) FROM raw.customers") == [(20,)]  # nothing lost
    assert q("SELECT count(*) FROM raw.transactions") == [(20,)]
    assert q("SELECT count(*) FROM quarantine.transactions") == [(0,)]  # no transaction lost its customer
    (d,) = [d for d in q("SELECT state, rows_read, note FROM raw.deliveries WHERE state = 'held'")]
    assert d[1] == 10 and "re-send of customers.csv with 10 rows where the version it replaces had 20" in d[2]
    # the same held file again: still held, not read again
    assert [f.status for f in ingest(cfg, "customers")["customers"].files] == ["held"]
    # a person looks and accepts it: the next run loads it without the guard
    with connect(landing.parent / "w.duckdb") as con:
        (accepted,) = deliveries.accept(con, "customers.csv")
    assert accepted.state == "held"
    (loaded,) = ingest(cfg, "customers")["customers"].files
    assert loaded.status == "loaded" and q("SELECT count(*) FROM raw.customers") == [(10,)]
    assert q("SELECT count(*) FROM raw.customers_history WHERE _valid_to IS NOT NULL") == [(10,)]


def test_a_snapshot_that_shrinks_the_table_beyond_max_shrink_is_held(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*.csv"})
    _write(landing, "customers_1.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers")
    _write(landing, "customers_2.csv", "".join(CUSTOMERS.splitlines(keepends=True)[:18]), DAY2)  # 17 of 20
    (_, held) = ingest(cfg, "customers")["customers"].files
    assert held.status == "held"
    assert q("SELECT rows_before, rows_after FROM raw.deliveries WHERE state = 'held'") == [(20, 17)]
    assert q("SELECT count(*) FROM raw.customers") == [(20,)]
    # within the guard (5% fewer): loaded
    _write(landing, "customers_3.csv", "".join(CUSTOMERS.splitlines(keepends=True)[:20]), DAY3)  # 19 of 20
    statuses = {f.path: f.status for f in ingest(cfg, "customers")["customers"].files}
    assert statuses == {"customers_1.csv": "unchanged", "customers_2.csv": "held", "customers_3.csv": "loaded"}
    assert q("SELECT count(*) FROM raw.customers") == [(19,)]
    # the held delivery was overtaken by a newer snapshot: superseded, no longer held
    assert q("SELECT state FROM raw.deliveries WHERE source_file = 'customers_2.csv'") == [("superseded",)]


# ---------------------------------------------------------------------------------------------- events
TX = "transaction_id,customer_id,transaction_date,amount,category\n"


def test_an_exact_resend_of_events_loads_nothing(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "tx_*.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    body = TX + "".join(f"T{i},C{i},2024-05-01,-{i},card\n" for i in range(1, 6))
    _write(landing, "tx_0601.csv", body, DAY1)
    ingest(cfg, "customers", "transactions")
    _write(landing, "tx_0601_again.csv", body, DAY2)
    (_, again) = ingest(cfg, "transactions")["transactions"].files
    assert (again.status, again.rows_read, again.rows_loaded, again.rows_skipped, again.rows_quarantined) == (
        "loaded", 5, 0, 5, 0)
    assert q("SELECT count(*) FROM raw.transactions") == [(5,)]


@pytest.mark.parametrize(("policy", "amount", "quarantined", "action"), [
    ("quarantine", -1.0, 1, "quarantined"), ("latest_wins", -100.0, 0, "replaced"), ("keep_first", -1.0, 0, "kept_first")])
def test_a_correction_is_handled_by_on_conflict_with_an_audit_row(tmp_path, bank, policy, amount, quarantined, action):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"},
               transactions={"path": "tx_*.csv", "on_conflict": policy})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    _write(landing, "tx_1.csv", TX + "T1,C1,2024-05-01,-1,card\nT2,C2,2024-05-01,-2,card\n", DAY1)
    ingest(cfg, "customers", "transactions")
    _write(landing, "tx_1_corrected.csv", TX + "T1,C1,2024-05-01,-100,card\nT2,C2,2024-05-01,-2,card\n", DAY2)
    ingest(cfg, "transactions")
    assert q("SELECT amount FROM raw.transactions WHERE transaction_id = 'T1'") == [(amount,)]
    assert q("SELECT count(*) FROM quarantine.transactions WHERE kind = 'correction'") == [(quarantined,)]
    assert q("SELECT key, action, changed_columns, previous_file FROM raw.corrections") == [
        ("T1", action, ["amount"], "tx_1.csv")]
    if quarantined:
        (reason,) = q("SELECT reason FROM quarantine.transactions")[0]
        assert reason.startswith("correction: transaction_id already loaded from tx_1.csv row 2 with other "
                                 "values in amount")


def test_a_fraud_confirmed_later_reaches_raw_with_latest_wins(tmp_path, bank):
    """docs/deliveries.md: the bank re-sends yesterday's transactions with the fraud flag investigators set."""
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"},
               transactions={"path": "tx_*.csv", "on_conflict": "latest_wins"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    _write(landing, "tx_1.csv", TX + "T1,C1,2024-05-01,-1,card\nT2,C2,2024-05-01,-2,card\n", DAY1)
    ingest(cfg, "customers", "transactions")
    _write(landing, "tx_1_labelled.csv", TX.replace("\n", ",fraud\n")
           + "T1,C1,2024-05-01,-1,card,1\nT2,C2,2024-05-01,-2,card,0\n", DAY2)
    ingest(cfg, "transactions")
    assert q("SELECT transaction_id, fraud FROM raw.transactions ORDER BY 1") == [("T1", True), ("T2", False)]
    assert q("SELECT key, action, changed_columns FROM raw.corrections ORDER BY 1") == [
        ("T1", "replaced", ["fraud"]), ("T2", "replaced", ["fraud"])]


def test_late_transactions_wait_for_their_customer_and_are_released(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*.csv"}, transactions={"path": "tx_*.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    _write(landing, "tx_1.csv", TX + "T1,C1,2024-05-01,-1,card\nT2,C99,2024-05-02,-2,card\n", DAY1)
    first = ingest(cfg, "customers", "transactions")["transactions"]
    assert first.files[0].rows_quarantined == 1
    assert q("SELECT kind, released_at FROM quarantine.transactions") == [("orphan", None)]
    # C99's customer file arrives the next day: T2 goes into raw, its quarantine row says when
    _write(landing, "customers_new.csv", CUSTOMERS + "C99,5,mass\n", DAY2)
    second = ingest(cfg, "customers", "transactions")["transactions"]
    assert second.released == 1
    assert q("SELECT transaction_id, _source_file, _source_row FROM raw.transactions ORDER BY 1") == [
        ("T1", "tx_1.csv", 2), ("T2", "tx_1.csv", 3)]
    assert q("SELECT count(*) FROM quarantine.transactions WHERE released_at IS NOT NULL") == [(1,)]
    # read = loaded + quarantined + released, from the ledger
    assert q("SELECT rows_read, rows_loaded, rows_quarantined, rows_released FROM raw.deliveries "
             "WHERE table_name = 'transactions'") == [(2, 1, 1, 1)]
    assert q("SELECT count(*) FROM quarantine.transactions_parked") == [(0,)]


# ------------------------------------------------------------------------------------- files in flight
def test_a_file_still_being_written_is_not_read(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, {"settle_seconds": 3600}, customers={"path": "customers.csv"})
    _write(landing, "customers.csv", CUSTOMERS)  # just written: not settled
    report = ingest(cfg, "customers")["customers"]
    assert [f.status for f in report.files] == ["waiting"] and "still being written" in report.files[0].note
    assert q("SELECT count(*) FROM raw.customers") == [(0,)] and q("SELECT count(*) FROM raw.deliveries") == [(0,)]


def test_temporary_names_are_never_read(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    for name in ("customers.csv.part", "customers.csv.tmp", "customers.crdownload", "~$customers.xlsx",
                 ".customers.csv.swp"):
        _write(landing, name, b"\x00garbage", DAY1)
    report = ingest(cfg, "customers")["customers"]
    assert [f.path for f in report.files] == ["customers.csv"] and not report.errors


@pytest.mark.parametrize("marker", ["{name}.done", "_SUCCESS"])
def test_a_ready_marker_gates_the_read(tmp_path, bank, marker):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, {"settle_seconds": 3600, "ready_marker": marker}, customers={"path": "customers*"})
    _write(landing, "customers.csv", CUSTOMERS)
    assert [f.status for f in ingest(cfg, "customers")["customers"].files] == ["waiting"]
    (landing / marker.replace("{name}", "customers.csv")).touch()
    assert [f.status for f in ingest(cfg, "customers")["customers"].files] == ["loaded"]


def test_a_file_that_changes_while_it_is_read_is_skipped_this_run(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"})
    path = _write(landing, "customers.csv", CUSTOMERS, DAY1)

    def log(message: str) -> None:  # the export job appends while the pipeline reads the file
        if "reading customers.csv" in message:
            with open(path, "a") as f:
                f.write("C99,1,mass\n")

    (report,) = ingest(cfg, "customers", log=log)["customers"].files
    assert report.status == "changed"
    assert q("SELECT count(*) FROM raw.customers") == [(0,)]
    assert [f.status for f in ingest(cfg, "customers")["customers"].files] == ["loaded"]  # next run: whole
    assert q("SELECT count(*) FROM raw.customers") == [(21,)]


def test_an_archived_file_keeps_its_rows_and_only_a_never_delivered_table_fails(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"}, loans={"path": "loans.csv"})
    _write(landing, "customers.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers")
    (landing / "customers.csv").rename(tmp_path / "archive.csv")
    report = ingest(cfg, "customers", "loans")
    assert report["customers"].errors == [] and report["customers"].archived
    assert q("SELECT count(*) FROM raw.customers") == [(20,)]
    assert q("SELECT state, archived_at IS NOT NULL FROM raw.deliveries") == [("loaded", True)]
    assert "loans.csv: no file matches, and none ever did" in report["loans"].errors[0]


# ---------------------------------------------------------------------------------------- confinement
@pytest.mark.parametrize("glob", ["../outside.csv", "/etc/passwd", "sub/../../x.csv"])
def test_globs_that_leave_landing_are_refused_when_the_config_loads(tmp_path, glob):
    with pytest.raises(SourceConfigError, match=r"tables\.customers\[0\]\.path: .*(leaves the landing|absolute)"):
        load_source(_cfg(tmp_path, customers={"path": glob}))


def test_a_symlink_out_of_landing_is_not_read(tmp_path, bank):
    landing, ingest, q = bank
    secret = tmp_path / "secret.csv"
    secret.write_text(CUSTOMERS)
    (landing / "customers.csv").symlink_to(secret)
    report = ingest(_cfg(tmp_path, customers={"path": "customers*"}), "customers")["customers"]
    assert "outside the landing folder" in report.errors[0]
    assert q("SELECT count(*) FROM raw.customers") == [(0,)]


@pytest.mark.parametrize(("key", "sql"), [
    ("derive", {"income": "1; DROP TABLE raw.customers"}),
    ("derive", {"income": "(SELECT max(income) FROM raw.customers)"}),
    ("derive", {"income": "getenv('HOME')"}),
    ("joins", ["LEFT JOIN read_csv('/etc/passwd') p ON true"]),
    ("joins", ["LEFT JOIN raw.customers c ON true"]),
])
def test_sql_in_a_config_must_be_an_expression(tmp_path, key, sql):
    with pytest.raises(SourceConfigError, match=rf"tables\.customers\[0\]\.{key}"):
        load_source(_cfg(tmp_path, customers={"path": "c.csv", key: sql}))


# --------------------------------------------------------------------------------------- plausibility
def test_implausible_rows_are_quarantined_with_their_kind(tmp_path, bank):
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers.csv"}, transactions={"path": "transactions.csv"})
    _write(landing, "customers.csv", "customer_id,birth_date,age,joined_date,income\n"
           "C1,1980-01-02,44,2010-01-01,100\n"
           "C2,1900-01-01,,2010-01-01,100\n"      # placeholder birth date
           "C3,1980-01-02,44,1900-01-01,100\n"    # placeholder join date
           "C4,1980-01-02,12,2010-01-01,100\n"    # age does not match the birth date
           "TOTAL,,,,400\n"                        # a total line
           "*** END OF REPORT - 5 records ***,,,,\n", DAY1)
    _write(landing, "transactions.csv", TX + "T1,C1,2024-05-01,-1000000000000000,card\nT2,C1,2024-05-01,-5,card\n",
           DAY1)
    ingest(cfg, "customers", "transactions")
    got = dict(q("SELECT _source_row, reason FROM quarantine.customers"))
    assert q("SELECT customer_id FROM raw.customers") == [("C1",)]
    assert "birth_date: 1900-01-01 is before 1901-01-01, a placeholder" in got[3]
    assert "joined_date: 1900-01-01 is before 1901-01-01" in got[4]
    assert got[5] == "age: does not match birth_date"
    assert got[6].startswith("summary row") and got[7].startswith("summary row")
    assert q("SELECT kind FROM quarantine.customers WHERE _source_row IN (6, 7)") == [("summary",)] * 2
    (reason,) = q("SELECT reason FROM quarantine.transactions")[0]
    assert reason.startswith("amount: implausible, beyond ±1e+09")
    # a source whose amounts are in a small currency unit raises the bound in its config
    cfg2 = tmp_path / "b2.yaml"
    doc = yaml.safe_load(cfg.read_text())
    doc["plausibility"] = {"transactions": {"amount": {"max_abs": 1e16}}}
    cfg2.write_text(yaml.safe_dump(doc))
    assert load_source(cfg2).feeds["transactions"][0].plausibility == {"amount": {"max_abs": 1e16}}


def test_a_duplicated_header_name_rejects_the_file_naming_both_columns(tmp_path, bank):
    landing, ingest, q = bank
    _write(landing, "transactions.csv", "transaction_id,customer_id,transaction_date,amount,amount\n"
           "T1,C1,2024-05-01,-5,7\n", DAY1)
    report = ingest(_cfg(tmp_path, transactions={"path": "transactions.csv"}), "transactions")["transactions"]
    assert "columns 4 and 5 are both named 'amount'" in report.errors[0]
    assert q("SELECT count(*) FROM raw.transactions") == [(0,)]


def test_text_ids_keep_their_leading_zeros_in_excel_and_csv(tmp_path, bank):
    landing, ingest, q = bank
    wb = xlsxwriter.Workbook(str(landing / "customers.xlsx"))
    ws = wb.add_worksheet("customers")
    ws.write_row(0, 0, ["customer_id", "branch_code", "income"])
    ws.write_string(1, 0, "00123")
    ws.write_string(1, 1, "0042")
    ws.write_number(1, 2, 10)
    wb.close()
    os.utime(landing / "customers.xlsx", (DAY1.timestamp(), DAY1.timestamp()))
    _write(landing, "tx.csv", TX + "T1,00123,2024-05-01,-5,card\n", DAY1)
    ingest(_cfg(tmp_path, customers={"path": "customers.xlsx"}, transactions={"path": "tx.csv"}),
           "customers", "transactions")
    assert q("SELECT customer_id, branch_code FROM raw.customers") == [("00123", "0042")]
    assert q("SELECT customer_id FROM raw.transactions") == [("00123",)]


def test_a_last_line_without_a_line_break_is_quarantined_as_possibly_truncated(tmp_path, bank):
    landing, ingest, q = bank
    header = "transaction_id,customer_id,transaction_date,category,amount\n"
    _write(landing, "tx_a.csv", header + "T1,C1,2024-05-01,card,-5\nT2,C1,2024-05-02,card,4043", DAY1)  # of 4043.12
    _write(landing, "tx_b.csv", header + "T3,C1,2024-05-01,card,-5\nT4,C1,2024-05", DAY1)  # cut mid-field
    report = ingest(_cfg(tmp_path, transactions={"path": "tx_*.csv"}), "transactions")["transactions"]
    assert [f.rows_quarantined for f in report.files] == [1, 1]
    assert q("SELECT transaction_id FROM raw.transactions ORDER BY 1") == [("T1",), ("T3",)]
    assert q("SELECT _source_file, _source_row, kind, reason[:18] FROM quarantine.transactions ORDER BY 1") == [
        ("tx_a.csv", 3, "truncated", "possibly truncated"), ("tx_b.csv", 3, "truncated", "possibly truncated")]


# ----------------------------------------------------------------------------- messages: what and how
MARKER = "Zyxwvutsky"  # a surname nobody else has: it must never appear in a message


def test_a_column_shifted_file_quotes_no_customer_value(tmp_path, bank):
    landing, ingest, q = bank
    # a name slipped into the income column
    _write(landing, "customers.csv", f"customer_id,income,segment\nC1,{MARKER},mass\nC2,100,mass\n", DAY1)
    report = ingest(_cfg(tmp_path, customers={"path": "customers.csv"}), "customers")["customers"]
    reasons = q("SELECT reason FROM quarantine.customers")
    assert reasons == [("income: not a number",)]
    assert MARKER not in repr(report) and MARKER in q("SELECT record FROM quarantine.customers")[0][0]


def test_a_headerless_file_does_not_list_its_first_row(tmp_path, bank):
    landing, ingest, q = bank
    _write(landing, "customers.csv", f"C1,{MARKER},1980-01-02,5000\nC2,Dupont,1975-05-06,7000\n", DAY1)
    report = ingest(_cfg(tmp_path, customers={"path": "customers.csv"}), "customers")["customers"]
    (error,) = report.errors
    assert "required column 'customer_id'" in error and "looks like data, not a header" in error
    assert MARKER not in error and "Dupont" not in error


@pytest.mark.parametrize(("content", "expected"), [
    (gzip.compress(CUSTOMERS.encode()), "is gzip-compressed, not plain text: name it *.gz"),
    (b"PK\x03\x04" + b"\x00" * 40, "is a ZIP archive"),
    (CUSTOMERS.encode("utf-16"), "is UTF-16 text"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "is a PDF document"),
    (bytes(range(256)) * 4, "is a binary file"),
])
def test_what_a_file_really_is_is_said_with_what_to_set(tmp_path, bank, content, expected):
    landing, ingest, q = bank
    _write(landing, "customers.csv", content, DAY1)
    report = ingest(_cfg(tmp_path, customers={"path": "customers.csv"}), "customers")["customers"]
    assert expected in report.errors[0], report.errors


def test_a_gzipped_export_named_gz_and_a_bom_are_read(tmp_path, bank):
    landing, ingest, q = bank
    _write(landing, "customers.csv.gz", gzip.compress(CUSTOMERS.encode()), DAY1)
    _write(landing, "more.csv", "\ufeff" + CUSTOMERS.replace("C", "D"), DAY1)
    ingest(_cfg(tmp_path, customers=[{"path": "customers.csv.gz"}, {"path": "more.csv"}]), "customers")
    assert q("SELECT count(*) FROM raw.customers") == [(40,)]


def test_a_semicolon_file_read_as_commas_suggests_sep_and_decimal(tmp_path, bank):
    landing, ingest, q = bank
    _write(landing, "customers.csv", "customer_id;income\nC1;1234,50\n", DAY1)
    report = ingest(_cfg(tmp_path, customers={"path": "customers.csv"}), "customers")["customers"]
    assert 'Set `sep: ";"`' in report.errors[0] and '`decimal: ","`' in report.errors[0]


def test_row_numbers_after_a_multiline_field_are_the_editors(tmp_path, bank):
    landing, ingest, q = bank
    _write(landing, "customers.csv", 'customer_id,segment,income\nC1,"two\nlines",1\n\nC2,x,abc\nC3,"a\nb\nc",3\n'
           "C4,y,4\n", DAY1)
    ingest(_cfg(tmp_path, customers={"path": "customers.csv"}), "customers")
    assert q("SELECT customer_id, _source_row FROM raw.customers ORDER BY 1") == [("C1", 2), ("C3", 6), ("C4", 9)]
    assert q("SELECT _source_row FROM quarantine.customers") == [(5,)]


def test_delivered_at_drives_the_order_of_snapshots(tmp_path, bank):
    """A snapshot older than the current one (a late copy of last month's export) does not overwrite it."""
    landing, ingest, q = bank
    cfg = _cfg(tmp_path, customers={"path": "customers*.csv"})
    _write(landing, "customers_jun.csv", CUSTOMERS.replace("C1,1000,", "C1,2000,"), DAY2)
    ingest(cfg, "customers")
    _write(landing, "customers_may.csv", CUSTOMERS, DAY1)
    ingest(cfg, "customers")
    assert q("SELECT income FROM raw.customers WHERE customer_id = 'C1'") == [(2000.0,)]
    assert q("SELECT state FROM raw.deliveries WHERE source_file = 'customers_may.csv'") == [("superseded",)]

