"""Jobs and schedules.

DuckDB allows one writing process per file: steps run in this process, one after another; every step holds
the `warehouse` pool slot (limit 1), and the run queue starts one writing run at a time (tag limit in the
home's dagster.yaml), so a schedule tick and a manual run wait for each other instead of interleaving.

  scorehouse      everything: ingest, validate, features, train + gate + promote, score
  score           the daily run: ingest, validate, features, score with the current champions (no training)
  retrain         the weekly run: ingest, validate, features, train every model behind its gate (no scoring)
  train_<model>   one model alone, on the features already built
  features        ingest, validate, features (no models)
  ingest          ingest and validate the landing files only

Scoring is its own job, reading the champion from the registry, so a retrain whose gate fails (a failed run,
the reason on the gate check) never stops the next daily scoring.
"""

from __future__ import annotations

import dagster as dg

from assets.lifecycle import training_keys
from orchestration.home import WRITES

TRAINING = dg.AssetSelection.groups("training")
SCORING = dg.AssetSelection.groups("scoring")


def _job(name: str, selection: dg.AssetSelection, description: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(name, selection=selection, executor_def=dg.in_process_executor,
                               description=description, run_tags=WRITES)


def build_jobs(model_names: list[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        _job("scorehouse", dg.AssetSelection.all(), "The whole pipeline: ingest the landing files, validate, build "
             "features, train and gate the models, score every customer."),
        _job("score", SCORING.upstream() - TRAINING, "Daily: ingest new landing files, build features and score "
             "every customer with each model's current champion."),
        _job("retrain", TRAINING.upstream(), "Weekly: ingest, build features, train a challenger per model; each "
             "is promoted only if its gate passes."),
        _job("features", dg.AssetSelection.groups("ingest", "features"), "Ingest, validate and build the feature "
             "tables (no models)."),
        _job("ingest", dg.AssetSelection.groups("ingest"), "Ingest and validate the landing files only."),
        *(_job(f"train_{m}", dg.AssetSelection.assets(*training_keys(m)),
               f"Retrain {m} alone on the features already built: challenger, gate, promotion.")
          for m in model_names),
    ]


def build_schedules(settings: dict, jobs: dict[str, dg.UnresolvedAssetJobDefinition]) -> list[dg.ScheduleDefinition]:
    """Daily scoring and weekly retraining, cron from settings; running by default when the daemon runs."""
    cfg = settings["schedules"]
    out = []
    for name, job in (("daily_scoring", "score"), ("weekly_retrain", "retrain")):
        s = cfg[name]
        out.append(dg.ScheduleDefinition(
            name=name, job=jobs[job], cron_schedule=s["cron"], execution_timezone=cfg.get("timezone", "UTC"),
            default_status=dg.DefaultScheduleStatus.RUNNING if s.get("enabled", True)
            else dg.DefaultScheduleStatus.STOPPED,
            description=f"Runs job `{job}` on cron '{s['cron']}' ({cfg.get('timezone', 'UTC')}); set in "
                        f"schedules.{name} of scorehouse.yaml.",
        ))
    return out
