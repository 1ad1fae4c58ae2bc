"""The iceberg backend through the CLI as a user runs it: `scorehouse run --backend iceberg ... --shards 4
--executor multiprocess` (the embedded run on the DuckDB file's sample, publishing nothing, then job `lake`), its
scoring shard steps SIGKILLed mid-write, a second lake run's feature shard steps too, the daily scoring's (job
score, then job lake) converging to the embedded run's feature tables and scored tables row for row, published
from the lake, and a past snapshot date backfilled into the history (a first attempt killed while scoring: BI
keeps the last good publish)."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.models import SPECS
from assets.settings import source_config
from orchestration.home import open_instance
from tests.commands import SCOREHOUSE, clean_env
from tests.lakes import assert_same, frame, new_lake
from warehouse import features as F
from warehouse import shard_features as S
from warehouse import shard_scores as SS
from warehouse.db import Home, connect
from warehouse.lake import Lake
from warehouse.synthetic import generate_bank

pytestmark = pytest.mark.e2e


def _cli(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCOREHOUSE, *args, "--home", str(home)], capture_output=True, text=True,
                          env=clean_env(**(env or {})), timeout=900)


def _manifest_runs(home: Path) -> set[str]:
    with connect(Home.resolve(home).serving, read_only=True) as srv:
        return {r[0] for r in srv.execute("SELECT run_id FROM manifest").fetchall()}


KEYS = {"recommendations": ["customer_id", "rank"], "fraud": ["transaction_id"]}
RUN_COLUMNS = ["scored_at", "run_id"]  # when and by which run: the only columns that differ


def _scores(frame, name):
    frame = frame.drop(columns=RUN_COLUMNS).assign(snapshot_date=lambda f: pd.to_datetime(f["snapshot_date"]))
    return frame.sort_values(KEYS.get(name, ["customer_id"])).reset_index(drop=True)


def test_lake_job_on_four_shards_survives_killed_shard_steps_and_equals_the_embedded_run(postgres_url, tmp_path,
                                                                                        relax_gates):
    landing, home = tmp_path / "landing", tmp_path / "home"
    generate_bank(landing, customers=1500, seed=5, manager_effect=1)
    location = new_lake(postgres_url, "lake_e2e", tmp_path / "lake")
    relax_gates(home)
    flags = ["--backend", "iceberg", "--catalog", location.catalog, "--warehouse", location.warehouse,
             "--shards", "4", "--executor", "multiprocess"]

    early = _cli("run", "--job", "lake", *flags, home=home)
    assert early.returncode == 2 and "run `scorehouse run --job ingest` first" in early.stderr, early.stderr
    # the whole run on the embedded file (ingest, features, models, scores, publish), then the lake's, whose
    # scoring shard steps are SIGKILLed mid-write
    first = _cli("run", "--landing", str(landing), *flags, home=home, env={"SCOREHOUSE_KILL_AT": "lake_score"})
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Then the lake (warehouse.backend iceberg): job 'lake'" in first.stdout
    assert first.stdout.count("Run ") >= 2 and "SUCCESS" in first.stdout  # the embedded run succeeded
    # it trained and scored the DuckDB file's sample (here every customer: fewer than
    # warehouse.lake.sample_customers) and published nothing: BI's file comes from the lake only, and its run failed
    assert "Published: by job lake" in first.stdout and not Home.resolve(home).serving.exists()
    with connect(Home.resolve(home).warehouse, read_only=True) as con:
        snap = F.resolve_snapshot(con, source_config("synthetic").snapshot_date, source_config("synthetic").holdout_days)
        expected = {t: frame(con, t) for t in S.FEATURE_TABLES}
        scored = {s.name: _scores(con.execute(f"SELECT * FROM scores.{s.name}").df(), s.name)
                  for s in SPECS if s.per_customer}

    bad = _cli("run", "--job", "lake", "--partition", "2026-13-01", *flags, home=home)
    assert bad.returncode == 2 and "expected a snapshot date, YYYY-MM-DD" in bad.stderr, bad.stderr
    killed = _cli("run", "--job", "lake", *flags, home=home, env={"SCOREHOUSE_KILL_AT": "lake_shard"})
    assert killed.returncode == 1, killed.stdout[-3000:] + killed.stderr[-3000:]  # the feature shards this time
    assert not Home.resolve(home).serving.exists()  # nothing half written reached BI
    # the daily scoring (job score): the DuckDB file's sample with the champions, then job lake for everyone
    rerun = _cli("run", "--job", "score", "--landing", str(landing), *flags, home=home)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    scoring, lake_part = rerun.stdout.split("Then the lake (warehouse.backend iceberg): job 'lake'")
    assert "Published: by job lake" in scoring and "ml/" not in scoring  # no training
    assert f"Lake tables for {snap} in " in lake_part and "Tables in" not in lake_part  # the lake's, not the file's
    churn_line = next(line.split() for line in lake_part.splitlines() if line.strip().startswith("scores.churn "))

    lake = Lake(location)
    with connect(tmp_path / "read.duckdb") as con:
        S.load_features(con, lake, None, snap)
        for t in S.FEATURE_TABLES:
            assert_same(expected[t], frame(con, t), t)
    with connect(Home.resolve(home).serving, read_only=True) as srv:
        for name, rows in scored.items():
            in_lake = _scores(SS.read_scores(lake, name, snap), name)
            assert_same(rows, in_lake, f"scores.{name}")
            assert set(lake.shard_counts(f"scores.{name}")) == {0, 1, 2, 3}, name
            if name == "churn":
                assert churn_line == ["scores.churn", f"{len(in_lake):,}"]
            served = _scores(srv.execute(f"SELECT * FROM scores.{name}").df().assign(scored_at=0, run_id=""), name)
            assert_same(in_lake[served.columns], served, f"serving scores.{name}")  # its shareable columns
        (run_id,), = srv.execute("SELECT DISTINCT run_id FROM manifest").fetchall()

    # a past snapshot date backfilled: its scores join the history, the current ones stay the newest date's; a
    # first attempt whose scoring shard steps are killed leaves BI reading the last good publish
    past = snap - timedelta(days=28)
    published = _manifest_runs(home)
    backfill = _cli("run", "--job", "lake", "--partition", past.isoformat(), *flags, home=home,
                    env={"SCOREHOUSE_KILL_AT": "lake_score"})
    assert backfill.returncode == 1 and _manifest_runs(home) == published == {run_id}, backfill.stdout[-3000:]
    backfill = _cli("run", "--job", "lake", "--partition", past.isoformat(), *flags, home=home)
    assert backfill.returncode == 0, backfill.stdout[-3000:] + backfill.stderr[-3000:]
    assert len(SS.read_scores(lake, "fraud", past)) == 0  # fraud scores the latest transactions, not a past date
    with connect(Home.resolve(home).serving, read_only=True) as srv:
        current = srv.execute("SELECT DISTINCT snapshot_date::DATE FROM scores.churn").fetchall()
        dates = srv.execute("SELECT snapshot_date::DATE, count(*) FROM scores.churn_history GROUP BY 1 ORDER BY 1"
                            ).fetchall()
    assert current == [(snap,)] and [d for d, _ in dates] == [past, snap], (current, dates)
    assert dates[0][1] == len(SS.read_scores(lake, "churn", past)) > 0

    housekeeping = _cli("run", "--job", "lake_maintenance", *flags, home=home)  # nothing a week old yet
    assert housekeeping.returncode == 0, housekeeping.stdout[-3000:] + housekeeping.stderr[-3000:]
    assert set(lake.shard_counts("scores.churn")) == {0, 1, 2, 3}

    with open_instance(Home.resolve(home).dagster_home, say=lambda m: None) as instance:
        backfilled, backfill_killed, good_run, features_killed, scores_killed = instance.get_runs(
            dg.RunsFilter(job_name="lake"))
        assert backfilled.tags["dagster/partition"] == backfill_killed.tags["dagster/partition"] == past.isoformat()
        assert good_run.status == dg.DagsterRunStatus.SUCCESS and run_id == good_run.run_id, good_run.status
        for run, step in ((features_killed, "lake__features.lake_shard["),
                          (scores_killed, "lake__scores.lake_score_shard["),
                          (backfill_killed, "lake__scores.lake_score_shard[")):
            assert run.status == dg.DagsterRunStatus.FAILURE
            failed = {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)}
            assert failed and all(k.startswith(step) for k in failed), failed  # killed mid-write
        assert good_run.tags["dagster/partition"] == snap.isoformat()  # the snapshot the warehouse's data gives

        def shard_lines(run) -> list[str]:
            return [e.user_message for e in instance.all_logs(run.run_id)
                    if (e.step_key or "").startswith("lake__features.lake_shard[") and "raw parts written" in
                    e.user_message]
        # each shard's step exported its part of the raw tables (read side by side from the DuckDB file); later
        # runs found them as written from the same rows
        assert sum("raw.transactions " in m for m in shard_lines(scores_killed)) == 4, shard_lines(scores_killed)
        assert sum("raw parts written: none (unchanged)" in m for m in shard_lines(good_run)) == 4
        starts = instance.all_logs(good_run.run_id, of_type=dg.DagsterEventType.STEP_START)
        for step in ("lake__features.lake_shard[", "lake__scores.lake_score_shard["):
            pids = {e.dagster_event.pid for e in starts if e.step_key.startswith(step)}
            assert len([e for e in starts if e.step_key.startswith(step)]) == 4, step
            assert len(pids) == 4 and os.getpid() not in pids  # a process per shard step
