"""The one Dagster entry point: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import dagster as dg

from assets.features import feature_assets, feature_checks
from assets.ingest import raw_assets
from assets.models import SPECS, model_assets, model_checks
from assets.quality import gx_checks
from orchestration.jobs import build_jobs, build_schedules
from orchestration.resources import resources_for_env
from orchestration.sensors import build_landing_sensor
from orchestration.settings import load_settings
from warehouse.db import Home

settings = load_settings(Home.resolve().root)
jobs = {j.name: j for j in build_jobs([s.name for s in SPECS])}

defs = dg.Definitions(
    assets=[*raw_assets, *feature_assets, *model_assets],
    asset_checks=[*gx_checks, *feature_checks, *model_checks],
    jobs=list(jobs.values()),
    schedules=build_schedules(settings, jobs),
    sensors=[build_landing_sensor(jobs["scorehouse"], settings["sensors"]["landing_interval_seconds"],
                                  [a.key for a in raw_assets])],
    resources=resources_for_env(),
    executor=dg.in_process_executor,
)
