"""A home's Dagster storage: Dagster's SQLite files, written through connections kept open
(orchestration/storage.py), and read back by Dagster's own SQLite storage the same."""

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from orchestration.home import open_instance
from orchestration.storage import OPEN_SHARDS, PooledSqliteStorage


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers(context: dg.AssetExecutionContext):
    context.log.info("three numbers")
    yield dg.Output([1, 2, 3], metadata={"rows": 3})
    yield dg.AssetCheckResult(check_name="positive", passed=True, metadata={"actual": 1, "threshold": 0})


def test_runs_written_through_open_connections_read_the_same_with_dagsters_own_storage(tmp_path):
    home = tmp_path / "dagster"
    with open_instance(home, say=lambda m: None) as instance:
        assert isinstance(instance.get_ref().storage, PooledSqliteStorage)
        runs = [dg.materialize([numbers], instance=instance).run_id for _ in range(OPEN_SHARDS + 2)]
        pooled = instance.event_log_storage
        assert len(pooled._engines) <= OPEN_SHARDS  # older runs' files closed again
        written = [e.event_log_entry for e in instance.get_records_for_run(runs[0]).records]
        latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")])

    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    read = [r.event_log_entry for r in plain.get_records_for_run(runs[0]).records]
    assert [(e.dagster_event_type, e.user_message) for e in read] == \
        [(e.dagster_event_type, e.user_message) for e in written]
    assert any(e.user_message == "three numbers" for e in read)
    assert plain.get_latest_materialization_events([dg.AssetKey("numbers")])[dg.AssetKey("numbers")].run_id \
        == latest.run_id == runs[-1]
    assert list(check.values())[0].run_id == runs[-1]
