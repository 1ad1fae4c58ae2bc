"""Settings: one typed model of everything users tune, each default in one place.

The defaults are the model's own: the fields below, the model parameters in ml/params.py, the drift bands in
quality/drift.py and the alert channels in quality/channels.py. Over them, merged key by key (a mapping merges,
anything else replaces): the source config's `settings:` block (what is specific to a bank's data), then
<home>/scorehouse.yaml, then the file named by $SCOREHOUSE_CONFIG. The merged result is validated as a whole;
an unknown key or a bad value is an error naming the file it came from and the key path, one line per problem.
docs/settings.md is generated from this model (`python -m orchestration.settings_doc > docs/settings.md`);
`scorehouse settings` shows the effective values and where each came from.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import os
import re
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ml.params import (
    BookScoreParams,
    ChurnParams,
    ChurnTraining,
    CLVParams,
    CreditParams,
    FraudParams,
    PerformanceParams,
    RecommendParams,
    RiskCutoffs,
    SegmentParams,
    champion_policy,
)
from quality.channels import ChannelSettings, DeliverySettings, EmailSettings, SlackSettings, WebhookSettings, with_type
from quality.drift import Bands
from warehouse.sources import SourceConfig, SourceConfigError, load_source, resolve_source
from warehouse.sqlcheck import UnsafeSql, expression


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ sections

class LakeSettings(Strict):
    location: str | None = Field(None, description=(
        "the Iceberg warehouse: a folder, file:///folder or s3://bucket/prefix (the catalog's URL, which may hold a "
        "password, comes from the environment variable SCOREHOUSE_CATALOG: postgresql://user@host:port/database)"))
    shards: int = Field(1, ge=1, le=4096, description=(
        "customer shards: hash(customer_id) mod shards (docs/scale-out.md); each shard's features are one step"))
    sample_customers: int | None = Field(500_000, ge=1, description=(
        "the DuckDB file builds the features of about this many customers when the bank has more, the same share "
        "of every shard (by a hash of customer_id): the models train, are gated and watched for drift on them, "
        "while the lake builds and scores every customer's and BI is published from it (docs/scale-out.md). "
        "null: every customer"))
    keep_snapshots_days: int = Field(7, ge=1, description=(
        "job `lake_maintenance` expires the lake's table snapshots older than this (a past run's state is read "
        "back until then; the current state is always kept) and deletes the files no snapshot left refers to"))
    orphan_grace_hours: float = Field(24, gt=0, description=(
        "files younger than this are never deleted as unreferenced: a writer's data files before its commit"))
    keep_feature_dates_days: int | None = Field(None, ge=1, description=(
        "job `lake_maintenance` deletes the lake's feature tables of snapshot dates older than this many days "
        "before the newest one (null: every date is kept); scores and their history are always kept"))
    first_snapshot: date = Field(date(2020, 1, 1), description=(
        "the first day of the lake assets' daily snapshot partitions (a past snapshot is backfilled from the UI)"))


class ExecutionSettings(Strict):
    executor: Literal["in_process", "multiprocess", "k8s", "celery"] | None = Field(None, description=(
        "how job `lake`'s steps are executed (docs/scale-out.md; the embedded jobs always run in process: their "
        "steps take the DuckDB file one at a time). null: multiprocess, a process per step on this machine; "
        "in_process: one after the other in the run's process; k8s: a Kubernetes job per step (Dagster's "
        "k8s_job_executor, package dagster-k8s); celery: Celery workers (package dagster-celery, broker URL from "
        "SCOREHOUSE_CELERY_BROKER)"))
    max_concurrent: int = Field(2, ge=1, description=(
        "job `lake`'s steps run at once by the multiprocess, k8s or celery executor (on one machine, one per core "
        "is a start)"))


class WarehouseSettings(Strict):
    memory_limit: str = Field("2GB", description="DuckDB spills to <home>/tmp beyond this; keeps big loads within RAM")
    threads: int | None = Field(None, ge=1, description="DuckDB threads; null: all cores")
    run_lock_wait_seconds: float = Field(7200, ge=0, description=(
        "a run waits this long while another run of the same home holds it, then fails"))
    backend: Literal["duckdb", "iceberg"] = Field("duckdb", description=(
        "duckdb: everything in <home>/warehouse.duckdb (the default). iceberg: also the lake of `lake:`: job `lake` "
        "builds its features and scores shard by shard (docs/scale-out.md; being built: training and publishing "
        "still read the DuckDB file)"))
    lake: LakeSettings = Field(default_factory=LakeSettings)

    @model_validator(mode="after")
    def _lake_located(self):
        if self.backend == "iceberg" and not self.lake.location:
            raise ValueError("backend iceberg needs lake.location (a folder or s3://bucket/prefix)")
        return self


class IngestSettings(Strict):
    max_quarantine_share: float = Field(0.05, ge=0, le=1, description=(
        "asset check `quarantine_share` warns when more than this share of a run's rows was rejected"))


def _bound(value: Any) -> int | float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise ValueError(f"expected a number or null, got {_show(value)}")


def _range(value: tuple) -> tuple:
    lo, hi = value
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"the low bound is above the high one, got [{lo}, {hi}]")
    return value


Bound = Annotated[int | float | None, BeforeValidator(_bound)]
Range = Annotated[tuple[Bound, Bound], AfterValidator(_range)]


def _one_expression(value: str) -> str:
    """Pasted into a query (CLV's purchases, the book's activity): one SQL expression, never a statement
    (warehouse/sqlcheck.py)."""
    try:
        return expression(value)
    except UnsafeSql as e:
        raise ValueError(f"{e}: {value!r}") from e


SqlExpression = Annotated[str, AfterValidator(_one_expression)]


class BookSettings(Strict):
    periods: int = Field(15, ge=4, le=60, description=(
        "months of book history built (the latest complete month and those before it): what the performance models "
        "learn from"))
    activity_filter: SqlExpression = Field("category IS NULL OR category NOT IN ('fee', 'interest')", description=(
        "SQL on raw.transactions: the transactions that count as a customer using a product (by default all but "
        "what the bank books itself: fees and interest)"))
    score: BookScoreParams = Field(default_factory=BookScoreParams, description="ml/params.py BookScoreParams")


class FeatureSettings(Strict):
    not_null: list[str] = Field(
        ["customer_id", "snapshot_date", "frequency", "monetary", "products_held", "rfm_score"],
        description="asset check `features_not_null` fails when one of these feature columns has nulls")
    ranges: dict[str, Range] = Field(
        {"financial_health_score": (0, 100), "recency_days": (0, None), "frequency": (0, None),
         "monetary": (0, None), "rfm_r": (1, 5), "rfm_f": (1, 5), "rfm_m": (1, 5), "products_held": (0, None),
         "age": (0, 120)},
        description="asset check `features_in_range`: inclusive [low, high] per column; null: no bound")
    book: BookSettings = Field(default_factory=BookSettings, description=(
        "features.book_performance: each relationship manager's and agency's book month by month, and its score"))


class SensorSettings(Strict):
    landing_interval_seconds: int = Field(60, ge=1, description=(
        "how often the landing-folder sensor looks for new or changed files"))
    alert_interval_seconds: int = Field(30, ge=1, description="how often the alert sensors look at finished runs")


class FreshnessSettings(Strict):
    max_age_hours: float = Field(26, gt=0, description=(
        "scores.* older than this: check `freshness_check` fails -> stale-scores alert"))


class MonitoringSettings(Strict):
    drift: Bands = Field(default_factory=Bands, description=(
        "each scoring run against the champion's reference profile (saved at training); docs/alerts.md"))
    freshness: FreshnessSettings = Field(default_factory=FreshnessSettings)


KINDS = ("drift", "check_failure", "run_failure", "stale_scores")


def _default_channels() -> dict[str, ChannelSettings]:
    return {
        "slack": SlackSettings(url_env="SCOREHOUSE_ALERT_SLACK_URL"),
        "webhook": WebhookSettings(url_env="SCOREHOUSE_ALERT_WEBHOOK_URL",
                                   routing_key_env="SCOREHOUSE_ALERT_PAGERDUTY_KEY"),
        "email": EmailSettings(host_env="SCOREHOUSE_ALERT_SMTP_HOST", to_env="SCOREHOUSE_ALERT_EMAIL_TO",
                               username_env="SCOREHOUSE_ALERT_SMTP_USER",
                               password_env="SCOREHOUSE_ALERT_SMTP_PASSWORD"),
    }


def _every_channel() -> list[str]:
    return list(_default_channels())


class RouteSettings(Strict):
    drift: list[str] = Field(default_factory=_every_channel, description="score or input drift")
    check_failure: list[str] = Field(default_factory=_every_channel, description=(
        "a failed check: gates, GX contract, feature checks, quarantine share"))
    delivery_held: list[str] = Field(default_factory=_every_channel, description=(
        "a delivery the volume guard held back (docs/deliveries.md)"))
    model_outcome: list[str] = Field(default_factory=_every_channel, description=(
        "a model not trained (and why) or not scored in a run that otherwise went through"))
    run_failure: list[str] = Field(default_factory=_every_channel, description="a failed run")
    stale_scores: list[str] = Field(default_factory=_every_channel, description="scores.* not refreshed in time")


class AlertSettings(Strict):
    ui_base_url: str | None = Field(None, description=(
        "e.g. http://dagster.bank.internal:3000: alerts link to the run; else $SCOREHOUSE_UI_URL, else where "
        "`scorehouse ui` last served the home"))
    drift_band: Literal["alert", "warn"] = Field("alert", description=(
        "drift alerts from this band up: alert, or warn for more (and noisier) alerts"))
    repeat_after_hours: float = Field(24, ge=0, description=(
        "the same condition on the same asset alerts again only after this (or once cleared)"))
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    channels: dict[str, ChannelSettings] = Field(default_factory=_default_channels, description=(
        "a channel is active when its environment variables are set; `type` (slack, webhook, email) defaults "
        "to the channel's name"))
    routes: RouteSettings = Field(default_factory=RouteSettings, description="alert kind -> channels")

    @field_validator("channels", mode="before")
    @classmethod
    def _typed(cls, channels: Any) -> Any:
        return {n: with_type(n, c) for n, c in channels.items()} if isinstance(channels, Mapping) else channels

    @field_validator("routes")
    @classmethod
    def _known_channels(cls, routes: RouteSettings, info: ValidationInfo) -> RouteSettings:
        known = info.data.get("channels")
        if known is None:  # the channels are wrong already: said once, there
            return routes
        for kind in KINDS:
            unknown = [c for c in getattr(routes, kind) if c not in known]
            if unknown:
                raise ValueError(f"{kind}: unknown channel {', '.join(unknown)} (channels: {', '.join(known)})")
        return routes


def _all_or_columns(value: Any) -> str | list[str]:
    if value == "all" or (isinstance(value, list) and all(isinstance(c, str) for c in value)):
        return value
    raise ValueError(f"expected `all` or a list of column names, got {_show(value)}")


class ServingSettings(Strict):
    keep_previous: int = Field(3, ge=0, description="earlier serving files kept under <home>/serving/ for `scorehouse rollback`")
    exports: bool = Field(True, description="also Parquet: <home>/exports/<model>/snapshot_date=<date>/scores.parquet")
    history_snapshots: int = Field(12, ge=1, description=(
        "the last N snapshots of each model in the serving file (scores.<model>_history, bi.score_trend) for "
        "trends; every snapshot stays in the Parquet exports"))
    shareable: dict[str, Annotated[Any, AfterValidator(_all_or_columns)]] = Field(
        {"scores.*": "all",
         "raw.customers": ["customer_id", "agency_id", "segment", "region"],
         "raw.agencies": ["agency_id", "agency_name", "region", "city"],
         "raw.products": ["product_id", "product_name", "category"]},
        description=("the only columns that leave the warehouse (serving file, its views, Parquet): `all`, or a "
                     "list, per table glob; a table not named here is not published. Never names, birth dates "
                     "or free text"))


CRON = re.compile(r"^[\w*/,?#-]+(\s+[\w*/,?#-]+){4}$")


def _cron(value: str) -> str:
    if not CRON.match(value.strip()):
        raise ValueError(f"expected a cron expression of 5 fields (minute hour day month weekday), got {value!r}")
    return value


class Schedule(Strict):
    cron: Annotated[str, AfterValidator(_cron)] = Field(description="when it runs, in schedules.timezone")
    enabled: bool = Field(True, description="false: the schedule is off")


class ScheduleSettings(Strict):
    timezone: str = Field("UTC", description="IANA name, e.g. Europe/Paris")
    daily_scoring: Schedule = Field(default_factory=lambda: Schedule(cron="0 6 * * *"), description=(
        "job `score`: ingest, features, score with the current champions"))
    weekly_retrain: Schedule = Field(default_factory=lambda: Schedule(cron="0 3 * * 0"), description=(
        "job `retrain`: ingest, features, a challenger per model behind its gate"))
    lake_maintenance: Schedule = Field(default_factory=lambda: Schedule(cron="0 2 * * 6"), description=(
        "job `lake_maintenance` (warehouse.backend iceberg only): old snapshots expired, unreferenced files deleted"))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (an IANA name, e.g. UTC or Europe/Paris)") from None
        return tz


# ---------------------------------------------------------------------------------------------------- models

def _no_thresholds(value: Any) -> Any:
    return {} if value is None else value


def _drop_nulls(thresholds: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in thresholds.items() if v is not None}


Thresholds = Annotated[dict[str, float | None], BeforeValidator(_no_thresholds), AfterValidator(_drop_nulls)]


class Gate(Strict):
    """A challenger becomes champion only if all of this holds on the holdout."""

    min: Thresholds = Field({}, description="metric: lowest value allowed (null drops a threshold; `min: null` all)")
    max: Thresholds = Field({}, description="metric: highest value allowed (null drops a threshold; `max: null` all)")
    not_worse_than_champion: dict[str, Literal["higher", "lower"]] = Field({}, description=(
        "metric: which way is better; compared with the champion re-scored on the same holdout"))
    tolerance: float = Field(0.0, ge=0, description="how much worse than the champion still counts as not worse")


GATE = "a challenger becomes champion only if all of this holds on the holdout"


class ChurnSettings(Strict):
    label: str = Field("churned", description="features.labels.label that marks a churned customer (value 1)")
    params: ChurnTraining = Field(default_factory=ChurnTraining, description="XGBoost and the split (ml/params.py)")
    # set beside the params, as users always have; the default is the model's own
    risk_cutoffs: RiskCutoffs = Field(ChurnParams.model_fields["risk_cutoffs"].default,
                                      description=ChurnParams.model_fields["risk_cutoffs"].description)
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"auc": 0.80}, max={"brier": 0.20}, not_worse_than_champion={"auc": "higher", "brier": "lower"},
        tolerance=0.005), description=GATE)
    actions: dict[str, str] = Field(
        {"recency_days": "win-back offer on the customer's main channel",
         "balance_change": "savings review with the relationship manager",
         "products_held": "cross-sell a second product",
         "spend_trend": "card usage incentive",
         "level:High": "retention call by the relationship manager within a week",
         "level:Medium": "personalised email offer"},
        description="first reason (feature-name prefix) with an action wins, else the risk level's (level:<level>)")


class SegmentSettings(Strict):
    params: SegmentParams = Field(default_factory=SegmentParams, description="ml/params.py SegmentParams")
    rfm_active_days: int = Field(7, ge=0, description=(
        "a customer whose last transaction is at most this many days before the snapshot is recent in the RFM "
        "segments (R at least 4: never Hibernating, At risk, Can't lose them, About to sleep or Lost), whatever "
        "the recency quintile says when most customers were seen in the last days"))
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"silhouette": 0.10, "min_share": 0.02}, not_worse_than_champion={"silhouette": "higher"},
        tolerance=0.02), description=f"{GATE}; min_share: the smallest segment's share of customers")


class SupervisedChallenger(Strict):
    enabled: bool = Field(True, description=(
        "XGBoost on customer features predicting the value bought after the snapshot, compared with BG/NBD x "
        "Gamma-Gamma in the training metadata (not promoted)"))
    max_rows: int = Field(200_000, ge=1, description="customers it is fitted on (hash sample)")


class ClvSettings(Strict):
    event_filter: SqlExpression = Field("amount < 0", description=(
        "SQL on raw.transactions: what counts as a purchase (money out by default)"))
    value_expr: SqlExpression = Field("-amount", description="the value of a purchase, positive (SQL)")
    min_repeat_customers: int = Field(50, ge=0, description="fewer customers with a repeat purchase: no CLV model")
    supervised_challenger: SupervisedChallenger = Field(default_factory=SupervisedChallenger)
    params: CLVParams = Field(default_factory=CLVParams, description="ml/params.py CLVParams")
    gate: Gate = Field(default_factory=lambda: Gate(max={"holdout_abs_error": 0.15}), description=(
        f"{GATE}. holdout_abs_error: aggregate repeat purchases predicted after the snapshot vs bought "
        "(relative). CDNOW, the model's reference data, lands at 0.121 with the paper's exact parameters; 0.15 "
        "keeps it and catches a model that does not fit"))


class CreditRiskSettings(Strict):
    label: str = Field("defaulted", description=(
        "features.labels.label of a default (value 1); without it: the RFM proxy target"))
    proxy_when_no_labels: bool = Field(True, description=(
        "false: no credit model at all for a source without default outcomes"))
    champion_policy: str | dict[str, float] = Field("best", description=(
        "which of the two models fitted side by side serves, judged on the same holdout: best (the higher AUC; "
        "the scorecard on a tie), scorecard (always the explainable one), or {scorecard_within: 0.01} (the "
        "scorecard unless the monotone XGBoost's AUC is more than 0.01 higher: a margin against holdout noise)"))
    params: CreditParams = Field(default_factory=CreditParams, description="ml/params.py CreditParams")
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"auc": 0.70}, not_worse_than_champion={"auc": "higher"}, tolerance=0.01), description=GATE)

    @field_validator("champion_policy")
    @classmethod
    def _policy(cls, value: str | dict) -> str | dict:
        champion_policy(value)  # raises naming what is allowed
        return value


class RecommendationSettings(Strict):
    params: RecommendParams = Field(default_factory=RecommendParams, description="ml/params.py RecommendParams")
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"map_at_5_lift": 1.0, "precision_at_5_of_ceiling": 0.75, "coverage": 0.8, "auc": 0.70},
        not_worse_than_champion={"map_at_5": "higher", "coverage": "higher"}, tolerance=0.01), description=(
        f"{GATE}. The guideline \"precision@5 >= 0.30\" cannot be met when customers take up about one product "
        "per window: precision@5 is then capped near 0.2 (reported as the ceiling). The gate asks for 75% of "
        "that ceiling, at least the popularity baseline's MAP@5, 80% catalogue coverage and a propensity AUC "
        "of 0.70"))


class FraudSettings(Strict):
    params: FraudParams = Field(default_factory=FraudParams, description="ml/params.py FraudParams")
    score_days: int = Field(1, ge=1, description=(
        "the transactions of the last this many calendar days delivered are scored (scores.fraud): the latest "
        "day's by default"))
    train_days: int = Field(90, ge=1, description=(
        "the transactions of this many days before the scored ones train the model; the latest "
        "`params.holdout_share` of them judge it"))
    history_days: int = Field(90, ge=1, description=(
        "each transaction is measured against its customer's transactions of this many days before it"))
    max_train_rows: int = Field(500_000, ge=1_000, description=(
        "above this many transactions in the training window, customers are sampled to read about this many: "
        "every customer with a labelled fraud is kept, the others weigh 1 / the share read, so holdout figures "
        "stay those of the whole population"))
    flagged_jump: float = Field(3.0, gt=1, description=(
        "check fraud_flagged fails (WARN, alerted) when a run flags more than this many times the transactions "
        "its champion flagged on its holdout, for as many transactions"))
    flagged_jump_min: int = Field(10, ge=0, description="... and at least this many more (a handful is noise)")
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"auprc": 0.5, "recall_at_review": 0.5},
        not_worse_than_champion={"auprc": "higher", "precision_at_review": "higher"}, tolerance=0.02),
        description=(f"{GATE}, when frauds are labelled (supervised). recall_at_review: the share of the holdout's "
                     "frauds in a daily review queue of `params.review_per_day`; precision at review is compared "
                     "with the champion but has no floor, as its ceiling is the frauds a day over the queue's size"))
    unsupervised_gate: Gate = Field(default_factory=lambda: Gate(max={"flagged_share": 0.01}), description=(
        "the gate of an anomaly score (no labels to judge it by): flagged_share, the holdout's share above "
        "`params.flag_at_unsupervised`, at most this (a model flagging more is broken, not vigilant)"))


SUPPORT = {
    "activity": "reactivate dormant products: call the clients whose products saw no use this quarter",
    "activity_mean_3": "reactivate dormant products: call the clients whose products saw no use this quarter",
    "active_client_share": "reactivate dormant products: call the clients whose products saw no use this quarter",
    "transactions_per_client": "reactivate dormant products: call the clients whose products saw no use this quarter",
    "flow_per_client": "a balances review with the clients moving money out",
    "clients_change": "win back the clients who left: a call within the month",
    "retention": "retention calls for at-risk clients: those who closed a product or went quiet",
    "churned_client_share": "retention calls for at-risk clients: those who closed a product or went quiet",
    "growth": "cross-sell: a needs review with the clients holding one product",
    "growth_mean_3": "cross-sell: a needs review with the clients holding one product",
    "products_per_client": "cross-sell: a needs review with the clients holding one product",
    "default": "a coaching review of the book with the agency head",
}


class PerformanceSettings(Strict):
    params: PerformanceParams = Field(default_factory=PerformanceParams, description="ml/params.py PerformanceParams")
    min_entities: int = Field(20, ge=2, description=(
        "fewer managers (agencies) with a book: no model (not trained); a ranking needs a network"))
    bottom_share: float = Field(0.1, gt=0, le=1, description=(
        "the lowest predicted share of the network (0.1: the bottom decile) gets a support recommendation"))
    support: dict[str, str] = Field(SUPPORT, description=(
        "input name -> the support recommended when it pulls a bottom-decile prediction down (the first such input "
        "with a rule, strongest first); `default` when none has one"))


class ManagerPerformanceSettings(PerformanceSettings):
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"skill": 0.0}, max={"rmse": 10.0}, not_worse_than_champion={"rmse": "lower"}, tolerance=0.25),
        description=(f"{GATE}. rmse on the 0-100 score of the held-out periods (predicting the network's average, "
                     "50, for everyone scores about 10 on the composite); skill: 1 - rmse / the RMSE of carrying "
                     "each manager's last score forward (0: no better than that)"))


class AgencyPerformanceSettings(PerformanceSettings):
    min_entities: int = Field(10, ge=2, description=(
        "fewer agencies with a book: no model (not trained); a ranking needs a network"))
    gate: Gate = Field(default_factory=lambda: Gate(
        min={"skill": 0.0}, max={"rmse": 8.0}, not_worse_than_champion={"rmse": "lower"}, tolerance=0.25),
        description=f"{GATE}. As for managers; agencies' books are larger, so their scores move less: rmse <= 8")


class ModelSettings(Strict):
    retrain_after_days: float = Field(7, ge=0, description=(
        "job `scorehouse` retrains a model only when its champion is older than this (or could not score: its "
        "inputs are gone from the features)"))
    min_holdout_per_class: int = Field(30, ge=1, description=(
        "a classifier (churn, credit risk; fraud when frauds are labelled) is trained only when its holdout holds at "
        "least this many customers (fraud: transactions) of each outcome: fewer cannot tell a good model from a "
        "lucky one (the model is reported not trained)"))
    churn: ChurnSettings = Field(default_factory=ChurnSettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    clv: ClvSettings = Field(default_factory=ClvSettings)
    credit_risk: CreditRiskSettings = Field(default_factory=CreditRiskSettings)
    recommendations: RecommendationSettings = Field(default_factory=RecommendationSettings)
    fraud: FraudSettings = Field(default_factory=FraudSettings, description=(
        "transaction fraud scoring (scores.fraud), docs/scores.md"))
    manager_performance: ManagerPerformanceSettings = Field(default_factory=ManagerPerformanceSettings, description=(
        "relationship managers' next-period performance (scores.manager_performance), docs/scores.md"))
    agency_performance: AgencyPerformanceSettings = Field(default_factory=AgencyPerformanceSettings, description=(
        "agencies' next-period performance (scores.agency_performance), docs/scores.md"))


class ScorehouseSettings(Strict):
    """Everything users tune."""

    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    sensors: SensorSettings = Field(default_factory=SensorSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings, description=(
        "docs/alerts.md. Secrets (URLs, passwords) only ever come from the environment: the settings name the "
        "variables"))
    serving: ServingSettings = Field(default_factory=ServingSettings, description=(
        "docs/bi.md: what BI reads, published by asset serving/published after scoring"))
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings, description=(
        "on by default when the daemon runs (`make ui`); enabled: false turns one off"))
    models: ModelSettings = Field(default_factory=ModelSettings)


# ------------------------------------------------------------------------------------------------- loading

# Settings given as flags (`scorehouse run --backend iceberg --shards 4 ...`), as JSON: the last layer, and set
# in the environment so that a run's step processes read the same settings.
FLAGS_ENV = "SCOREHOUSE_SETTINGS"


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming the file and the key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


CONFIG_ERRORS = (SettingsError, SourceConfigError)


@dataclass(frozen=True)
class Layer:
    label: str  # the origin `scorehouse settings` shows: default, source <name>, <home>/scorehouse.yaml, ...
    where: str  # the file an error names
    prefix: str  # where the settings sit in that file ("settings." in a source config)
    data: dict


@cache
def _defaults() -> dict:
    return ScorehouseSettings().model_dump(mode="json")


def defaults() -> dict:
    """The packaged defaults as plain data (a fresh copy)."""
    return copy.deepcopy(_defaults())


def _read(path: Path, where: str) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SettingsError([f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}{at}"]) from None
    except OSError as e:
        raise SettingsError([f"{where}: cannot be read: {e.strerror or e}"]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingsError([f"{where}: expected a mapping of settings (key: value) at the top level"])
    return doc


def _default_layer() -> Layer:
    return Layer("default", "the packaged defaults", "", _defaults())


def _source_layer(cfg: SourceConfig) -> Layer:
    return Layer(f"source {cfg.name}", str(cfg.origin), "settings.", cfg.settings)


def source_config(name_or_path: str | Path) -> SourceConfig:
    """A source config whose `settings:` block is valid over the defaults; else SourceConfigError naming the file
    and each bad key."""
    cfg = load_source(name_or_path)
    found = [_default_layer(), _source_layer(cfg)]
    try:
        _validate(found, *_merge(found))
    except SettingsError as e:
        raise SourceConfigError(str(e)) from None
    return cfg


def layers(home: str | Path | None = None, source: str | Path | None = None) -> list[Layer]:
    """What the settings are merged from, lowest first."""
    out = [_default_layer()]
    if source:
        out.append(_source_layer(source_config(source)))
    if home:
        path = Path(home) / "scorehouse.yaml"
        if path.exists():
            out.append(Layer(str(path), str(path), "", _read(path, str(path))))
    env = os.environ.get("SCOREHOUSE_CONFIG")
    if env:
        where = f"{env} ($SCOREHOUSE_CONFIG)"
        if not Path(env).is_file():
            raise SettingsError([f"{where}: no such file"])
        out.append(Layer("$SCOREHOUSE_CONFIG", where, "", _read(Path(env), where)))
    flags = os.environ.get(FLAGS_ENV)
    if flags:
        out.append(Layer("command line", "the command line's flags", "", json.loads(flags)))
    return out


def _merge(layers: list[Layer]) -> tuple[dict, dict[tuple, int]]:
    """The layers merged key by key, and which layer set each leaf (its index)."""
    merged: dict = {}
    origins: dict[tuple, int] = {}

    def mark(value: Any, path: tuple, i: int) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                mark(v, (*path, k), i)
        else:
            origins[path] = i

    def into(base: dict, over: dict, path: tuple, i: int) -> None:
        for k, v in over.items():
            p = (*path, k)
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                into(base[k], v, p, i)
                continue
            for q in [q for q in origins if q[:len(p)] == p]:
                del origins[q]
            base[k] = copy.deepcopy(v)
            mark(v, p, i)

    for i, layer in enumerate(layers):
        into(merged, layer.data, (), i)
    return merged, origins


def _validate(layers: list[Layer], merged: dict, origins: dict[tuple, int]) -> ScorehouseSettings:
    try:
        return ScorehouseSettings.model_validate(merged)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc, holder = _walk(err["loc"])
            layer = layers[_origin(loc, origins)]
            key = ".".join(str(x) for x in loc) or "(top level)"
            problems.append(f"{layer.where}: {layer.prefix}{key}: {_message(err, holder)}")
        raise SettingsError(problems) from None


def _origin(loc: tuple, origins: dict[tuple, int]) -> int:
    """The layer to blame for a problem at `loc`: the one that set it, else the last one that set anything near
    it (under it, or under the closest key above it: a missing key, a list item, a value checked against its
    neighbours). Never the defaults while another layer is near: they are valid on their own."""
    for n in range(len(loc), 0, -1):
        prefix = loc[:n]
        if origins.get(prefix, 0) > 0:
            return origins[prefix]
        near = [i for p, i in origins.items() if p[:n] == prefix and i > 0]
        if near:
            return max(near)
    return max(origins.values(), default=0)


@dataclass(frozen=True)
class Effective:
    settings: ScorehouseSettings
    layers: list[Layer]  # lowest first; [0] the defaults
    origins: dict[tuple, int]  # leaf path -> index of the layer that set it

    def as_dict(self) -> dict:
        return self.settings.model_dump(mode="json")

    def origin(self, path: tuple) -> str:
        """Where a leaf of as_dict() came from."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.layers[self.origins[path[:n]]].label
        return "default"  # filled in by the model (e.g. a default key of a channel a user added)


