"""Sensors, on by default when the daemon runs (`make ui`):
  landing_files             a new or changed landing file launches the pipeline (ingest skips unchanged files);
  alert_on_checks_and_drift a finished run's failed checks (quality, gates, drift, freshness) -> alerts; a failed
                            check does not fail a run, so a run-failure sensor alone would never see them;
  alert_on_run_failure      a failed run -> alert;
  freshness_checks_sensor   evaluates the freshness checks of scores.* (stale scores -> alert via the first);
  lake_after_scoring        the iceberg backend only: job lake after each pipeline or daily scoring run.
"""


import hashlib
import json
import os
import warnings
from collections.abc import Callable
from datetime import timedelta

import dagster as dg

from assets.resources import Source
from assets.settings import load_settings
from orchestration.alerting import describe, evaluate_run
from warehouse.db import Home
from warehouse.landing import matches, readiness


def landing_state(source: Source) -> dict[str, list[int]]:
    """(size, mtime) of every landing file a feed or input matches that may be read now: files in flight
    (not settled, or not yet marked ready) are left out, so the run starts once they are ready."""
    cfg = source.config()
    landing = source.landing_path()
    specs = [(f.read.path, f.settle_seconds, f.ready_marker) for feeds in cfg.feeds.values() for f in feeds]
    specs += [(s.path, 0.0, None) for s in cfg.inputs.values()]
    state = {}
    for glob, settle, marker in specs:
        for p in matches(landing, glob, marker)[0]:
            if readiness(landing, p, settle, marker) is None:
                st = p.stat()
                state[p.relative_to(landing).as_posix()] = [st.st_size, st.st_mtime_ns]
    return state


def _ingested_before(instance: dg.DagsterInstance, raw_keys: list[dg.AssetKey]) -> float | None:
    """When every raw table was last materialized (the oldest of them), or None if one never was."""
    stamps = []
    for key in raw_keys:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            return None
        stamps.append(event.timestamp)
    return min(stamps) if stamps else None


def build_landing_sensor(job, interval: int, raw_keys: list[dg.AssetKey],
                         selection: Callable[[], list[dg.AssetKey] | None] = lambda: None) -> dg.SensorDefinition:
    """`selection`: what of the job to run now (orchestration/jobs.py due_selection: no retraining of a model
    whose champion is not due); None runs the whole job."""

    @dg.sensor(job=job, minimum_interval_seconds=interval, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches the pipeline when files in the landing folder are new or changed.")
    def landing_files(context: dg.SensorEvaluationContext, source: Source):
        state = landing_state(source)
        if context.cursor:
            previous = json.loads(context.cursor)
        else:
            # First tick (a new home, or the sensor just switched on): files written before the last
            # complete ingest (e.g. by `scorehouse run`) are not new; no run just for switching the UI on.
            since = _ingested_before(context.instance, raw_keys)
            previous = {p: s for p, s in state.items() if since is not None and s[1] / 1e9 < since}
        changed = sorted(p for p, s in state.items() if previous.get(p) != s)
        if not changed:
            return dg.SkipReason(f"no new or changed file among {len(state)} in the landing folder")
        context.update_cursor(json.dumps(state))
        key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=key, asset_selection=selection(), tags={"scorehouse/trigger": "landing", "scorehouse/files": str(len(changed))})

    return landing_files


def build_alert_sensors(interval: int) -> list[dg.SensorDefinition]:
    def evaluate(context) -> dg.SkipReason:
        home = Home.resolve().root
        run_id = context.dagster_run.run_id
        outcomes = evaluate_run(context.instance, run_id, home,
                                load_settings(home, os.environ.get("SCOREHOUSE_SOURCE", "synthetic")))
        lines = describe(outcomes)
        for line in lines:
            context.log.info(line)
        return dg.SkipReason(f"run {run_id[:8]}: " + ("; ".join(lines) if lines else "nothing to alert"))

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="alert_on_checks_and_drift",
                          minimum_interval_seconds=interval, default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Alerts on the failed checks of a finished run (quality, gates, drift, "
                                      "freshness): a failed check does not fail the run. Channels: alerts in the "
                                      "settings (docs/alerts.md).")
    def alert_on_checks_and_drift(context: dg.RunStatusSensorContext):
        return evaluate(context)

    @dg.run_failure_sensor(name="alert_on_run_failure", minimum_interval_seconds=interval,
                           default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Alerts when a run fails, with the failed step and its error.")
    def alert_on_run_failure(context: dg.RunFailureSensorContext):
        return evaluate(context)

    return [alert_on_checks_and_drift, alert_on_run_failure]


def build_freshness(score_keys: list[dg.AssetKey], max_age_hours: float) -> tuple[list, dg.SensorDefinition]:
    """Freshness checks on scores.* and the sensor that evaluates them. (Dagster marks these checks superseded by
    FreshnessPolicy, which is still a preview needing a dagster.yaml flag and alerts only in Dagster+; a check
    result is what our alert sensor reads.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = dg.build_last_update_freshness_checks(assets=score_keys, lower_bound_delta=timedelta(hours=max_age_hours))
        sensor = dg.build_sensor_for_freshness_checks(freshness_checks=checks,
                                                      default_status=dg.DefaultSensorStatus.RUNNING)
    return list(checks), sensor


POPULATION = dg.AssetKey(["features", "population"])


def build_lake_follower(lake_job, after: list) -> dg.SensorDefinition:
    """The iceberg backend: job `lake` for the data's snapshot date after each successful run of the jobs
    `after` (the pipeline and the daily scoring, which train and watch the DuckDB file's sample of customers):
    the lake then scores every customer with the champions in service and publishes BI's file."""

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="lake_after_scoring",
                          monitored_jobs=after, request_job=lake_job, default_status=dg.DefaultSensorStatus.RUNNING,
                          description="After a successful run of " + ", ".join(f"`{j.name}`" for j in after)
                                      + " (the DuckDB file's sample), job `lake` for the snapshot date that run's "
                                      "features are as of: every customer's features and scores, then the "
                                      "serving file.")
    def lake_after_scoring(context: dg.RunStatusSensorContext):
        run_id = context.dagster_run.run_id
        if context.dagster_run.tags.get("scorehouse/trigger") == "cli":
            return dg.SkipReason(f"run {run_id[:8]} was launched by `scorehouse run`, which runs job lake itself")
        snap = lake_partition(context.instance)
        if snap is None:
            return dg.SkipReason(f"run {run_id[:8]}: no features/population materialization names a snapshot date")
        return dg.RunRequest(run_key=f"lake-after-{run_id}", partition_key=snap,
                             tags={"scorehouse/trigger": "lake_after_scoring", "scorehouse/after_run": run_id})

    return lake_after_scoring


def lake_partition(instance: dg.DagsterInstance) -> str | None:
    """The snapshot date of the newest features/population: the date the data's features are as of."""
    event = instance.get_latest_materialization_event(POPULATION)
    value = event.asset_materialization.metadata.get("snapshot_date") if event and event.asset_materialization else None
    return None if value is None else str(value.value)
