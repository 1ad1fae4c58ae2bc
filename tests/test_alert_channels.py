"""Alert channels against real receivers on 127.0.0.1, deduplication, and the alerts of a run read from Dagster."""

import datetime as dt
import ssl
from datetime import timedelta

import dagster as dg
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from assets.settings import load_settings
from orchestration.alerting import evaluate_run
from quality.alert_store import AlertStore
from quality.alerts import Alert
from quality.channels import Channel, deliver
from tests.receivers import HttpReceiver, SmtpReceiver, _Mailbox, closed_url, free_port

ALERT = Alert(kind="drift", severity="error", title="drift in 1 model: churn", what="The population moved.",
              details=["churn v3 [alert]: income PSI 0.62 KS 0.31"], look_first="the landing files",
              run_id="abc123", job="score", run_url="http://ui/runs/abc123", keys=["drift:churn"])
FAST = {"attempts": 3, "backoff_seconds": 0.5, "timeout_seconds": 2}


def test_slack_and_webhook_formats_reach_the_receiver():
    with HttpReceiver() as rx:
        env = {"SLACK": rx.url("/slack"), "HOOK": rx.url("/hook"), "PD": rx.url("/pd"), "KEY": "rk-1",
               "TEAMS": rx.url("/teams")}
        channels = [Channel("slack", {"type": "slack", "url_env": "SLACK"}),
                    Channel("hook", {"type": "webhook", "url_env": "HOOK"}),
                    Channel("pd", {"type": "webhook", "format": "pagerduty", "url_env": "PD", "routing_key_env": "KEY"}),
                    Channel("teams", {"type": "webhook", "format": "teams", "url_env": "TEAMS"})]
        assert [deliver(c, ALERT, env, FAST).ok for c in channels] == [True] * 4
    got = dict(rx.received)
    assert got["/slack"]["text"] == "[scorehouse] ERROR: drift in 1 model: churn"
    assert "income PSI 0.62" in got["/slack"]["blocks"][1]["text"]["text"]
    assert "<http://ui/runs/abc123|open in Dagster>" in got["/slack"]["blocks"][2]["elements"][0]["text"]
    assert got["/hook"]["kind"] == "drift" and got["/hook"]["details"] == ALERT.details and got["/hook"]["run_id"] == "abc123"
    assert got["/pd"]["routing_key"] == "rk-1" and got["/pd"]["event_action"] == "trigger"
    assert got["/pd"]["dedup_key"] == "drift:churn" and got["/pd"]["payload"]["severity"] == "error"
    assert "income PSI 0.62" in got["/teams"]["text"]


def test_email_over_smtp():
    with SmtpReceiver() as smtp:
        env = {"HOST": smtp.address, "TO": "a@bank.test, b@bank.test"}
        d = deliver(Channel("email", {"type": "email", "host_env": "HOST", "to_env": "TO"}), ALERT, env, FAST)
    assert d.ok, d.error
    (msg,) = smtp.messages
    assert msg["Subject"] == "[scorehouse] ERROR: drift in 1 model: churn" and msg["To"] == "a@bank.test, b@bank.test"
    assert "income PSI 0.62" in msg.get_payload() and "Look first: the landing files" in msg.get_payload()


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_email_uses_starttls_when_the_server_offers_it(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = _Mailbox()
    # require_starttls: the server refuses mail on a plain connection, so a delivery proves TLS was used
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), tls_context=server_tls, require_starttls=True)
    controller.start()
    try:
        channel = Channel("email", {"type": "email", "host_env": "HOST", "to_env": "TO", "cafile": str(cert)})
        env = {"HOST": f"127.0.0.1:{controller.port}", "TO": "oncall@bank.test"}
        assert deliver(channel, ALERT, env, FAST).ok
        never = Channel("email", {**channel.cfg, "starttls": "never"})
        refused = deliver(never, ALERT, env, FAST)
    finally:
        controller.stop()
    assert len(box.messages) == 1
    assert not refused.ok and refused.attempts == 1  # a refusal is not retried


