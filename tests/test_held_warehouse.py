"""A step holds the warehouse file open while it runs (`warehouse.db.held`, `assets.resources.holds_warehouse`):
its connects are cursors of one DuckDB instance instead of a new instance each (~20 ms apiece), whatever
arguments they pass, and the file is let go of when the step ends, however it ends."""

import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from assets.resources import Warehouse, holds_warehouse
from warehouse.db import connect, held

PROBE = "import duckdb, sys; duckdb.connect(sys.argv[1], read_only=True).close()"


def _other_process_opens(path) -> bool:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True).returncode == 0


def test_connects_inside_a_hold_share_it_whatever_their_arguments(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(config={"memory_limit": "1GB"}) as mem:
        one_gb = mem.execute("SELECT current_setting('memory_limit')").fetchone()
    with connect(path) as con, pytest.raises(duckdb.ConnectionException, match="different configuration"):
        with connect(path, read_only=True):  # without a hold: a second instance of the file, refused
            pass
    with held(path, memory_limit="1GB"):
        with connect(path) as con:
            con.execute("CREATE TABLE t AS SELECT 42 AS x")
        with connect(path, read_only=True) as reader, connect(path, memory_limit="3GB") as other:
            assert reader.execute("SELECT x FROM t").fetchall() == [(42,)]
            # the held instance's limit, not the one this connect asked for: the same instance
            assert other.execute("SELECT current_setting('memory_limit')").fetchone() == one_gb
        assert not _other_process_opens(path)  # held: DuckDB's one-process lock is this process's
    assert _other_process_opens(path)


def test_a_step_holds_the_file_while_it_runs_and_lets_go_when_it_fails(tmp_path):
    between_connects = []

    @dg.asset
    @holds_warehouse
    def counted(warehouse: Warehouse):
        for n in range(2):
            with warehouse.connect() as con:
                con.execute(f"CREATE OR REPLACE TABLE main.t AS SELECT {n} AS n")
            between_connects.append(_other_process_opens(warehouse.paths.warehouse))
        yield dg.MaterializeResult(metadata={"connects": 2})

    @dg.asset
    @holds_warehouse
    def failing(warehouse: Warehouse):
        with warehouse.connect():
            raise RuntimeError("the step fails")

    resources = {"warehouse": Warehouse(home=str(tmp_path))}
    assert dg.materialize([counted], resources=resources).success
    assert between_connects == [False, False]  # held from the step's start to its end, not per connect
    assert not dg.materialize([failing], resources=resources, raise_on_error=False).success
    assert _other_process_opens(tmp_path / "warehouse.duckdb")  # let go of after the failure
