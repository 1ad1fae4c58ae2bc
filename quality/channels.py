"""Alert channels (no dagster): Slack incoming webhook, generic JSON webhook (json | teams | pagerduty) and
SMTP email. Secrets come from environment variables named in the settings and never leave this module: a
failed delivery is reported by channel name and error kind, with any secret and any URL scrubbed out.

Delivery retries with exponential backoff (settings alerts.delivery) and then gives up: a channel that is
down costs at most attempts x timeout + backoff, is recorded, and never fails the pipeline.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from quality.alerts import Alert, pagerduty_payload, slack_payload, teams_payload

URL = re.compile(r"\w+://\S+")


class DeliverySettings(BaseModel):
    """alerts.delivery."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(3, ge=1, description=(
        "per channel and message; then the failure is recorded and the pipeline goes on"))
    backoff_seconds: float = Field(0.5, ge=0, description="doubled after each failed attempt")
    timeout_seconds: float = Field(5, gt=0, description="each attempt at most")


TYPE = "slack | webhook | email; default: the channel's name"


class _ChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackSettings(_ChannelSettings):
    """Slack incoming webhook."""

    type: Literal["slack"] = Field("slack", description=TYPE)
    url_env: str = Field(description="environment variable holding the webhook URL")


class WebhookSettings(_ChannelSettings):
    """Generic JSON POST."""

    type: Literal["webhook"] = Field("webhook", description=TYPE)
    url_env: str = Field(description="environment variable holding the URL")
    format: Literal["json", "teams", "pagerduty"] = Field("json", description="json | teams | pagerduty (Events API v2)")
    routing_key_env: str | None = Field(None, description="environment variable of the integration key (pagerduty)")


class EmailSettings(_ChannelSettings):
    """SMTP."""

    type: Literal["email"] = Field("email", description=TYPE)
    host_env: str = Field(description="environment variable: host or host:port")
    to_env: str = Field(description="environment variable: comma-separated addresses")
    username_env: str | None = Field(None, description="environment variable: login (only when set)")
    password_env: str | None = Field(None, description="environment variable: password")
    sender: str = Field("scorehouse@localhost", description="From: address")
    starttls: Literal["auto", "always", "never"] = Field("auto", description=(
        "auto: when the server offers it; always: never send in the clear; never: a local relay"))
    port: int = Field(587, ge=1, le=65535, description="when the host names none")
    cafile: str | None = Field(None, description="CA bundle to verify the server with (default: the system's)")


CHANNEL_TYPES = {"slack": SlackSettings, "webhook": WebhookSettings, "email": EmailSettings}
ChannelSettings = Annotated[SlackSettings | WebhookSettings | EmailSettings, Field(discriminator="type")]
_CHANNEL = TypeAdapter(ChannelSettings)


def with_type(name: str, cfg: Any) -> Any:
    """A channel's settings with its `type`, which defaults to the channel's name."""
    return {"type": name, **cfg} if isinstance(cfg, Mapping) and "type" not in cfg else cfg


@dataclass
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str = ""


@dataclass(frozen=True)
class Channel:
    name: str
    cfg: dict  # validated on construction: every key of its type is there, defaults filled in

    def __post_init__(self):
        object.__setattr__(self, "cfg", _CHANNEL.validate_python(with_type(self.name, self.cfg)).model_dump())

    @property
    def type(self) -> str:
        return self.cfg["type"]

    def _env_names(self) -> dict[str, str]:
        return {k.removesuffix("_env"): v for k, v in self.cfg.items() if k.endswith("_env") and v}

    def required(self) -> list[str]:
        """The environment variables that must be set for this channel to be active."""
        names = self._env_names()
        need = {"slack": ["url"], "webhook": ["url"], "email": ["host", "to"]}.get(self.type, [])
        if self.type == "webhook" and self.cfg["format"] == "pagerduty":
            need = [*need, "routing_key"]
        return [names[k] for k in need if k in names]

    def missing(self, env: Mapping[str, str]) -> list[str]:
        return [n for n in self.required() if not env.get(n)]

    def secrets(self, env: Mapping[str, str]) -> list[str]:
        """Every value this channel reads from the environment, and the path and query of any URL among them
        (a Slack webhook's token is its path): scrubbed from any error it reports."""
        values = [env[n] for n in self._env_names().values() if env.get(n)]
        parts = [x for v in values if "://" in v for x in (urlsplit(v).path, urlsplit(v).query) if len(x) > 1]
        return values + parts

    def value(self, key: str, env: Mapping[str, str]) -> str | None:
        name = self._env_names().get(key)
        return env.get(name) if name else None