def test_a_down_channel_is_retried_with_backoff_then_recorded_without_its_secret():
    url = closed_url()
    waits = []
    d = deliver(Channel("slack", {"type": "slack", "url_env": "URL"}), ALERT, {"URL": url}, FAST, sleep=waits.append)
    assert (d.ok, d.attempts, waits) == (False, 3, [0.5, 1.0])
    assert d.error.startswith("ConnectionError") and "s3cr3t-token" not in d.error and url not in d.error


def test_server_errors_are_retried_and_client_errors_are_not():
    with HttpReceiver(status=503) as busy, HttpReceiver(status=403) as forbidden:
        waits = []
        d503 = deliver(Channel("h", {"type": "webhook", "url_env": "U"}), ALERT, {"U": busy.url()}, FAST, waits.append)
        d403 = deliver(Channel("h", {"type": "webhook", "url_env": "U"}), ALERT, {"U": forbidden.url()}, FAST, waits.append)
    assert (d503.attempts, len(busy.received), d503.error) == (3, 3, "_Retryable: HTTP 503")
    assert (d403.attempts, len(forbidden.received)) == (1, 1) and "HTTP 403" in d403.error


def test_an_unconfigured_channel_says_which_variable_is_missing():
    d = deliver(Channel("slack", {"type": "slack", "url_env": "SCOREHOUSE_ALERT_SLACK_URL"}), ALERT, {}, FAST)
    assert (d.ok, d.attempts, d.error) == (False, 0, "not configured: SCOREHOUSE_ALERT_SLACK_URL not set")


def test_a_condition_alerts_once_until_it_clears_or_the_interval_passes(tmp_path):
    store = AlertStore(tmp_path / "alerts.sqlite")
    now = dt.datetime(2026, 11, 23, 6, 0)
    day = timedelta(hours=24)
    assert store.due(["drift:churn"], day, now) == ["drift:churn"]
    store.alerted(["drift:churn"], "drift", "r1", now)
    assert store.due(["drift:churn", "drift:clv"], day, now + timedelta(hours=1)) == ["drift:clv"]
    assert store.due(["drift:churn"], day, now + timedelta(hours=25)) == ["drift:churn"]  # interval passed
    assert store.clear(["drift:churn"]) == 1
    assert store.due(["drift:churn"], day, now + timedelta(hours=1)) == ["drift:churn"]  # cleared: alerts again
    assert store.claim_run("r1") and not store.claim_run("r1")


def test_a_failed_run_alerts_once_with_its_error(tmp_path):
    @dg.asset
    def raw_transactions():
        raise dg.Failure("transactions.csv row 7, column amount: 'abc' is not a number")

    settings = load_settings(tmp_path)
    settings["alerts"]["routes"] = {"run_failure": ["webhook"]}
    with HttpReceiver() as rx, dg.instance_for_test() as instance:
        result = dg.materialize([raw_transactions], instance=instance, raise_on_error=False)
        env = {"SCOREHOUSE_ALERT_WEBHOOK_URL": rx.url()}
        first = evaluate_run(instance, result.run_id, tmp_path, settings, env)
        again = evaluate_run(instance, result.run_id, tmp_path, settings, env)  # e.g. the daemon's sensor too
    assert [o.alert.kind for o in first] == ["run_failure"] and again == []
    (body,) = rx.bodies()
    assert body["severity"] == "critical" and "transactions.csv row 7, column amount" in body["details"][0]


def test_alert_sensors_are_on_by_default():
    from orchestration.definitions import defs

    sensors = {s.name: s for s in defs.sensors}
    for name in ("alert_on_checks_and_drift", "alert_on_run_failure", "freshness_checks_sensor", "landing_files"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING


def test_stale_scores_alert_from_the_freshness_checks(tmp_path):
    from orchestration.sensors import build_freshness

    @dg.asset(key=["scores", "churn"])
    def churn_scores():
        return None

    checks, _ = build_freshness([churn_scores.key], 26)
    job = dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*checks))  # what the sensor launches
    defs = dg.Definitions(assets=[churn_scores], asset_checks=checks, jobs=[job])
    settings = load_settings(tmp_path)
    with HttpReceiver() as rx, dg.instance_for_test() as instance:
        result = defs.resolve_job_def("freshness").execute_in_process(instance=instance, raise_on_error=False)
        outcomes = evaluate_run(instance, result.run_id, tmp_path, settings, {"SCOREHOUSE_ALERT_WEBHOOK_URL": rx.url()})
    assert result.success and [o.alert.kind for o in outcomes] == ["stale_scores"]
    (body,) = rx.bodies()
    assert body["details"] == ["scores/churn: last updated never; expected within the last 26 h"]
    assert "daily_scoring" in body["look_first"]


