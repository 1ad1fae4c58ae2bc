"""Runs started by `scorehouse run` whose process is gone (killed, machine crash) are marked failed.

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
            instance.report_run_failed(run, message=f"process {pid} of this CLI run is gone (killed or crashed)")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
    return failed