def channels_from_settings(cfg: dict) -> list[Channel]:
    return [Channel(name, dict(c or {})) for name, c in (cfg.get("channels") or {}).items()]


def scrub(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, "***")
    return URL.sub("<url>", text)


class _Retryable(Exception):
    pass


def _post(url: str, payload: dict, timeout: float) -> None:
    r = requests.post(url, json=payload, timeout=timeout)
    if r.status_code >= 500 or r.status_code == 429:
        raise _Retryable(f"HTTP {r.status_code}")
    if r.status_code >= 400:
        raise ValueError(f"HTTP {r.status_code} (rejected: check the URL or key)")


def _smtp(channel: Channel, alert: Alert, env: Mapping[str, str], timeout: float) -> None:
    host = channel.value("host", env) or ""
    host, _, port = host.partition(":")
    msg = EmailMessage()
    msg["Subject"] = f"[scorehouse] {alert.severity.upper()}: {alert.title}"
    msg["From"] = channel.cfg["sender"]
    msg["To"] = ", ".join(a.strip() for a in (channel.value("to", env) or "").split(",") if a.strip())
    msg.set_content(alert.text())
    mode = channel.cfg["starttls"]
    with smtplib.SMTP(host, int(port or channel.cfg["port"]), timeout=timeout) as smtp:
        smtp.ehlo()
        if mode == "always" or (mode == "auto" and smtp.has_extn("starttls")):
            context = ssl.create_default_context(cafile=channel.cfg["cafile"])
            smtp.starttls(context=context)
            smtp.ehlo()
        user, password = channel.value("username", env), channel.value("password", env)
        if user:
            smtp.login(user, password or "")
        smtp.send_message(msg)


def _send_once(channel: Channel, alert: Alert, env: Mapping[str, str], timeout: float) -> None:
    if channel.type == "slack":
        _post(channel.value("url", env), slack_payload(alert), timeout)
    elif channel.type == "webhook":
        fmt = channel.cfg["format"]
        payload = (teams_payload(alert) if fmt == "teams" else
                   pagerduty_payload(alert, channel.value("routing_key", env) or "") if fmt == "pagerduty" else
                   alert.as_dict())
        _post(channel.value("url", env), payload, timeout)
    elif channel.type == "email":
        _smtp(channel, alert, env, timeout)
    else:
        raise ValueError(f"unknown channel type {channel.type!r} (slack, webhook, email)")


def deliver(channel: Channel, alert: Alert, env: Mapping[str, str], delivery: dict | None = None,
            sleep=time.sleep) -> Delivery:
    """Send `alert` through `channel`, retrying connection errors, timeouts, 5xx and 429 with backoff."""
    d = DeliverySettings.model_validate(dict(delivery or {}))
    attempts, backoff, timeout = d.attempts, d.backoff_seconds, d.timeout_seconds
    missing = channel.missing(env)
    if missing:
        return Delivery(channel.name, False, 0, f"not configured: {', '.join(missing)} not set")
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            _send_once(channel, alert, env, timeout)
            return Delivery(channel.name, True, attempt)
        except Exception as e:
            error = f"{type(e).__name__}: {_reason(e)}"
            if not _retryable(e):  # a 4xx, a refused login, a bad address: retrying will not help
                return Delivery(channel.name, False, attempt, scrub(error, channel.secrets(env))[:300])
        if attempt < attempts:
            sleep(backoff * 2 ** (attempt - 1))
    return Delivery(channel.name, False, attempts, scrub(error, channel.secrets(env))[:300])


def _reason(e: Exception) -> str:
    """A short reason; requests' own messages repeat the URL (and with it a webhook's token)."""
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.ConnectionError):
        return "could not connect (refused, unreachable or name not resolved)"
    return str(e)


def _retryable(e: Exception) -> bool:
    """Down, unreachable, slow or overloaded: worth another attempt."""
    if isinstance(e, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError | _Retryable):
        return True
    return isinstance(e, OSError) and not isinstance(e, smtplib.SMTPException)  # refused, reset, timed out
