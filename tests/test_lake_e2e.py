"""Job `lake_features` through the CLI as a user runs it on the iceberg backend: 4 shards on the multiprocess
executor, the shard steps SIGKILLed mid-write in a first run, and a second run converging to the embedded
warehouse's feature tables, row for row."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.settings import source_config
from orchestration.home import open_instance
from tests.lakes import assert_same, frame, new_lake
from warehouse import features as F
from warehouse import shard_features as S
from warehouse.db import Home, connect
from warehouse.lake import Lake
from warehouse.synthetic import generate_bank

pytestmark = pytest.mark.e2e
SCOREHOUSE = str(Path(sys.executable).parent / "scorehouse")


def _cli(*args: str, home: Path, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SCOREHOUSE_", "DAGSTER_"))}
    return subprocess.run([SCOREHOUSE, *args, "--home", str(home)], capture_output=True, text=True,
                          env={**clean, **env}, timeout=900)


def test_lake_features_on_four_shards_survive_killed_shard_steps_and_equal_the_embedded_build(postgres_url,
                                                                                               tmp_path):
    landing, home = tmp_path / "landing", tmp_path / "home"
    generate_bank(landing, customers=1500, seed=5, manager_effect=1)
    location = new_lake(postgres_url, "lake_e2e", tmp_path / "lake")
    home.mkdir()
    (home / "scorehouse.yaml").write_text(
        f"warehouse:\n  backend: iceberg\n  lake: {{location: {location.warehouse}, shards: 4}}\n")
    env = {"SCOREHOUSE_CATALOG": location.catalog}

    early = _cli("run", "--job", "lake_features", home=home, env=env)
    assert early.returncode == 2 and "run `scorehouse run --job ingest` first" in early.stderr, early.stderr
    ingest = _cli("run", "--job", "ingest", "--landing", str(landing), home=home, env=env)
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    reference = tmp_path / "embedded.duckdb"
    shutil.copy(Home.resolve(home).warehouse, reference)
    cfg = source_config("synthetic")
    with connect(reference) as con:
        snap = F.resolve_snapshot(con, cfg.snapshot_date, cfg.holdout_days)
        F.build_all(con, snap)
        expected = {t: frame(con, t) for t in S.FEATURE_TABLES}

    bad = _cli("run", "--job", "lake_features", "--partition", "2026-13-01", home=home, env=env)
    assert bad.returncode == 2 and "expected a snapshot date, YYYY-MM-DD" in bad.stderr, bad.stderr
    killed = _cli("run", "--job", "lake_features", home=home, env={**env, "SCOREHOUSE_KILL_AT": "lake_shard"})
    assert killed.returncode == 1, killed.stdout[-3000:] + killed.stderr[-3000:]
    rerun = _cli("run", "--job", "lake_features", home=home, env=env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    with connect(tmp_path / "read.duckdb") as con:
        S.load_features(con, Lake(location), None, snap)
        for t in S.FEATURE_TABLES:
            assert_same(expected[t], frame(con, t), t)

    with open_instance(Home.resolve(home).dagster_home, say=lambda m: None) as instance:
        good_run, killed_run = instance.get_runs(dg.RunsFilter(job_name="lake_features"))  # newest first
        assert killed_run.status == dg.DagsterRunStatus.FAILURE and good_run.status == dg.DagsterRunStatus.SUCCESS
        failed = {e.step_key for e in instance.all_logs(killed_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)}
        assert failed and all(k.startswith("lake__features.lake_shard[") for k in failed), failed  # killed mid-write
        assert good_run.tags["dagster/partition"] == snap.isoformat()  # the snapshot the warehouse's data gives
        starts = instance.all_logs(good_run.run_id, of_type=dg.DagsterEventType.STEP_START)
        shard_pids = {e.dagster_event.pid for e in starts if e.step_key.startswith("lake__features.lake_shard[")}
        assert len([e for e in starts if "lake_shard[" in e.step_key]) == 4
        assert len(shard_pids) == 4 and os.getpid() not in shard_pids  # a process per shard step
