"""Issue 5's proof through the real `scorehouse` CLI, as a user runs it:

  uninterrupted     generate a bank (with customer names and free text in it), run the whole pipeline while a
                    BI reader queries the serving file in a loop, then a second delivery scored and published
  killed            the same bank in a new home, SIGKILLed during ingest, features, training, scoring and
                    publish (SCOREHOUSE_KILL_AT: warehouse/failpoints.py), then run to the end: the same tables
  at once           two runs of one home started together: the second waits for the first
  sensitive         names and free text appear in no output, log, event metadata, alert or serving file
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.bi_reader import read_once
from tests.commands import SCOREHOUSE, clean_env
from tests.receivers import HttpReceiver
from warehouse.failpoints import POINTS

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[1]
READER = str(Path(__file__).with_name("bi_reader.py"))
MODEL_POINTS = ("registered", "approved")  # test_a_run_killed_between_training_and_promotion_promotes_nothing
MARKER = "Zephyrine-Quillfeather"  # a surname no code path would print by chance
# Columns that say when or by which run, not what: they differ between any two runs.
WHEN = {"_ingested_at", "ingested_at", "scored_at", "run_id", "measured_at", "trained_at", "artifact_path",
        "processed_at", "corrected_at", "released_at", "released_run_id", "first_built", "updated_at"}

# One row per run: a home whose runs were killed and rerun has more of them.
PER_RUN = {"ml.model_runs"}


def cli(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [SCOREHOUSE, *args] if args[0] == "generate" else [SCOREHOUSE, *args, "--home", str(home)]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(**(env or {})), cwd=ROOT, timeout=900)


def q(path: Path, sql: str):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _add_personal_columns(landing: Path) -> list[str]:
    """The bank's customers file also carries names and a free-text note, as real exports do."""
    path = landing / "customers.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["full_name"] = [f"Ana {MARKER}{i}" for i in range(len(frame))]
    frame["notes"] = [f"called about {MARKER} mortgage" for _ in range(len(frame))]
    frame.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    (landing / "_SUCCESS").touch()  # written again after the file, as the bank's export job does
    managers = pd.read_csv(landing / "managers.csv", dtype=str)
    return [MARKER, *managers["manager_name"].dropna().unique()]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    for name, customers, seed in (("landing", "800", "3"), ("second", "600", "4")):
        gen = cli("generate", "--customers", customers, "--seed", seed, "--out", str(root / name), home=root)
        assert gen.returncode == 0, gen.stderr
    names = _add_personal_columns(root / "landing")
    return root, names


