"""The alerts of a finished run: read its check results and failures from Dagster's storage, decide what to
say (quality/alerts.py), skip what was already said (quality/alert_store.py), deliver (quality/channels.py).

The same function serves `scorehouse run` (called when the run ends: the CLI has no daemon) and the alert
sensors in the daemon (orchestration/sensors.py) for runs launched by schedules, sensors and the UI. Each run
is evaluated once, by whichever comes first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import dagster as dg

from assets.serving import KEY as SERVING
from assets.settings import bi_publisher
from orchestration.home import recorded_ui_url
from quality.alert_store import AlertStore
from quality.alerts import (
    Alert,
    check_alert,
    drift_alert,
    drifted_checks,
    held_alert,
    model_outcome_alert,
    run_failure_alert,
    run_url,
    stale_alert,
)
from quality.channels import Delivery, channels_from_settings, deliver

FRESHNESS_CHECK = "freshness_check"  # the name Dagster gives the checks of build_last_update_freshness_checks
GUARD_CHECK = "delivery_guard"  # assets/ingest.py: a delivery held back by the volume guard


@dataclass
class Outcome:
    alert: Alert
    deliveries: list[Delivery] = field(default_factory=list)
    suppressed: bool = False  # already alerted and not cleared (deduplicated)


def ui_base_url(home: str | Path, cfg: Mapping, env: Mapping[str, str]) -> str | None:
    """Where alerts link runs: alerts.ui_base_url, else $SCOREHOUSE_UI_URL, else the address `scorehouse ui` last
    served this home on (neither a CLI run nor the daemon knows it otherwise)."""
    return cfg.get("ui_base_url") or env.get("SCOREHOUSE_UI_URL") or recorded_ui_url(Path(home) / "dagster")


def store_for(home: str | Path) -> AlertStore:
    return AlertStore(Path(home) / "alerts.sqlite")


def failure_message(err) -> str:
    """The user-facing message of a step failure: a dg.Failure's description, else the innermost error."""
    while err is not None and err.cause is not None and "Failure" not in (err.cls_name or ""):
        err = err.cause
    msg = (err.message if err else "").strip().removeprefix("dagster._core.definitions.events.Failure: ")
    if err is not None and "Failure" not in (err.cls_name or ""):
        msg = "\n".join(msg.split("\n\n")[0].splitlines()[:3])  # the error, not DuckDB's query excerpt
    return msg


def _plain(value):
    return getattr(value, "value", value)