def effective(home: str | Path | None = None, source: str | Path | None = None) -> Effective:
    """The validated settings of a home (and source), with the origin of every value. Raises SettingsError or
    SourceConfigError."""
    found = layers(home, source)
    merged, origins = _merge(found)
    return Effective(_validate(found, merged, origins), found, origins)


def bi_publisher(settings: Mapping[str, Any]) -> str | None:
    """The job that publishes BI's serving file instead of a run's own `serving/published`: `lake` on the iceberg
    backend, whose DuckDB file scores only a sample of the customers; None on the embedded default."""
    return "lake" if settings["warehouse"]["backend"] == "iceberg" else None


def load_settings(home: str | Path | None = None, source: str | Path | None = None) -> dict[str, Any]:
    """The effective settings as plain data (what YAML would give: mappings, lists, numbers, text). Read again
    only when a file they come from changed: every asset step asks for them."""
    return copy.deepcopy(_loaded(home and str(home), source and str(source), _stamp(home, source)))


@functools.lru_cache(maxsize=16)
def _loaded(home: str | None, source: str | None, stamp: tuple) -> dict[str, Any]:
    return effective(home, source).as_dict()


def _stamp(home: str | Path | None, source: str | Path | None) -> tuple:
    """What the settings are read from, as (path, size, mtime) of each file: a change in any reads them again."""
    paths = [Path(home) / "scorehouse.yaml" if home else None, os.environ.get("SCOREHOUSE_CONFIG")]
    flags = [("flags", os.environ.get(FLAGS_ENV), None)]
    if source:
        try:
            paths.append(resolve_source(source))
        except SourceConfigError:
            paths.append(source)  # reading it raises the error, with its message
    out = []
    for p in paths:
        if p is None:
            continue
        try:
            st = Path(p).stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out + flags)


