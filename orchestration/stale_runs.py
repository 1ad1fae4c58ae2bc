"""Runs whose process is gone are marked failed: those of `scorehouse run` (killed, machine crash), and those
whose run worker `scorehouse ui` stopped.

Otherwise they would stay STARTED forever in the UI and keep their `warehouse` pool slot, so every later
run would wait on it.
"""

from __future__ import annotations

import os

import dagster as dg


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_cli_runs(instance: dg.DagsterInstance) -> list[str]:
    host = os.uname().nodename
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
                              tags={"scorehouse/trigger": "cli", "scorehouse/host": host})
    )
    failed = []
    for run in runs:
        pid = int(run.tags.get("scorehouse/pid", "0"))
        if pid and pid != os.getpid() and not _alive(pid):
            _fail(instance, run, f"process {pid} of this CLI run is gone (killed or crashed)")
            failed.append(run.run_id)
    return failed


def fail_runs(instance: dg.DagsterInstance, run_ids, why: str) -> list[str]:
    """Marks failed those of `run_ids` not finished: their process was stopped (`scorehouse ui`). A worker that
    had time to fail its run itself may still hold slots, which the daemon, stopped too, would have freed."""
    failed = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            _fail(instance, run, why)
            failed.append(run_id)
        else:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return failed


def _fail(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str) -> None:
    instance.report_run_failed(run, message=why)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
