"""The executor a job runs its steps with, from settings `execution:` (docs/scale-out.md).

in_process (the embedded default: one process, nothing to start), multiprocess (a process per step on this
machine, forked from a server that has loaded the definitions once), or Dagster's own cluster executors:
k8s (`dagster_k8s.k8s_job_executor`, a Kubernetes job per step) and celery (`dagster_celery.celery_executor`).
The cluster executors' packages are optional (`pip install 'scorehouse[k8s]'` or `[celery]`): they are imported
only when settings choose them.
"""

from __future__ import annotations

import dagster as dg

from assets.settings import SettingsError

# Step processes forked from a server that has imported once what every step imports: Dagster and these
# definitions, Dagster's SQLite storage (a step opens the instance first), pyiceberg's catalog (every lake step)
# and the model libraries (the scoring shards). A step then starts in a fraction of a second instead of importing
# them again (the per-shard overhead, benchmarks/RESULTS.md).
PRELOAD = ["orchestration.definitions", "dagster._core.storage.sqlite_storage",
           "dagster._core.storage.event_log.sqlite", "dagster._core.storage.runs.sqlite",
           "dagster._core.storage.schedules.sqlite", "dagster._core.secrets.env_file", "pyiceberg.catalog.sql",
           "pyiceberg.io.pyarrow", "psycopg2", "psycopg2.extras", "upath",  # the catalog's driver, the lake's paths
           "ml", "xgboost", "sklearn.cluster"]  # ml first: it sets OpenMP's wait policy before xgboost loads it
FORKSERVER = {"start_method": {"forkserver": {"preload_modules": PRELOAD}}}
# What a step on another machine needs from the run's environment (secrets stay in env vars, never in config).
STEP_ENV = ["SCOREHOUSE_HOME", "SCOREHOUSE_SOURCE", "SCOREHOUSE_LANDING", "SCOREHOUSE_CATALOG", "SCOREHOUSE_SETTINGS"]
BROKER_ENV = "SCOREHOUSE_CELERY_BROKER"


def executor_for(execution: dict, default: str) -> dg.ExecutorDefinition:
    """The executor of settings `execution` (its `executor`, else the job's `default`)."""
    kind = execution["executor"] or default
    n = execution["max_concurrent"]
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": n, **FORKSERVER}, name="multiprocess")
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise SettingsError([_missing("k8s", "dagster-k8s")]) from None
        return k8s_job_executor.configured({"max_concurrent": n, "env_vars": STEP_ENV}, name="k8s")
    if kind == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError:
            raise SettingsError([_missing("celery", "dagster-celery")]) from None
        return celery_executor.configured({"broker": {"env": BROKER_ENV}}, name="celery")
    raise SettingsError([f"execution.executor: {kind!r} is not an executor (in_process, multiprocess, k8s, celery)"])


def _missing(kind: str, package: str) -> str:
    return (f"execution.executor: {kind} needs the {package} package, not installed here: "
            f"pip install 'scorehouse[{kind}]' (docs/scale-out.md)")
