"""The home's run lock: one run per home, re-entrant within the process that holds it.

`scorehouse run` holds it across its whole command (registry read, run, summary); the run's Warehouse resource
takes it again inside. Before, the CLI's summary read the warehouse after letting go, while a second run already
held the file for writing ("Could not set lock"), and the first run exited 1 after a successful run."""

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager

from warehouse.db import SHARED_LOCK, RunLockTimeout, run_lock

OTHER_PROCESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from warehouse.db import RunLockTimeout, run_lock
    try:
        with run_lock(Path(sys.argv[1]), "probe", 0, on_wait=lambda m: None):
            print("got it")
    except RunLockTimeout as e:
        print(e)
""")


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from warehouse.db import run_lock
    with run_lock(Path(sys.argv[1]), sys.argv[2], 0, children=sys.argv[3] == "children"):
        print("held", flush=True)
        sys.stdin.read()
""")


@contextmanager
def _held_elsewhere(path, holder: str, children: bool = False):
    """Another process holding the lock as `holder` until the block ends."""
    held = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), holder, "children" if children else "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        yield held
    finally:
        held.communicate("")


def _other_process_tries(path) -> str:
    return subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_lock_is_reentrant_and_held_until_the_outer_holder_lets_go(tmp_path):
    path = tmp_path / "run.lock"
    with run_lock(path, "run of job 'ingest' from `scorehouse run`", 0):
        with run_lock(path, "run 1234", 0):  # the run's resource, same process: no deadlock, no wait
            assert path.read_text().startswith("run 1234 (pid ")
            assert "run 1234" in _other_process_tries(path)
        # the run is over, its summary still reads the warehouse: the home is still held
        assert "holds" in _other_process_tries(path)
    assert _other_process_tries(path) == "got it"


def test_a_second_holder_waits_then_fails_naming_the_first(tmp_path):
    path = tmp_path / "run.lock"
    with _held_elsewhere(path, "run abc") as held:
        told = []
        try:
            with run_lock(path, "second", 0.6, on_wait=told.append, poll_seconds=0.1):
                raise AssertionError("took a lock another process holds")
        except RunLockTimeout as e:
            assert f"run abc (pid {held.pid}) holds {path}" in str(e)
        assert told == [f"waiting for run abc (pid {held.pid}) to finish (one run per home at a time: {path})"]
    with run_lock(path, "third", 0):
        pass


def test_a_holder_can_let_the_processes_it_starts_in_and_no_other(tmp_path):
    path = tmp_path / "run.lock"
    with run_lock(path, "run of job 'lake_features' from `scorehouse run`", 0, children=True):
        assert _other_process_tries(path) == "got it"  # a step the multiprocess executor started for the run
    assert SHARED_LOCK not in os.environ
    with _held_elsewhere(path, "run xyz", children=True) as held:
        # a process that is not its child, even one whose environment names it, waits like any other run
        forged = {**os.environ, SHARED_LOCK: f"{held.pid} {path.resolve()}"}
        probe = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], capture_output=True, text=True,
                               check=True, env=forged).stdout.strip()
        assert f"run xyz (pid {held.pid}) holds" in probe


def test_job_lakes_shard_steps_read_the_file_while_another_step_of_the_run_holds_the_lock(tmp_path):
    """A run launched from the UI takes the lock step by step (no `scorehouse run` holds it for the run's
    processes): the shard steps, which only read the DuckDB file, must not wait for each other on it. The
    WarehouseReader reads at once where the Warehouse resource would wait for the holder."""
    import dagster as dg
    import duckdb

    from assets.resources import Warehouse, WarehouseReader

    home = tmp_path / "home"
    home.mkdir()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 42 AS x")

    @dg.asset
    def shard_step(warehouse_reader: WarehouseReader) -> int:
        with warehouse_reader.reading() as con:
            return con.execute("SELECT x FROM t").fetchone()[0]

    @dg.asset
    def writer_step(warehouse: Warehouse) -> None:
        pass

    with _held_elsewhere(home / "run.lock", "run abc, step lake_shard[shard_0]"):
        read = dg.materialize([shard_step], resources={"warehouse_reader": WarehouseReader(home=str(home))})
        assert read.success and read.output_for_node("shard_step") == 42
        waited = dg.materialize([writer_step], raise_on_error=False, resources={
            "warehouse": Warehouse(home=str(home), run_lock_wait_seconds=0.3)})
        failures = [e.event_specific_data.error.to_string() for e in waited.all_events if e.is_failure]
        assert not waited.success and any("run abc, step lake_shard[shard_0]" in m and "holds" in m
                                          for m in failures), failures
