"""Alert messages (no dagster): what happened, how bad, which run, what to look at first.

The builders take plain dicts that orchestration/alerting.py reads from a finished Dagster run:
  check: {"asset": "scores/churn", "check": "churn_drift", "passed": False, "severity": "ERROR",
          "metadata": {"actual": ..., "threshold": ..., "drifted": [...], ...}}
  step failure: {"step": "raw__transactions", "message": "..."}
Alerts carry feature names, figures and run ids only: never customer data, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

KINDS = ("drift", "check_failure", "delivery_held", "model_outcome", "run_failure", "stale_scores", "test")
BAND_RANK = {"stable": 0, "warn": 1, "alert": 2}


@dataclass
class Alert:
    kind: str                      # one of KINDS: routes pick the channels by it
    severity: str                  # critical | error | warning | info
    title: str
    what: str                      # what happened, one sentence
    details: list[str]             # how bad: the figures and their thresholds
    look_first: str                # what to look at first
    run_id: str | None = None
    job: str | None = None
    run_url: str | None = None
    keys: list[str] = field(default_factory=list)  # the conditions it reports (deduplication)

    def text(self) -> str:
        run = f"Run: {self.run_id} (job {self.job})" if self.run_id else ""
        if self.run_url:
            run += f"\n  {self.run_url}"
        body = [f"[scorehouse] {self.severity.upper()}: {self.title}", "", self.what, "",
                *(f"  - {d}" for d in self.details)]
        if run:
            body += ["", run]
        body += ["", f"Look first: {self.look_first}"]
        return "\n".join(body)

    def as_dict(self) -> dict:
        return {"source": "scorehouse", "kind": self.kind, "severity": self.severity, "title": self.title,
                "what": self.what, "details": self.details, "look_first": self.look_first, "run_id": self.run_id,
                "job": self.job, "run_url": self.run_url, "dedupe_keys": self.keys, "text": self.text()}


def run_url(base: str | None, run_id: str | None) -> str | None:
    return f"{base.rstrip('/')}/runs/{run_id}" if base and run_id else None


def _model(check: dict) -> str:
    return check["asset"].split("/")[-1]


def drifted_checks(checks: list[dict], min_band: str = "alert") -> list[dict]:
    """The failed drift checks at `min_band` or worse."""
    need = BAND_RANK[min_band]
    return [c for c in checks if c["check"].endswith("_drift") and not c["passed"]
            and BAND_RANK.get(c["metadata"].get("band", "alert"), 2) >= need]


def _figure(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _column(d: dict) -> str:
    """e.g. `income PSI 0.48 KS 0.31 weight 0.12 (mean 38,751 → 56,897)`."""
    text = f"{d['column']} PSI {d['psi']:.2f}" + (f" KS {d['ks']:.2f}" if d.get("ks") is not None else "")
    if d.get("weight") is not None:
        text += f" weight {d['weight']:.2f}"
    if d.get("reference_mean") is not None or d.get("current_mean") is not None:
        text += f" (mean {_figure(d.get('reference_mean'))} → {_figure(d.get('current_mean'))})"
    return text


def _rows(md: dict) -> str:
    counts = md.get("counts") or md
    ref, cur = counts.get("reference_rows"), counts.get("current_rows")
    if ref is None and cur is None:
        return ""
    return f"; rows {'?' if ref is None else f'{ref:,}'} (reference) → {'?' if cur is None else f'{cur:,}'} (this run)"


def _drift_detail(check: dict) -> str:
    md = check["metadata"]
    listed = md.get("drifted", [])
    scores = ", ".join(_column(d) for d in listed if d["kind"] == "score") or "none measured"
    inputs = ", ".join(_column(d) for d in listed if d["kind"] != "score") or "none drifted"
    skipped = f"; not counted: {', '.join(d['column'] for d in md['skipped'])}" if md.get("skipped") else ""
    measured = (md.get("counts") or md).get("inputs_measured", "?")
    version = str(md.get("model_version", "?")).removeprefix("v")
    return (f"{_model(check)} v{version} [{md.get('band', 'alert')}]: score {scores}; "
            f"inputs (importance-weighted PSI {md.get('input_psi', 0):.2f}, {md.get('inputs_drifted', '?')} of "
            f"{measured} drifted): {inputs}{_rows(md)}{skipped}")


def _published(run: dict) -> str:
    """Whether BI reads the drifted scores, and how to stop it."""
    if run.get("published") is None:
        return ""
    home = f" --home {run['home']}" if run.get("home") else ""
    if run["published"] == "lake":  # the iceberg backend: the run scored the DuckDB file's sample
        return (" These are the scores of the DuckDB file's sample of customers (warehouse.lake.sample_customers): "
                "job lake scores every customer with the same champions and publishes them for BI. To serve the "
                f"previous serving file again after it: `scorehouse rollback{home}`.")
    if not run["published"]:
        return (" These scores were not published: serving/published did not run in this run, so BI still reads "
                "the previous serving file.")
    return (" These scores were published: serving/published ran in this run, so BI reads them now. To serve the "
            f"previous serving file again: `scorehouse rollback{home}` (`--list` shows the versions kept); the next "
            "run publishes over it.")


def drift_alert(checks: list[dict], run: dict) -> Alert:
    """One message for every drifted model of a run: each model's score and the inputs that weigh most, with
    reference -> current means and row counts; whether the scores were published (run["published"]) and how
    to roll back."""
    threshold = checks[0]["metadata"].get("threshold", "") if checks else ""
    models = ", ".join(_model(c) for c in checks)
    return Alert(
        kind="drift", severity="error" if any(c["metadata"].get("band") == "alert" for c in checks) else "warning",
        title=f"drift in {len(checks)} model{'s' if len(checks) > 1 else ''}: {models}",
        what=f"The population scored in this run differs from the one the champion models were trained on "
             f"({threshold}).{_published(run)}",
        details=[_drift_detail(c) for c in checks],
        look_first="the inputs listed under each drifted score: if they moved because the population really "
                   "changed, retrain (`scorehouse run --job retrain`) and let the gates decide; if several inputs of "
                   "one source move together, compare this run's landing files with the previous ones (a changed "
                   "export: units, a new product, a migrated field). monitoring.drift has every column's PSI, KS "
                   "and weight.",
        run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"drift:{_model(c)}" for c in checks])


def check_alert(checks: list[dict], run: dict) -> Alert:
    """One message for the failed quality and benchmark checks of a run (drift and freshness have their own)."""
    details = [f"{c['asset']} {c['check']} ({c['severity']}): {c['metadata'].get('failed') or c['metadata'].get('actual')}"
               f" (threshold {c['metadata'].get('threshold', 'n/a')})" for c in checks]
    gates = [c for c in checks if c["check"].endswith("_gate")]
    look = ("the gate's metadata in the UI and ml.model_registry (note of the rejected version): the champion "
            "stays in service until a challenger passes." if gates else
            "the check's metadata in the UI (asset page, Checks tab); quarantine.* holds rejected rows with the file, "
            "row and reason.")
    return Alert(
        kind="check_failure", severity="error" if any(c["severity"] == "ERROR" for c in checks) else "warning",
        title=f"{len(checks)} check{'s' if len(checks) > 1 else ''} failed: "
              + ", ".join(c["check"] for c in checks[:5]) + (" ..." if len(checks) > 5 else ""),
        what="Quality or benchmark checks failed in this run (a failed check does not fail the run by itself).",
        details=details, look_first=look, run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"check:{c['asset']}:{c['check']}" for c in checks])


def held_alert(checks: list[dict], run: dict) -> Alert:
    """One message for the deliveries the volume guard held back in a run; one condition per delivery, so each
    held delivery is alerted once (until `repeat_after_hours`), however many runs see it held."""
    held = [(c["asset"], h) for c in checks for h in (c["metadata"].get("held") or [])]
    details = [f"{asset}: {h['file']}: {h['rows_read']:,} rows read"
               + (f"; the table's current {h['rows_before']:,} rows would become {h['rows_after']:,}"
                  if h.get("rows_before") is not None else "")
               + f" — {(h.get('why') or '').split('; nothing')[0]}" for asset, h in held]
    files = ", ".join(h["file"] for _, h in held)
    return Alert(
        kind="delivery_held", severity="error",
        title=f"deliver{'ies' if len(held) > 1 else 'y'} held back: {files}",
        what="A delivery would have shrunk a table beyond its max_shrink, or re-sent a file shorter than before. "
             "It was held back whole: nothing was replaced, the pipeline goes on with the last good state.",
        details=details,
        look_first="`scorehouse deliveries list`, then the file itself: a cut-off copy or a partial export should be "
                   "sent again by the bank; if it is right (customers really left), `scorehouse deliveries accept "
                   "FILE` and the next run loads it.",
        run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"held:{asset}:{h['delivery_id']}" for asset, h in held])


def model_outcome_alert(rows: list[dict], run: dict) -> Alert:
    """The models a run could not train or score (ml.model_runs): the run itself succeeded, the model stays as
    it was; each line says why. Rejected challengers are alerted by their gate check."""
    names = ", ".join(r["model"] for r in rows)
    return Alert(
        kind="model_outcome", severity="warning",
        title=f"not trained or not scored: {names}",
        what="The run went through, but these models were not trained or not scored; their champions, if any, "
             "stay in service.",
        details=[f"{r['model']}: {r['outcome']}" for r in rows],
        look_first="the reason on each line: a label the models read that the source config does not map "
                   "(docs/source-config.md lists them), too few outcomes to judge, or inputs missing from today's "
                   "features (retrain, or deliver them again). ml.model_runs has every run's outcomes.",
        run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"model:{r['model']}:{r['training'] or r['scoring']}" for r in rows])


def run_failure_alert(failures: list[dict], run: dict, failed_checks: list[dict] = ()) -> Alert:
    details = [f"step {f['step']}: {f['message']}" for f in failures] or ["the run ended in failure"]
    blocking = [c["check"] for c in failed_checks if c["check"].endswith("_gate")]
    if blocking:
        details.append(f"blocking checks that failed: {', '.join(blocking)} (the check alert has their figures)")
    return Alert(
        kind="run_failure", severity="critical",
        title=f"run of job {run.get('job')} failed" + (f" at {failures[0]['step']}" if failures else ""),
        what="A pipeline run failed. Tables it did not reach keep their last good contents (scores.* included).",
        details=details,
        look_first="the first failed step's error in the run's logs; a file that cannot be read is named there. "
                   "Fix the input or the config, then run again (ingest skips files already loaded).",
        run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"run_failure:{run.get('job')}"])


def _stale_detail(check: dict) -> str:
    md = check["metadata"]
    last = md.get("dagster/last_updated_timestamp")
    hours = (md.get("dagster/freshness_params") or {}).get("lower_bound_delta_seconds", 0) / 3600
    when = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M UTC") if last else "never"
    return f"{check['asset']}: last updated {when}; expected within the last {hours:g} h"


def stale_alert(checks: list[dict], run: dict) -> Alert:
    details = [_stale_detail(c) for c in checks]
    return Alert(
        kind="stale_scores", severity="warning",
        title="stale scores: " + ", ".join(c["asset"] for c in checks),
        what="Scored tables have not been refreshed within their freshness window: BI is reading old scores.",
        details=details,
        look_first="whether the daily_scoring schedule is running (Dagster UI: Automation) and the last `score` run "
                   "succeeded; `scorehouse run --job score` refreshes them.",
        run_id=run.get("run_id"), job=run.get("job"), run_url=run.get("url"),
        keys=[f"stale:{c['asset']}" for c in checks])


def test_alert(url: str | None = None) -> Alert:
    return Alert(kind="test", severity="info", title="test message",
                 what="`scorehouse alerts test` sent this to check the channel works. Nothing is wrong.",
                 details=["no action needed"], look_first="nothing", run_url=url, keys=[])


# ------------------------------------------------------------------------------------ payloads per channel
def slack_payload(alert: Alert) -> dict:
    lines = "\n".join(f"• {d}" for d in alert.details)
    run = f"Run `{alert.run_id}` (job {alert.job})" + (f" <{alert.run_url}|open in Dagster>" if alert.run_url else "") \
        if alert.run_id else ""
    return {"text": f"[scorehouse] {alert.severity.upper()}: {alert.title}", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": f"{alert.severity.upper()}: {alert.title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{alert.what}\n{lines}"[:3000]}},
        *([{"type": "context", "elements": [{"type": "mrkdwn", "text": run}]}] if run else []),
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Look first:* {alert.look_first}"[:3000]}},
    ]}


def teams_payload(alert: Alert) -> dict:
    return {"text": alert.text().replace("\n", "\n\n")}  # Teams incoming webhooks render `text` as markdown


def pagerduty_payload(alert: Alert, routing_key: str) -> dict:
    severity = {"critical": "critical", "error": "error", "warning": "warning"}.get(alert.severity, "info")
    return {"routing_key": routing_key, "event_action": "trigger",
            "dedup_key": ";".join(alert.keys) or None,
            "payload": {"summary": f"[scorehouse] {alert.title}"[:1024], "source": "scorehouse", "severity": severity,
                        "custom_details": alert.as_dict()},
            **({"links": [{"href": alert.run_url, "text": "Dagster run"}]} if alert.run_url else {})}
