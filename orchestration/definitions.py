"""The one Dagster entry point: assets, checks, jobs, sensors and resources."""

from __future__ import annotations

import dagster as dg

from assets.features import feature_assets, feature_checks
from assets.ingest import raw_assets
from assets.models import model_assets, model_checks
from assets.quality import gx_checks
from orchestration.home import WRITES
from orchestration.resources import resources_for_env
from orchestration.sensors import build_landing_sensor
from orchestration.settings import load_settings
from warehouse.db import Home

# DuckDB allows one writing process per file: steps run in this process, one after another; every step
# holds the `warehouse` pool slot (limit 1), and the run queue starts one writing run at a time (tag limit
# in the home's dagster.yaml), so a sensor run and a UI run wait for each other instead of interleaving.
scorehouse_job = dg.define_asset_job(
    "scorehouse", selection=dg.AssetSelection.all(), executor_def=dg.in_process_executor,
    description="The whole pipeline: ingest the landing files, validate, build features, train and gate the "
                "models, score every customer.", run_tags=WRITES,
)
ingest_job = dg.define_asset_job(
    "ingest", selection=dg.AssetSelection.groups("ingest"), executor_def=dg.in_process_executor,
    description="Ingest and validate the landing files only.", run_tags=WRITES,
)

settings = load_settings(Home.resolve().root)

defs = dg.Definitions(
    assets=[*raw_assets, *feature_assets, *model_assets],
    asset_checks=[*gx_checks, *feature_checks, *model_checks],
    jobs=[scorehouse_job, ingest_job],
    sensors=[build_landing_sensor(scorehouse_job, settings["sensors"]["landing_interval_seconds"],
                                  [a.key for a in raw_assets])],
    resources=resources_for_env(),
    executor=dg.in_process_executor,
)
