"""Issue 11's proof through the real `scorehouse` CLI: four days of deliveries as a bank's export jobs send them.

  day 1  the full delivery (10 customers are not in it yet)
  day 2  a changed customer snapshot under a new name; transactions of the 10 customers who are not delivered yet
  day 3  those customers arrive; accounts.csv re-sent cut in half; a transactions file still being copied
  day 4  the copy is complete; day 1's transactions file is moved out of landing (archived)

After each day: current and historical rows, features as of that day, the state of every delivery, the counts
reconcile, exactly one alert per held delivery on a real webhook, and nothing of the last good state is lost.
A last test: a column-shifted file and a headerless file put no customer's value in any output, log or alert.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from tests.commands import SCOREHOUSE, clean_env
from tests.receivers import HttpReceiver
from warehouse import features as F

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[1]
DAYS = [datetime(2026, 7, d, 5, 30) for d in (1, 2, 3, 4)]
TABLES = {"customers": "customers*.csv", "agencies": "agencies.csv", "managers": "managers.csv",
          "products": "products.csv", "accounts": "accounts.csv", "loans": "loans.csv", "labels": "labels.csv",
          "transactions": "transactions_*.csv"}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCOREHOUSE, *args], capture_output=True, text=True, env=clean_env(**(env or {})),
                          cwd=ROOT, timeout=900)


def q(home: Path, sql: str):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def deliver(landing: Path, name: str, frame: pd.DataFrame, at: datetime | None) -> None:
    """Write a file as the bank's export job does; `at` is when (None: right now, still being written)."""
    path = landing / name
    frame.to_csv(path, index=False)
    if at is not None:
        os.utime(path, (at.timestamp(), at.timestamp()))