# ------------------------------------------------------------------------------------------- error messages

def _show(value: Any) -> str:
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _strip(t: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    while True:
        if typing.get_origin(t) is Annotated:
            t = typing.get_args(t)[0]
            continue
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(t) if m is not type(None)]
            if len(members) == 1:
                t = members[0]
                continue
        return t


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _child(t: Any, key: Any) -> Any:
    if _is_model(t):
        field = t.model_fields.get(key)
        return field.annotation if field else None
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    if origin is tuple and args:
        return args[0] if args[-1] is Ellipsis else args[key] if isinstance(key, int) and key < len(args) else None
    return None


def _walk(loc: tuple) -> tuple[tuple, Any]:
    """The key path without the member names pydantic adds for a tagged union (a channel's type), and the type
    that holds the last key."""
    t, clean, holder = ScorehouseSettings, [], None
    for x in loc:
        t = _strip(t)
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            member = next((m for m in typing.get_args(t) if _is_model(m) and "type" in m.model_fields
                           and m.model_fields["type"].default == x), None)
            if member is not None:  # this element names the member, not a key
                t = member
                continue
        holder = t
        clean.append(x)
        t = _child(t, x)
    return tuple(clean), holder


EXPECTED = {
    "int_type": "expected a whole number", "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number", "float_type": "expected a number",
    "float_parsing": "expected a number", "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected text", "list_type": "expected a list", "tuple_type": "expected a list",
    "dict_type": "expected a mapping (key: value)", "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
}
BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
          "less_than_equal": ("le", "<=")}


def _message(err: dict, holder: Any) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        allowed = list(holder.model_fields) if _is_model(holder) else []
        near = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        return f"unknown key{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required, missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or err["msg"])
    if kind == "union_tag_invalid":
        return f"type: expected one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    if kind == "literal_error":
        text = f"expected one of {ctx['expected']}"
    elif kind in BOUNDS:
        key, op = BOUNDS[kind]
        text = f"expected a number {op} {ctx[key]}"
    else:
        text = EXPECTED.get(kind) or err["msg"][0].lower() + err["msg"][1:]
    return f"{text}, got {_show(got)}"