@pytest.fixture(scope="module")
def uninterrupted(bank, tmp_path_factory):
    """Home A: a BI reader loops over serving.duckdb through a full run and a second delivery's scoring run."""
    root, _ = bank
    home = root / "A"
    from tests.conftest import _relax

    _relax(home)  # 800 customers are too few for the production gates; this is about reliability
    stop, seen = root / "stop-reader", root / "reader.jsonl"
    reader = subprocess.Popen([sys.executable, READER, str(home / "serving.duckdb"), str(stop), str(seen)])
    with HttpReceiver() as hook:
        env = {"SCOREHOUSE_ALERT_WEBHOOK_URL": hook.url()}
        first = cli("run", "--landing", str(root / "landing"), home=home, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        first_id = read_once(home / "serving.duckdb")["run_id"]
        snapshot = root / "A-after-first-run"
        snapshot.mkdir()
        shutil.copy(home / "warehouse.duckdb", snapshot / "warehouse.duckdb")
        shutil.copy(home / "serving.duckdb", snapshot / "serving.duckdb")
        second = cli("run", "--job", "score", "--landing", str(root / "second"), home=home, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        bodies = [json.dumps(b) for b in hook.bodies()]
    stop.touch()
    assert reader.wait(timeout=120) == 0
    reads = [json.loads(line) for line in seen.read_text().splitlines()]
    return {"home": home, "first": first, "second": second, "first_id": first_id, "snapshot": snapshot,
            "reads": reads, "alerts": bodies}


def test_generate_then_run_reconciles_every_file(bank, uninterrupted):
    root, _ = bank
    home, run = uninterrupted["snapshot"], uninterrupted["first"]
    assert "SUCCESS" in run.stdout and "BI:" in run.stdout
    files = {p.name: sum(1 for _ in p.open()) - 1 for p in (root / "landing").glob("*.csv")}
    for table in ("customers", "accounts", "transactions", "loans", "labels", "agencies", "managers", "products"):
        loaded, quarantined = q(home / "warehouse.duckdb", f"SELECT (SELECT count(*) FROM raw.{table}), "
                                                          f"(SELECT count(*) FROM quarantine.{table})")[0]
        assert loaded + quarantined == files[f"{table}.csv"], table
    assert q(home / "warehouse.duckdb", "SELECT count(*) FROM raw.customers") == [(800,)]
    # the run is recorded in the home's Dagster storage, so the UI shows it
    assert "telemetry" in (uninterrupted["home"] / "dagster" / "dagster.yaml").read_text()


def test_bi_reader_never_fails_and_never_sees_a_mix(uninterrupted):
    reads = uninterrupted["reads"]
    published = [r for r in reads if "run_id" in r]
    assert [r for r in reads if "error" in r] == []
    assert published and all(r["ok"] for r in published), [r for r in published if not r["ok"]][:3]
    # it read before the first publish, between the two, and after the second: two swaps seen whole
    second_id = read_once(uninterrupted["home"] / "serving.duckdb")["run_id"]
    runs = [r["run_id"] for r in published]
    assert reads[0].get("absent") and uninterrupted["first_id"] in runs and runs[-1] == second_id
    assert runs.index(second_id) > runs.index(uninterrupted["first_id"])
    assert all(r["tables"] >= 10 for r in published)


@pytest.fixture(scope="module")
def killed(bank, uninterrupted):
    """Home K: one run killed at each point in turn, then a run to the end, then a publish killed again."""
    root, _ = bank
    home = root / "K"
    from tests.conftest import _relax

    _relax(home)
    landing = str(root / "landing")
    runs, serving_after = {}, {}
    for point in ("ingest", "features", "training", "scoring"):
        runs[point] = cli("run", "--landing", landing, home=home, env={"SCOREHOUSE_KILL_AT": point})
        serving_after[point] = read_once(home / "serving.duckdb")
    runs["complete"] = cli("run", "--landing", landing, home=home)
    served = read_once(home / "serving.duckdb")
    runs["publish"] = cli("run", "--landing", landing, home=home, env={"SCOREHOUSE_KILL_AT": "publish"})
    serving_after["publish"] = read_once(home / "serving.duckdb")
    return {"home": home, "runs": runs, "served": served, "serving_after": serving_after}


def test_each_kill_point_was_reached(killed):
    for point in (p for p in POINTS if p not in MODEL_POINTS):
        run = killed["runs"][point]
        assert run.returncode == -9, f"{point}: exit {run.returncode}\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
    assert killed["runs"]["complete"].returncode == 0, killed["runs"]["complete"].stdout


def _tables(path: Path) -> dict[str, list[str]]:
    rows = q(path, "SELECT table_schema || '.' || table_name, list(column_name ORDER BY ordinal_position) "
                   "FROM information_schema.columns WHERE table_schema IN ('raw', 'quarantine', 'features', 'scores', "
                   "'ml') GROUP BY 1 ORDER BY 1")
    return {t: [c for c in cols if c not in WHEN] for t, cols in rows}


def _differences(a: Path, b: Path) -> dict[str, int]:
    """Rows in one and not the other (as multisets), per table."""
    out = {}
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        types = dict(((t, c), ty) for t, c, ty in con.execute(
            "SELECT table_schema || '.' || table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = 'a'").fetchall())
        for table, cols in _tables(a).items():
            if table in PER_RUN:
                continue
            # doubles as FLOAT (~7 digits): the last bit of a sum may differ between two runs of the same math
            sel = ", ".join(f'"{c}"::FLOAT' if types[(table, c)] == "DOUBLE" else f'"{c}"' for c in cols)
            n = con.execute(f"SELECT (SELECT count(*) FROM (SELECT {sel} FROM a.{table} EXCEPT ALL "
                            f"SELECT {sel} FROM b.{table})) + (SELECT count(*) FROM (SELECT {sel} FROM b.{table} "
                            f"EXCEPT ALL SELECT {sel} FROM a.{table}))").fetchone()[0]
            if n:
                out[table] = n
    return out


def test_killed_runs_then_a_rerun_equal_an_uninterrupted_run(uninterrupted, killed):
    a, k = uninterrupted["snapshot"] / "warehouse.duckdb", killed["home"] / "warehouse.duckdb"
    assert _tables(a) == _tables(k)
    assert _differences(a, k) == {}
    # no duplicate rows anywhere a key exists: history holds one set per snapshot and version
    for m in ("churn", "segments", "credit_risk", "clv"):
        assert q(k, f"SELECT count(*) - count(DISTINCT (customer_id, snapshot_date, model_version)) "
                    f"FROM scores.{m}_history") == [(0,)], m
    assert q(k, "SELECT count(*) FROM ml.model_registry WHERE alias NOT IN ('champion')") == [(0,)]
    # the serving file holds the same rows as the uninterrupted run's
    served_a = q(uninterrupted["snapshot"] / "serving.duckdb", "SELECT table_name, row_count FROM manifest ORDER BY 1")
    assert q(killed["home"] / "serving.duckdb", "SELECT table_name, row_count FROM manifest ORDER BY 1") == served_a


def test_serving_file_stays_whole_and_readable_through_every_kill(killed):
    after = killed["serving_after"]
    assert all(after[p].get("absent") for p in ("ingest", "features", "training", "scoring"))  # nothing yet
    assert killed["served"]["ok"]
    # the publish killed before its swap left the previous file served, whole
    assert after["publish"]["ok"] and after["publish"]["run_id"] == killed["served"]["run_id"]
    leftovers = [p.name for p in (killed["home"] / "serving").iterdir() if not p.name.endswith(".duckdb")]
    assert leftovers == [n for n in leftovers if n.endswith(".tmp")] and len(leftovers) <= 1


def test_two_runs_of_one_home_at_once_run_one_after_the_other(bank, killed):
    root, _ = bank
    home = killed["home"]
    cmd = [SCOREHOUSE, "run", "--job", "ingest", "--landing", str(root / "landing"), "--home", str(home)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("waiting for run" in err for _, err in outs) == 1, [err[-1500:] for _, err in outs]
    assert q(home / "warehouse.duckdb", "SELECT count(*), count(DISTINCT customer_id) FROM raw.customers") == [(800, 800)]


def _event_text(home: Path) -> str:
    """Every event of every run in the home's Dagster storage: messages, metadata, errors."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_run_records()
            return "\n".join(str(r.event_log_entry) for run in runs
                             for r in instance.get_records_for_run(run.dagster_run.run_id, limit=100_000).records)
    finally:
        del os.environ["DAGSTER_HOME"]


def test_names_and_free_text_appear_in_no_log_metadata_alert_or_serving_file(bank, uninterrupted):
    _, names = bank
    home = uninterrupted["home"]
    assert q(uninterrupted["snapshot"] / "warehouse.duckdb",
             f"SELECT count(*) FROM raw.customers WHERE full_name LIKE '%{MARKER}%'") == [(800,)]  # they were loaded
    texts = {"output": "".join(r.stdout + r.stderr for r in (uninterrupted["first"], uninterrupted["second"])),
             "events": _event_text(home), "alerts": "\n".join(uninterrupted["alerts"])}
    assert len(texts["events"]) > 100_000  # the whole event log, metadata previews included
    for where, text in texts.items():
        leaked = [n for n in names if n in text]
        assert leaked == [], f"{where}: {leaked[:5]}"
    files = [home / "serving.duckdb", *home.joinpath("exports").rglob("*.parquet"),
             *home.joinpath("dagster").rglob("*.log"), *home.joinpath("dagster").rglob("*.out"),
             *home.joinpath("dagster").rglob("*.err")]
    for f in files:
        data = f.read_bytes()
        assert not [n for n in names if n.encode() in data], f


def test_docs_bi_recipes_and_ready_sql_work_on_a_published_file(uninterrupted):
    import re

    home = uninterrupted["home"]
    doc = (ROOT / "docs" / "bi.md").read_text().replace("/absolute/path/.scorehouse", str(home))
    doc = doc.replace(".scorehouse/", f"{home}/")
    sqls = re.findall(r"```sql\n(.*?)```", doc, re.S)
    assert len(sqls) >= 6
    with duckdb.connect(str(home / "serving.duckdb"), read_only=True) as con:
        for sql in sqls:
            assert con.execute(sql).fetchall(), sql
    python = re.findall(r"```python\n(.*?)```", doc, re.S)
    found = {}
    for code in python:  # the Python and the SQLAlchemy (duckdb-engine) recipes, as written
        exec(code, found)
    assert len(found["top"]) == 20 and ("scores.churn",) in {(t,) for t, _ in found["rows"]}


def test_rollback_serves_the_previous_publish_again(uninterrupted):
    home = uninterrupted["home"]  # last in this module: the tests above read the newest publish
    listed = cli("rollback", "--list", home=home)
    assert listed.returncode == 0 and listed.stdout.count(".duckdb") == 2 and listed.stdout.startswith(" ")
    back = cli("rollback", home=home)
    assert back.returncode == 0, back.stderr
    assert read_once(home / "serving.duckdb")["run_id"] == uninterrupted["first_id"]
    assert uninterrupted["first_id"] in back.stdout and "scores.churn" in back.stdout
    again = cli("rollback", home=home)
    assert again.returncode == 1 and "no earlier serving version" in again.stderr


def test_a_run_killed_between_training_and_promotion_leaves_nothing_promotable(bank, killed):
    """Killed after registering a challenger, then after its gate approved one: neither is ever promoted; the
    next run marks both abandoned and promotes its own. (Last in this module: it adds versions to home K.)"""
    root, _ = bank
    home = killed["home"]
    landing = str(root / "landing")

    def churn() -> list[tuple]:
        return q(home / "warehouse.duckdb", "SELECT version, alias FROM ml.model_registry WHERE model = 'churn' "
                                            "ORDER BY version")

    (champion, _), = [r for r in churn() if r[1] == "champion"]
    for point, left in zip(MODEL_POINTS, ("challenger", "approved"), strict=True):
        run = cli("run", "--job", "train_churn", "--landing", landing, home=home, env={"SCOREHOUSE_KILL_AT": point})
        assert run.returncode == -9, run.stdout[-2000:] + run.stderr[-2000:]
        assert churn()[-1][1] == left and (champion, "champion") in churn()
    run = cli("run", "--job", "train_churn", "--landing", landing, home=home)
    assert run.returncode == 0, run.stdout[-3000:]
    versions = churn()
    assert [a for _, a in versions[-3:]] == ["abandoned", "abandoned", "champion"], versions
    assert (champion, "retired") in versions