def test_alerts_test_command_reports_each_channel(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    down = closed_url()
    with HttpReceiver() as rx:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREHOUSE_ALERT_")}
        env.update(SCOREHOUSE_ALERT_WEBHOOK_URL=rx.url(), SCOREHOUSE_ALERT_SLACK_URL=down)
        run = subprocess.run([str(Path(sys.executable).parent / "scorehouse"), "alerts", "test", "--home", str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1  # one configured channel failed
    out = run.stdout
    assert "webhook    (webhook) ok" in out and "slack      (slack) FAILED: ConnectionError" in out
    assert "email      (email) skipped: SCOREHOUSE_ALERT_SMTP_HOST, SCOREHOUSE_ALERT_EMAIL_TO not set" in out
    assert "1 of 2 configured channel(s) worked" in out and "s3cr3t-token" not in out + run.stderr
    assert [b["kind"] for b in rx.bodies()] == ["test"]


def test_a_drift_alert_says_whether_the_run_published_the_scores(tmp_path):
    """The alert is evaluated when the run has ended: it reads from the run's events whether serving/published
    materialized, i.e. whether BI already reads the drifted scores, and then says how to roll back."""
    import pandas as pd

    from assets.lifecycle import drift_result
    from assets.serving import KEY
    from quality.drift import Bands

    rows = pd.DataFrame([{"feature": "churn_probability", "kind": "score", "psi": 0.4, "ks": 0.3, "band": "alert",
                          "reference_mean": 0.2, "current_mean": 0.35, "weight": None, "model_version": 2,
                          "reference_rows": 5000, "current_rows": 4000}])

    @dg.asset(key=["scores", "churn"])
    def churn_scores():
        return None

    @dg.asset_check(asset=churn_scores, name="churn_drift")
    def churn_drift():
        return drift_result(rows, Bands())

    @dg.asset(key=KEY, deps=[churn_scores])
    def published():
        return None

    settings = load_settings(tmp_path)
    settings["alerts"]["routes"] = {"drift": ["webhook"]}
    with HttpReceiver() as rx, dg.instance_for_test() as instance:
        env = {"SCOREHOUSE_ALERT_WEBHOOK_URL": rx.url()}
        # the iceberg backend's runs score the DuckDB file's sample; job lake publishes every customer's scores
        lake = {**settings, "warehouse": {**settings["warehouse"], "backend": "iceberg"}}
        for selection, home, config in (([churn_scores, churn_drift, published], tmp_path / "a", settings),
                                        ([churn_scores, churn_drift], tmp_path / "b", settings),
                                        ([churn_scores, churn_drift], tmp_path / "c", lake)):
            result = dg.materialize(selection, instance=instance)
            evaluate_run(instance, result.run_id, home, config, env)
    sent, held, sample = rx.bodies()
    assert "the DuckDB file's sample of customers" in sample["what"] and "job lake scores every customer" in sample["what"]
    assert sent["kind"] == held["kind"] == "drift" and sent["severity"] == "error"
    assert "These scores were published" in sent["what"] and f"scorehouse rollback --home {tmp_path / 'a'}" in sent["what"]
    assert "These scores were not published" in held["what"] and "rollback" not in held["what"]
    assert "churn_probability PSI 0.40 KS 0.30 (mean 0.2 → 0.35)" in sent["details"][0]
    assert "rows 5,000 (reference) → 4,000 (this run)" in sent["details"][0]
