"""What every column users query means, written once and read by everything that describes a table: the column
schema of the Dagster assets (assets/metadata.py), the comments in serving.duckdb (warehouse/serving.py) and
docs/features.md, docs/scores.md (warehouse/contract_doc.py; tests/test_docs.py keeps them in step).

Where each meaning lives: raw tables in the data contract (warehouse/contract.py), features in FEATURE_DOCS
(warehouse/features.py), a model's scored columns beside the model (its ModelSpec's ScoredTable, assets/<model>.py,
passed in: warehouse never imports assets), and the tables every model shares (registry, runs, drift, the
serving file's own tables) here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warehouse import fraud
from warehouse.contract import HISTORY, LINEAGE, TABLES
from warehouse.features import FEATURE_DOCS, WINDOWS
from warehouse.schema import QUARANTINE_COLUMNS


@dataclass(frozen=True)
class ScoreColumn:
    name: str  # one name per concept, the same in scores.<model>, its history and bi.customer_scores
    doc: str
    customer_scores: bool = False  # also a column of bi.customer_scores (one row per customer)
    was: str | None = None  # what the model (ml/) calls it, and older scores.<model>_history tables: renamed on write
    type: str = "VARCHAR"  # its type in bi.customer_scores, also while the model has no scores (a NULL column)


@dataclass(frozen=True)
class Derived:
    """A bi.customer_scores column made from several rows of one customer (recommendations: customer x rank)."""

    name: str
    doc: str
    sql: str  # an aggregate over the model's rows of one customer
    needs: tuple[str, ...]  # the columns of scores.<model> it reads (left out when one is not published)
    type: str = "VARCHAR"  # as ScoreColumn.type


@dataclass(frozen=True)
class ScoredTable:
    """What a model publishes: scores.<model>, described column by column (the common columns are SCORE_COMMON)."""

    model: str
    grain: str  # one row per ...
    summary: str
    columns: tuple[ScoreColumn, ...]  # customer_id first, in table order
    derived: tuple[Derived, ...] = ()
    trend: tuple[str, ...] = ()  # columns bi.score_trend follows per snapshot (the watched outputs)
    notes: str = ""  # more for docs/scores.md

    @property
    def table(self) -> str:
        return f"scores.{self.model}"

    def renames(self) -> dict[str, str]:
        return {c.was: c.name for c in self.columns if c.was}

    def docs(self) -> dict[str, str]:
        return {**{c.name: c.doc for c in self.columns}, **SCORE_COMMON}

    def customer_scores(self) -> list[ScoreColumn]:
        return [c for c in self.columns if c.customer_scores]


CUSTOMER_ID = "Customer key (every customer of `features.population`)."
SCORE_COMMON = {
    "model_name": "The model that scored the row (`ml.model_registry.model`).",
    "model_version": "The champion version that scored the row (`ml.model_registry.version`).",
    "snapshot_date": "The features' snapshot date: the scores are as of this date.",
    "scored_at": "When the row was scored.",
    "run_id": "The Dagster run that scored it.",
}

REGISTRY = {
    "model": "`churn`, `segments`, `recommendations`, `credit_risk`, `clv`, `fraud`.",
    "version": "Versions 1, 2, ... per model.",
    "trained_at": "When the version was trained.",
    "snapshot_date": "The features' snapshot it was trained on.",
    "data_hash": "A hash of the training frame.",
    "features": "The feature columns the model uses.",
    "params": "Hyperparameters (JSON).",
    "metrics": "Holdout figures (JSON). churn: `auc`, `brier`, `high_risk_precision`, `high_risk_recall`, "
    "`holdout_rows`, `holdout_positive_rate`. segments: `silhouette`, `k`, `silhouette_by_k`, `sizes`, `min_share`. "
    "recommendations: `auc`, `brier` (mean over modelled products; `per_product` has each), `precision_at_5`, "
    "`recall_at_5`, `map_at_5`, `hit_rate_at_5`, `coverage`, `diversity`, `precision_at_5_ceiling`, "
    "`precision_at_5_of_ceiling`, `map_at_5_lift` and the popularity baseline's `baseline_*`. credit_risk: `auc`, "
    "`gini`, `ks`, `brier` of the served model, `scorecard_auc` and `xgb_auc` (both models on the same holdout), "
    "`model_kind` (which serves), `champion_policy` and `model_kind_why` (the policy's verdict in words, with both "
    "AUCs), `n_features` (the served model's), `target_proxy`. clv: `bgnbd_params` {r, alpha, a, b}, `gg_params` "
    "{p, q, v}, `holdout_error` (predicted vs actual repeat purchases after the snapshot, relative), "
    "`holdout_value_error`. fraud: `method` (supervised or unsupervised), `flagged_share` (holdout share flagged), and with "
    "labels `auprc`, `roc_auc`, `precision_at_review`, `recall_at_review` (each day's `review_per_day` highest), "
    "`reviewed`, `holdout_frauds`, `base_rate`, all weighted back to the whole population when customers were "
    "sampled (`sample_share`). Every model with a champion comparison in its gate also has `champion_on_holdout`: the "
    "champion of that time (`version`) re-scored on this version's holdout, the figures the gate compared. See "
    "[model-quality.md](model-quality.md).",
    "artifact_path": "Folder under `<home>/models/<model>/v<version>/` (`booster.json` via XGBoost `save_model`, "
    "`model.joblib`).",
    "alias": "The version's state: `challenger` (registered) → `approved` or `rejected` (only its gate writes them) → "
    "`champion` (scores with it; only a version its gate approved in the same run is ever promoted) → `retired` "
    "(replaced). `abandoned`: its run ended before its gate or its promotion (e.g. killed); never promoted.",
    "note": "Why it was approved, rejected, promoted or abandoned (the failed gate conditions).",
    "run_id": "The Dagster run that trained it.",
}

MODEL_RUNS = {
    "run_id": "The run.",
    "model": "The model.",
    "training": "`promoted`, `kept` (nothing approved in this run), `rejected` (the challenger failed its gate), "
    "`not_trained` (the data cannot support or judge the model), or empty (training was not part of this run).",
    "training_note": "Why: the failed gate conditions, or e.g. `no 'churned' outcomes (models.churn.label): the "
    "source's outcome labels are 'churn'`, `too few outcomes to judge: 15 defaulted and 121 good customers in the "
    "holdout (at least 30 of each ...)`, `no purchases after the snapshot ...`.",
    "challenger_version": "The version trained in this run.",
    "champion_version": "The champion after this run's promotion step.",
    "scoring": "`scored`, `no_champion`, or `failed` (e.g. inputs the champion was trained on missing from today's "
    "features, named).",
    "scoring_note": "Why scoring failed.",
    "rows_scored": "Rows written to `scores.<model>`.",
    "outcome": "The whole story in one line, as `scorehouse run` prints it and the serving file's manifest shows it: "
    "`promoted v5; scored with champion v5`, `kept champion v4 (challenger v5 rejected: auc 0.7100 not >= 0.8); "
    "scored with champion v4`, `not trained: ...; no champion yet`.",
    "updated_at": "When the row was last written.",
}

DRIFT = {
    "run_id": "The scoring run.",
    "model": "The model.",
    "model_version": "The champion whose reference profile it was measured against.",
    "feature": "A model input (`kind` feature) or a score column (`kind` score, e.g. `churn_probability`).",
    "kind": "`feature` or `score`.",
    "psi": "Population stability index against the reference (training deciles / categories).",
    "ks": "Two-sample Kolmogorov-Smirnov statistic (numeric columns only).",
    "band": "`stable` / `warn` / `alert` by `monitoring.drift.psi_warn` / `psi_alert` (0.10 / 0.25); `skipped`: "
    "measured, not counted (`note` says why).",
    "reference_mean": "Mean of a numeric column at training.",
    "current_mean": "Mean of a numeric column in this run.",
    "snapshot_date": "The features' snapshot.",
    "measured_at": "When it was measured.",
    "weight": "The input's share of the model's importance (null for scores).",
    "note": "Why a skipped column is not counted.",
    "reference_rows": "Rows of the reference population (training).",
    "current_rows": "Rows of this run's scores.",
}

MANIFEST = {
    "table_name": "A published table or view, as you query it.",
    "kind": "`table` or `view`.",
    "row_count": "Rows it holds.",
    "published_at": "When this file was published.",
    "run_id": "The Dagster run that published it.",
    "model_versions": "JSON: model → the champion version whose scores it holds.",
    "outcome": "Scored tables: what became of the model in its last run (`ml.model_runs.outcome`).",
}

# The serving file's own tables and views (warehouse/serving.py); scored columns come from the ScoredTables.
CUSTOMER_SCORES = {
    "customer_id": "Customer key (every customer scored by at least one model).",
    "agency_name": "The customer's home agency (`bi.agencies`).",
    "snapshot_date": "The features' snapshot the scores are as of: the latest of the models' (normally all the same; "
    "each model's own is `scores.<model>.snapshot_date`).",
}
MODEL_VERSION = "The {model} champion version that scored the customer (`ml.model_registry`); null: not scored by it."
# bi.customers renames the bank's `segment`: three segment columns sit side by side in bi.customer_scores
DIMENSION_RENAMES = {"bi.customers": {"segment": "bank_segment"}}
BANK_EXTRA = "A column of the bank's own file, published as given (`serving.shareable`)."

SCORE_TREND = {
    "model": "The model.",
    "snapshot_date": "A snapshot scored (the last `serving.history_snapshots` per model).",
    "model_version": "The champion version that scored it (the last to score that snapshot).",
    "column_name": "A score column the model's drift check watches (e.g. `churn_probability`, `churn_risk_level`).",
    "category": "A value of a categorical column (null for a numeric column).",
    "customers": "Rows with this value (numeric column: rows with a value).",
    "share": "customers / rows of the snapshot.",
    "mean_value": "Mean of a numeric column (null for a categorical one).",
}
MODEL_SUMMARY = {k: REGISTRY[k] for k in ("model", "version", "alias", "trained_at", "snapshot_date", "metrics", "note")}
DRIFT_SUMMARY = {k: DRIFT[k] for k in ("model", "model_version", "feature", "kind", "psi", "ks", "band",
                                       "snapshot_date", "measured_at")}

TABLE_DOCS = {
    "manifest": "What this file holds: one row per published table or view.",
    "bi.customers": "The bank's customers: only the columns `serving.shareable` allows.",
    "bi.agencies": "The bank's agencies (branches).",
    "bi.products": "The bank's product catalogue.",
    "bi.customer_scores": "One row per scored customer: shareable attributes, agency, every model's scores and the "
    "champion version that scored them.",
    "bi.model_summary": "Each model's champion: version, training snapshot, holdout metrics, why promoted.",
    "bi.drift_summary": "Each model's latest drift measurement, per column.",
    "bi.score_trend": "Each model's watched score columns per snapshot, over the last `serving.history_snapshots` "
    "snapshots: counts and shares of categories, means of numbers.",
    "ml.model_registry": "Every trained model version: metrics, state, why.",
    "ml.model_runs": "What became of each model in its last run.",
    "monitoring.drift": "Drift of every scoring run: one row per run, model and column.",
}


def feature_patterns() -> list[tuple[str, re.Pattern]]:
    """Each documented feature name as a regex: {w} is a window, <x> a value, 'a / b' lists names."""
    out = []
    for key in FEATURE_DOCS:
        for name in key.split(" / "):
            rx = re.escape(name.strip()).replace(r"\{w\}", "(" + "|".join(map(str, WINDOWS)) + ")")
            rx = re.sub(r"<[a-z]+>", "[a-z0-9_]+", rx)
            out.append((key, re.compile(rx + "$")))
    return out


_PATTERNS = feature_patterns()


def feature_doc(column: str) -> str | None:
    key = next((k for k, p in _PATTERNS if p.match(column)), None)
    if key is None:
        return None
    doc = FEATURE_DOCS[key]
    window = re.search(r"_(\d+)d(_|$)", column)
    return doc.replace("{w}", window.group(1)) if window and "{w}" in doc else doc


def _contract(table: str) -> dict[str, str]:
    t = TABLES.get(table)
    cols = {c.name: c.description for c in (*(t.columns if t else ()), *LINEAGE, *HISTORY)}
    return cols


def describe(table: str, column: str, scored: dict[str, ScoredTable] | None = None) -> str | None:
    """What `column` of `table` (schema.name, as in the warehouse) means; None when nobody wrote it down.
    `scored`: the models' ScoredTables by model name, for scores.* tables."""
    schema, name = table.split(".", 1)
    if schema == "raw":
        return _contract(name.removesuffix("_history")).get(column) or (BANK_EXTRA if name in TABLES else None)
    if schema == "quarantine":
        return next((d for n, _, d in QUARANTINE_COLUMNS if n == column), None) or _contract(name).get(column)
    if schema == "features":
        return fraud.FEATURE_DOCS.get(column) if name == "transaction_features" else feature_doc(column)
    if schema == "scores":
        spec = (scored or {}).get(name.removesuffix("_history"))
        return spec.docs().get(column) if spec else SCORE_COMMON.get(column)
    return {"ml.model_registry": REGISTRY, "ml.model_runs": MODEL_RUNS, "monitoring.drift": DRIFT}.get(
        table, {}).get(column)
