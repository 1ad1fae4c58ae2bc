"""Jobs and schedules.

DuckDB allows one writing process per file: steps run in this process, one after another; every step holds
the `warehouse` pool slot (limit 1), and the run queue starts one writing run at a time (tag limit in the
home's dagster.yaml), so a schedule tick and a manual run wait for each other instead of interleaving.

  scorehouse      everything: ingest, validate, features, train + gate + promote, score, publish (the CLI and the
                  landing sensor leave out models whose champion is not due: `due_selection`)
  score           the daily run: ingest, validate, features, score with the current champions, publish for BI
  retrain         the weekly run: ingest, validate, features, train every model behind its gate (no scoring)
  train_<model>   one model alone, on the features already built
  features        ingest, validate, features (no models)
  ingest          ingest and validate the landing files only

Scoring is its own job, reading the champion from the registry, so a retrain whose gate fails (a failed run,
the reason on the gate check) never stops the next daily scoring.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from assets.lifecycle import training_keys
from ml.registry import due_for_training
from orchestration.home import WRITES

TRAINING = dg.AssetSelection.groups("training")
SCORING = dg.AssetSelection.groups("scoring")
SERVING = dg.AssetSelection.groups("serving")
REPORT = dg.AssetSelection.assets(dg.AssetKey(["serving", "run_report"]))  # every job with models reports


def _job(name: str, selection: dg.AssetSelection, description: str) -> dg.UnresolvedAssetJobDefinition:
    # In process, whatever settings `execution:` say (they choose job lake's executor): these steps hold the one
    # DuckDB file one at a time (pool `warehouse`), so a process per step would only add its start-up.
    return dg.define_asset_job(name, selection=selection, executor_def=dg.in_process_executor,
                               description=description, run_tags=WRITES)


# On the iceberg backend these jobs score the DuckDB file's sample: job lake follows each (`scorehouse run` runs it
# next; with the daemon, sensor lake_after_scoring) to score every customer and publish.
LAKE_FOLLOWS = ("scorehouse", "score")


def build_jobs(model_names: list[str], iceberg: bool = False) -> list[dg.UnresolvedAssetJobDefinition]:
    """Every job of the embedded pipeline (`iceberg`: on the iceberg backend, where they work on the DuckDB file's
    sample of customers and job lake scores and publishes)."""
    sample = (" On the iceberg backend: the DuckDB file's sample of customers (warehouse.lake.sample_customers), "
              "nothing published; job lake follows (sensor lake_after_scoring), scores every customer and publishes."
              if iceberg else "")
    return [
        # the iceberg backend's lake assets are partitioned by snapshot date: their own job, `lake` (assets/lake.py)
        _job("scorehouse", dg.AssetSelection.all() - dg.AssetSelection.groups("lake"), "The whole pipeline: ingest "
             "the landing files, validate, build features, train and gate the models that are due (no champion, or "
             "one older than models.retrain_after_days, when launched by `scorehouse run` or the landing sensor), score every "
             "customer, measure drift and publish the serving file for BI." + sample),
        _job("score", (SCORING | SERVING).upstream() - TRAINING, "Daily: ingest new landing files, build features, "
             "score every customer with each model's current champion and publish the serving file." + sample),
        _job("retrain", TRAINING.upstream() | REPORT, "Weekly: ingest, build features, train a challenger per model; "
             "each is promoted only if its gate passes."),
        _job("features", dg.AssetSelection.groups("ingest", "features"), "Ingest, validate and build the feature "
             "tables (no models)."),
        _job("ingest", dg.AssetSelection.groups("ingest"), "Ingest and validate the landing files only."),
        *(_job(f"train_{m}", dg.AssetSelection.assets(*training_keys(m)) | REPORT,
               f"Retrain {m} alone on the features already built: challenger, gate, promotion.")
          for m in model_names),
    ]


def due_selection(job: dg.JobDefinition, home: Path, settings: dict, model_names: list[str]
                  ) -> list[dg.AssetKey] | None:
    """The assets of job `scorehouse` minus the training of every model whose champion is younger than
    `models.retrain_after_days`: what `scorehouse run` and the landing sensor run. None: the whole job (every
    model is due, or the registry cannot be read now). A daily run then scores and measures drift against the
    reference of the model in service, instead of retraining on the very population it should watch."""
    path = Path(home) / "warehouse.duckdb"
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            due = due_for_training(con, model_names, settings["models"]["retrain_after_days"])
    except duckdb.Error:
        return None  # another process holds the file: train what the job trains
    fresh = [k for m in model_names if m not in due for k in training_keys(m)]
    if not fresh:
        return None
    return [k for k in job.asset_layer.executable_asset_keys if k not in fresh]


def build_schedules(settings: dict, jobs: dict) -> list[dg.ScheduleDefinition]:
    """Daily scoring, weekly retraining (and the lake's maintenance), cron from settings; running by default when
    the daemon runs."""
    cfg = settings["schedules"]
    out = []
    pairs = (("daily_scoring", "score"), ("weekly_retrain", "retrain"), ("lake_maintenance", "lake_maintenance"))
    for name, job in pairs:
        if job not in jobs:  # lake_maintenance: on the iceberg backend only
            continue
        s = cfg[name]
        out.append(dg.ScheduleDefinition(
            name=name, job=jobs[job], cron_schedule=s["cron"], execution_timezone=cfg["timezone"],
            default_status=dg.DefaultScheduleStatus.RUNNING if s["enabled"]
            else dg.DefaultScheduleStatus.STOPPED,
            description=f"Runs job `{job}` on cron '{s['cron']}' ({cfg['timezone']}); set in "
                        f"schedules.{name} of scorehouse.yaml.",
        ))
    return out