def run_checks(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    """Every check evaluated in the run, as plain dicts (the last evaluation of each check)."""
    out = {}
    for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        out[(ev.asset_key, ev.check_name)] = {
            "asset": ev.asset_key.to_user_string(), "check": ev.check_name, "passed": ev.passed,
            "severity": ev.severity.value, "metadata": {k: _plain(v) for k, v in ev.metadata.items()}}
    return list(out.values())


def published_in_run(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run published the serving file (asset serving/published materialized): BI reads its scores."""
    return any(rec.event_log_entry.dagster_event.asset_key == SERVING
               for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records)


def run_failures(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    return [{"step": rec.event_log_entry.dagster_event.step_key,
             "message": failure_message(rec.event_log_entry.dagster_event.event_specific_data.error)}
            for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records]


def evaluate_run(instance: dg.DagsterInstance, run_id: str, home: str | Path, settings: dict,
                 env: Mapping[str, str] | None = None) -> list[Outcome]:
    """Alert on what went wrong in a finished run, once per run; returns what was sent (or suppressed)."""
    env = os.environ if env is None else env
    cfg = settings["alerts"]
    store = store_for(home)
    run = instance.get_run_by_id(run_id)
    if run is None or not run.is_finished or not store.claim_run(run_id):
        return []
    info = {"run_id": run_id, "job": run.job_name,
            "url": run_url(ui_base_url(home, cfg, env), run_id)}
    checks = run_checks(instance, run_id)
    drift = [c for c in checks if c["check"].endswith("_drift")]
    fresh = [c for c in checks if c["check"] == FRESHNESS_CHECK]
    guard = [c for c in checks if c["check"] == GUARD_CHECK]
    other = [c for c in checks if c not in drift and c not in fresh and c not in guard]
    held = [c for c in guard if not c["passed"]]

    drifted = drifted_checks(drift, cfg["drift_band"])
    stale = [c for c in fresh if not c["passed"]]
    failed = [c for c in other if not c["passed"]]
    # conditions measured again and found fine clear: their next occurrence alerts at once
    store.clear([f"drift:{c['asset'].split('/')[-1]}" for c in drift if c not in drifted]
                + [f"stale:{c['asset']}" for c in fresh if c["passed"]]
                + [f"check:{c['asset']}:{c['check']}" for c in other if c["passed"]]
                + ([f"run_failure:{run.job_name}"] if run.status == dg.DagsterRunStatus.SUCCESS else []))

    alerts = []
    if drifted:
        published = bi_publisher(settings) or published_in_run(instance, run_id)
        alerts.append(drift_alert(drifted, {**info, "published": published, "home": str(home)}))
    if failed:
        alerts.append(check_alert(failed, info))
    if held:
        alerts.append(held_alert(held, info))
    models = model_outcomes(home, run_id)
    unfinished = [m for m in models if m["training"] == "not_trained" or m["scoring"] == "failed"]
    store.clear([f"model:{m['model']}:{k}" for m in models if m not in unfinished
                 for k in ("not_trained", "failed")])
    if unfinished:
        alerts.append(model_outcome_alert(unfinished, info))
    if stale:
        alerts.append(stale_alert(stale, info))
    if run.status == dg.DagsterRunStatus.FAILURE:
        alerts.append(run_failure_alert(run_failures(instance, run_id), info, failed))
    return [send(alert, store, cfg, env) for alert in alerts]


def model_outcomes(home: str | Path, run_id: str) -> list[dict]:
    """What became of each model in the run (ml.model_runs), read from the warehouse; none when it cannot be
    read now (another run holds it: that run's own evaluation will tell)."""
    import duckdb

    from ml.registry import run_outcomes

    path = Path(home) / "warehouse.duckdb"
    if not path.exists():
        return []
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' "
                              "AND table_name = 'model_runs'").fetchone()[0]
            return run_outcomes(con, run_id) if has else []
    except duckdb.Error:
        return []


def send(alert: Alert, store: AlertStore, cfg: dict, env: Mapping[str, str]) -> Outcome:
    """Deliver to the channels routed for the alert's kind, unless every condition it reports was alerted
    within `repeat_after_hours` and has not cleared since."""
    if alert.keys and not store.due(alert.keys, timedelta(hours=float(cfg["repeat_after_hours"]))):
        return Outcome(alert, suppressed=True)
    channels = {c.name: c for c in channels_from_settings(cfg)}
    routed = [channels[n] for n in (cfg.get("routes") or {}).get(alert.kind, []) if n in channels]
    deliveries = [deliver(c, alert, env, cfg.get("delivery")) for c in routed if not c.missing(env)]
    for d in deliveries:
        store.record(alert.run_id, alert.kind, alert.title, d.channel, d.ok, d.attempts, d.error)
    if any(d.ok for d in deliveries):  # nobody heard it: the next run tries again
        store.alerted(alert.keys, alert.kind, alert.run_id)
    return Outcome(alert, deliveries)


def describe(outcomes: list[Outcome]) -> list[str]:
    """One line per alert for the CLI's summary."""
    lines = []
    for o in outcomes:
        if o.suppressed:
            lines.append(f"  {o.alert.kind}: {o.alert.title} — already alerted, not repeated")
        elif not o.deliveries:
            lines.append(f"  {o.alert.kind}: {o.alert.title} — no channel configured (docs/alerts.md)")
        else:
            sent = ", ".join(f"{d.channel} {'ok' if d.ok else 'FAILED (' + d.error + ')'}" for d in o.deliveries)
            lines.append(f"  {o.alert.kind}: {o.alert.title} — {sent}")
    return lines
