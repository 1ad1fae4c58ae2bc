"""The one Dagster entry point: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import os

import dagster as dg

from assets.features import feature_assets, feature_checks
from assets.ingest import raw_assets
from assets.lifecycle import training_keys
from assets.metadata import catalogued
from assets.models import SPECS, model_assets, model_checks
from assets.resources import resources_for_env
from assets.serving import build_publish, build_run_report
from assets.settings import load_settings
from orchestration.executors import executor_for
from orchestration.jobs import LAKE_FOLLOWS, build_jobs, build_schedules, due_selection
from orchestration.sensors import build_alert_sensors, build_freshness, build_lake_follower, build_landing_sensor
from warehouse.db import Home

# Validated here, so bad settings stop the definitions from loading, with the file and key of each problem.
settings = load_settings(Home.resolve().root, os.environ.get("SCOREHOUSE_SOURCE", "synthetic"))
MODELS = [s.name for s in SPECS]
# The iceberg backend's assets and job, only where settings choose it: the embedded default's graph stays as it is.
lake = settings["warehouse"]["lake"]
iceberg = settings["warehouse"]["backend"] == "iceberg"
jobs = {j.name: j for j in build_jobs(MODELS, iceberg)}
lake_assets = []
if iceberg:
    from assets.lake import build_lake, build_maintenance

    lake_assets, lake_job = build_lake(lake["shards"], lake["first_snapshot"], SPECS,
                                       executor_for(settings["execution"], "multiprocess"))
    jobs[lake_job.name] = lake_job
    jobs["lake_maintenance"] = build_maintenance(lake["keep_snapshots_days"], lake["orphan_grace_hours"],
                                                 lake["keep_feature_dates_days"])


def _due() -> list[dg.AssetKey] | None:
    home = Home.resolve().root
    return due_selection(defs.resolve_job_def("scorehouse"), home,
                         load_settings(home, os.environ.get("SCOREHOUSE_SOURCE", "synthetic")), MODELS)


SCORE_KEYS = [a.key for a in model_assets if a.key.path[0] == "scores"]
freshness_checks, freshness_sensor = build_freshness(SCORE_KEYS, settings["monitoring"]["freshness"]["max_age_hours"])

DOMAINS = {k: s.domain for s in SPECS for k in (*training_keys(s.name), dg.AssetKey(["scores", s.name]))}

defs = dg.Definitions(
    assets=dg.map_asset_specs(lambda spec: catalogued(spec, DOMAINS), [
        *raw_assets, *feature_assets, *model_assets, build_run_report(SPECS, published=not iceberg),
        # on the iceberg backend the DuckDB file scores a sample (warehouse.lake.sample_customers): BI's serving
        # file is published from the lake's scores of every customer (lake/published), never from the sample
        *([] if iceberg else [build_publish(SPECS)]), *lake_assets]),
    asset_checks=[*feature_checks, *model_checks, *freshness_checks],
    jobs=list(jobs.values()),
    schedules=build_schedules(settings, jobs),
    sensors=[build_landing_sensor(jobs["scorehouse"], settings["sensors"]["landing_interval_seconds"],
                                  [a.key for a in raw_assets], _due),
             *build_alert_sensors(settings["sensors"]["alert_interval_seconds"]), freshness_sensor,
             *([build_lake_follower(jobs["lake"], [jobs[j] for j in LAKE_FOLLOWS])] if iceberg else [])],
    resources=resources_for_env(),
    executor=dg.in_process_executor,
)
