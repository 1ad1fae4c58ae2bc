"""A home's Dagster storage: Dagster's SQLite files, written through connections kept open
(orchestration/storage.py), and read back by Dagster's own SQLite storage the same."""

import logging

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


def test_a_libraries_warning_in_a_step_goes_to_the_runs_event_log_not_the_terminal(tmp_path, capfd):
    """pyiceberg warns when a shard step's catalog commit is retried after another's: the home's dagster.yaml makes
    that a warning of the step in the run's event log (the UI shows it), not a stray line on the terminal."""
    said = "Commit failed due to a concurrent update, retrying (1/4) in 103 ms"

    @dg.op
    def commit():
        logging.getLogger("pyiceberg.table").warning(said)

    @dg.job
    def lake_like():
        commit()

    with open_instance(tmp_path / "dagster", say=lambda m: None) as instance:
        # the console at ERROR, as `scorehouse run` sets it
        result = lake_like.execute_in_process(instance=instance, run_config={
            "loggers": {"console": {"config": {"log_level": "ERROR"}}}})
        logged = [e for e in instance.all_logs(result.run_id) if e.user_message == said]
    assert [(e.level, e.step_key) for e in logged] == [(logging.WARNING, "commit")]
    assert said not in capfd.readouterr().err