def config(root: Path, day: datetime) -> Path:
    path = root / "bank.yaml"
    path.write_text(yaml.safe_dump({
        "name": "dailybank", "snapshot": {"date": day.date().isoformat()},
        # a file modified within the last hour is taken to be still in flight: only the one being copied is
        "delivery": {"settle_seconds": 3600}, "tables": {t: {"path": g} for t, g in TABLES.items()}}))
    return path


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliveries")
    gen, landing, home = root / "gen", root / "landing", root / "home"
    assert cli("generate", "--customers", "1000", "--seed", "11", "--out", str(gen)).returncode == 0
    landing.mkdir()
    read = {t: pd.read_csv(gen / f"{t}.csv", dtype=str, keep_default_na=False) for t in TABLES}
    customers, tx = read["customers"], read["transactions"]
    late = set(customers["customer_id"].iloc[-10:])
    changed = customers["customer_id"].iloc[:10].tolist()  # 1% of the customers change their income on day 2
    early = customers[~customers["customer_id"].isin(late)]
    for t in ("agencies", "managers", "products", "accounts", "loans", "labels"):
        frame = read[t]
        if "customer_id" in frame:
            frame = frame[~frame["customer_id"].isin(late)]
        deliver(landing, f"{t}.csv", frame, DAYS[0])
    deliver(landing, "customers.csv", early, DAYS[0])
    deliver(landing, "transactions_2026-07-01.csv", tx[~tx["customer_id"].isin(late)], DAYS[0])
    day2 = early.copy()
    day2.loc[day2["customer_id"].isin(changed), "income"] = "123456.0"
    extra = tx[~tx["customer_id"].isin(late)].iloc[:200].copy()
    extra["transaction_id"] = [f"X{i:06d}" for i in range(len(extra))]
    accounts = read["accounts"][~read["accounts"]["customer_id"].isin(late)]

    steps = {}
    with HttpReceiver() as hook:
        env = {"SCOREHOUSE_ALERT_WEBHOOK_URL": hook.url()}

        def run(name: str, day: datetime) -> None:
            n = len(hook.received)
            result = cli("run", "--source", str(config(root, day)), "--landing", str(landing), "--home", str(home),
                         "--job", "features", env=env)
            with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
                seen = {"customers": {r[0] for r in con.execute(
                            "SELECT customer_id FROM raw.customers_history").fetchall()},
                        "transactions": {r[0] for r in con.execute(
                            "SELECT transaction_id FROM raw.transactions UNION ALL "
                            "SELECT json_extract_string(record, '$.transaction_id') FROM quarantine.transactions"
                        ).fetchall()}}
            shutil.copy(home / "warehouse.duckdb", root / f"{name}.duckdb")
            steps[name] = {"run": result, "alerts": hook.bodies()[n:], "seen": seen, "db": root / f"{name}.duckdb"}

        run("day1", DAYS[0])
        deliver(landing, "customers_2026-07-02.csv", day2, DAYS[1])
        deliver(landing, "transactions_2026-07-02.csv", tx[tx["customer_id"].isin(late)], DAYS[1])
        run("day2", DAYS[1])
        deliver(landing, "customers_2026-07-03.csv", pd.concat([day2, customers[customers["customer_id"].isin(late)]]),
                DAYS[2])
        deliver(landing, "accounts.csv", accounts.iloc[: len(accounts) // 2], DAYS[2])  # cut in half, same name
        deliver(landing, "transactions_2026-07-03.csv", extra.iloc[:100], None)  # still being copied
        run("day3", DAYS[2])
        run("day3_again", DAYS[2])
        deliver(landing, "transactions_2026-07-03.csv", extra, DAYS[3])
        (landing / "transactions_2026-07-01.csv").rename(root / "archived.csv")
        run("day4", DAYS[3])
    return {"home": home, "steps": steps, "late": late, "changed": changed, "accounts": len(accounts),
            "tx": tx, "root": root}


def test_every_day_runs_and_the_held_or_waiting_files_do_not_fail_it(days):
    for name, step in days["steps"].items():
        assert step["run"].returncode == 0, (name, step["run"].stdout[-3000:], step["run"].stderr[-3000:])
    day3 = days["steps"]["day3"]["run"]
    # the half-copied file is named in a warning on the terminal, and not read
    assert "transactions_2026-07-03.csv not read this run" in day3.stderr + day3.stdout


def test_day2_a_changed_snapshot_under_a_new_name_is_current_and_history_kept(days):
    db, changed = days["steps"]["day2"]["db"], days["changed"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.customers").fetchone()[0] == 990
        assert con.execute(f"SELECT count(*) FROM raw.customers WHERE income = 123456 AND customer_id IN "
                           f"({', '.join(repr(c) for c in changed)})").fetchone()[0] == 10
        assert con.execute("SELECT count(*) FROM raw.customers_history WHERE _valid_to = TIMESTAMP "
                           f"'{DAYS[1]:%Y-%m-%d %H:%M:%S}'").fetchone()[0] == 10
        assert con.execute("SELECT source_file, state FROM raw.deliveries WHERE table_name = 'customers' "
                           "ORDER BY delivered_at").fetchall() == [
            ("customers.csv", "superseded"), ("customers_2026-07-02.csv", "loaded")]
        # features as of day 2 (this run) see the new income
        assert con.execute("SELECT count(*) FROM features.customer_features WHERE income = 123456").fetchone()[0] \
            == 10
    # and features rebuilt as of day 1 on the same warehouse see the income as it was then (point in time)
    copy = days["root"] / "asof-day1.duckdb"
    shutil.copy(db, copy)
    with duckdb.connect(str(copy)) as con:
        F.build_all(con, date(2026, 7, 1))
        assert con.execute("SELECT count(*) FROM features.customer_features WHERE income = 123456").fetchone()[0] == 0
        assert con.execute("SELECT max(snapshot_date) FROM features.customer_features").fetchone()[0] == date(2026, 7, 1)


def test_day2_transactions_of_customers_not_yet_delivered_wait_in_quarantine(days):
    db = days["steps"]["day2"]["db"]
    n_late = int(days["tx"]["customer_id"].isin(days["late"]).sum())
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM quarantine.transactions WHERE kind = 'orphan' AND released_at "
                           "IS NULL").fetchone()[0] == n_late > 0
        assert con.execute("SELECT count(*) FROM quarantine.transactions_parked").fetchone()[0] == n_late


def test_day3_late_customers_release_their_transactions(days):
    db = days["steps"]["day3"]["db"]
    late = ", ".join(repr(c) for c in days["late"])
    n_late = int(days["tx"]["customer_id"].isin(days["late"]).sum())
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM raw.transactions WHERE customer_id IN ({late})").fetchone()[0] \
            == n_late
        assert con.execute("SELECT count(*) FROM quarantine.transactions WHERE released_at IS NOT NULL") \
            .fetchone()[0] == n_late
        # read = loaded + already held + quarantined per delivery, and its released rows are counted too
        for read, loaded, skipped, quarantined, released, file in con.execute(
                "SELECT rows_read, rows_loaded, rows_skipped, rows_quarantined, rows_released, source_file "
                "FROM raw.deliveries WHERE state IN ('loaded', 'superseded')").fetchall():
            assert read == loaded + skipped + quarantined, file
            assert released <= quarantined, file
        assert con.execute("SELECT rows_released FROM raw.deliveries WHERE source_file = "
                           "'transactions_2026-07-02.csv'").fetchone()[0] == n_late
        # the late customers who had joined by day 3 are in the features as of day 3
        joined = con.execute(f"SELECT count(*) FROM raw.customers WHERE customer_id IN ({late}) "
                             "AND joined_date <= DATE '2026-07-03'").fetchone()[0]
        assert con.execute(f"SELECT count(*) FROM features.customer_features WHERE customer_id IN ({late})"
                           ).fetchone()[0] == joined > 0


def test_day3_a_truncated_resend_is_held_and_alerted_exactly_once(days):
    steps, n = days["steps"], days["accounts"]
    with duckdb.connect(str(steps["day3"]["db"]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.accounts").fetchone()[0] == n  # the last good state
        assert con.execute("SELECT state, rows_read FROM raw.deliveries WHERE table_name = 'accounts' "
                           "ORDER BY processed_at").fetchall() == [("loaded", n), ("held", n // 2)]
    held = [a for s in ("day1", "day2", "day3", "day3_again", "day4") for a in steps[s]["alerts"]
            if a["kind"] == "delivery_held"]
    assert len(held) == 1 and "accounts.csv" in held[0]["title"]
    assert f"{n // 2:,} rows read" in held[0]["text"] and "scorehouse deliveries accept" in held[0]["text"]
    assert "✗ raw/accounts delivery_guard" in steps["day3"]["run"].stdout
    listing = cli("deliveries", "list", "--home", str(days["home"]))
    assert listing.returncode == 0 and "accounts.csv" in listing.stdout and "held" in listing.stdout


def test_day3_a_half_copied_file_waits_and_day4_reads_it_whole(days):
    steps = days["steps"]
    with duckdb.connect(str(steps["day3"]["db"]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.deliveries WHERE source_file = "
                           "'transactions_2026-07-03.csv'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM raw.transactions WHERE transaction_id LIKE 'X%'").fetchone()[0] == 0
    with duckdb.connect(str(steps["day4"]["db"]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.transactions WHERE transaction_id LIKE 'X%'").fetchone()[0] == 200


def test_day4_an_archived_file_keeps_its_rows(days):
    with duckdb.connect(str(days["steps"]["day4"]["db"]), read_only=True) as con:
        assert con.execute("SELECT state, archived_at IS NOT NULL FROM raw.deliveries WHERE source_file = "
                           "'transactions_2026-07-01.csv'").fetchall() == [("loaded", True)]
        n = con.execute("SELECT rows_loaded FROM raw.deliveries WHERE source_file = 'transactions_2026-07-01.csv'"
                        ).fetchone()[0]
        assert con.execute("SELECT count(*) FROM raw.transactions WHERE _source_file = "
                           "'transactions_2026-07-01.csv'").fetchone()[0] == n > 0


def test_nothing_of_the_last_good_state_is_lost_on_any_day(days):
    steps = [days["steps"][s]["seen"] for s in ("day1", "day2", "day3", "day3_again", "day4")]
    for before, after in zip(steps, steps[1:], strict=False):
        for table in ("customers", "transactions"):
            assert before[table] <= after[table], table


def test_accepting_the_held_delivery_loads_it(days):
    home = days["root"] / "accepted"
    shutil.copytree(days["home"], home)
    out = cli("deliveries", "accept", "accounts.csv", "--home", str(home))
    assert out.returncode == 0 and "the next run loads it" in out.stdout
    assert cli("deliveries", "accept", "nothing.csv", "--home", str(home)).returncode == 1


MARKER = "Zyxwvutsky"


def test_no_customer_value_in_any_output_log_or_alert(tmp_path):
    """A column-shifted customer file (a surname in income) and a headerless loans file (its first row a
    customer's): the run fails on the headerless file and quarantines the shifted row, and the surname appears
    in no terminal output, Dagster event log or compute log, or alert; only in the warehouse's quarantine."""
    landing, home = tmp_path / "landing", tmp_path / "home"
    landing.mkdir()
    then = time.time() - 3600
    (landing / "customers.csv").write_text(f"customer_id,income,segment\nC1,{MARKER},mass\nC2,100,mass\n")
    (landing / "loans.csv").write_text(f"L1,C1,{MARKER} Jean,2024-01-01,5000\n")
    for p in landing.iterdir():
        os.utime(p, (then, then))
    cfg = tmp_path / "bank.yaml"
    cfg.write_text(yaml.safe_dump({"name": "leaky", "tables": {"customers": {"path": "customers.csv"},
                                                               "loans": {"path": "loans.csv"}}}))
    with HttpReceiver() as hook:
        run = cli("run", "--source", str(cfg), "--landing", str(landing), "--home", str(home), "--job", "ingest",
                  env={"SCOREHOUSE_ALERT_WEBHOOK_URL": hook.url()})
        bodies = [str(b) for b in hook.bodies()]
    assert run.returncode == 1 and "loans.csv" in run.stdout + run.stderr
    assert "looks like data, not a header" in run.stdout + run.stderr
    assert any(b for b in bodies)  # the run failure was alerted ...
    assert all(MARKER not in b for b in bodies)  # ... without the value
    assert MARKER not in run.stdout + run.stderr
    for path in (home / "dagster").rglob("*"):  # event logs (SQLite) and compute logs
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
    assert MARKER.encode() not in (home / "alerts.sqlite").read_bytes()
    assert q(home, "SELECT reason FROM quarantine.customers") == [("income: not a number",)]


def _namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "--map-root-user", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces(), reason="needs `unshare --mount --map-root-user` to mount a small or "
                                                "read-only file system for the home without privileges")
def test_a_full_disk_or_a_read_only_home_is_one_line_and_the_next_run_converges(tmp_path):
    """The home on a 600 kB file system (full at once), then on 300 MB: one line naming the home and the cause,
    exit 1, then the same run succeeds. Then the home's file system read-only: one line, exit 1."""
    landing, mnt = tmp_path / "landing", tmp_path / "mnt"
    assert cli("generate", "--customers", "200", "--seed", "3", "--out", str(landing)).returncode == 0
    mnt.mkdir()
    home = mnt / "home"
    run = f"{SCOREHOUSE} run --landing {landing} --home {home} --job ingest"
    script = f"""
        mount -t tmpfs -o size=600k tmpfs {mnt}
        {run} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        mount -o remount,size=300m {mnt}
        {run} > {tmp_path}/again.out 2> {tmp_path}/again.err; echo $? > {tmp_path}/again.rc
        mount -o remount,ro {mnt}
        {run} > {tmp_path}/ro.out 2> {tmp_path}/ro.err; echo $? > {tmp_path}/ro.rc
    """
    subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], env=clean_env(), cwd=ROOT, timeout=900,
                   check=True)

    def result(name: str) -> tuple[int, str, str]:
        return (int((tmp_path / f"{name}.rc").read_text()), (tmp_path / f"{name}.out").read_text(),
                (tmp_path / f"{name}.err").read_text())

    rc, out, err = result("full")
    assert rc == 1 and err.strip() == (f"error: no space left on the device holding {home}: free some space, then "
                                       "run again (the next run continues from the last committed state)"), err
    assert "Traceback" not in out + err
    rc, out, err = result("again")
    assert rc == 0 and "SUCCESS" in out, out + err
    rc, out, err = result("ro")
    assert rc == 1 and err.strip().startswith(f"error: {home} is on a read-only file system"), err
    assert "Traceback" not in out + err
