"""Churn in Dagster: XGBoost on customer features (ml/churn.py), through the shared model lifecycle."""

from __future__ import annotations

import dagster as dg

from assets.lazy import lazy_module
from assets.lifecycle import (
    CUSTOMER_FEATURES,
    LABELS,
    ModelSpec,
    Scored,
    Trained,
    frame_hash,
    read_features,
    require_label,
)
from assets.metadata import counts_md, frame_md
from assets.resources import Warehouse
from ml.registry import Entry
from ml.split import check_classes, holdout_mask
from warehouse.columns import CUSTOMER_ID, ScoreColumn, ScoredTable
from warehouse.features import training_frame

ml_churn = lazy_module("ml.churn")  # XGBoost/scikit-learn/SciPy load on first use


def _params(cfg: dict) -> ml_churn.ChurnParams:
    # the cut-offs are set beside the params (models.churn.risk_cutoffs) and saved with them
    return ml_churn.ChurnParams.from_config({**cfg["params"], "risk_cutoffs": cfg["risk_cutoffs"]})


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    with warehouse.connect() as con:
        require_label(con, cfg["label"], "models.churn.label")
        features, y = training_frame(con, cfg["label"])
    params = _params(cfg)
    hold = holdout_mask(features["customer_id"], params.holdout_share)
    check_classes(y.to_numpy(), hold, cfg["min_holdout_per_class"], ("churned", "staying"))
    model = ml_churn.train_churn(features, y, params)
    top = list(model.importance().items())[:10]

    def rescore(champion: Entry) -> dict:  # the champion on the customers the challenger was judged on
        rival = ml_churn.ChurnModel.load(champion.artifact_path)
        return ml_churn.evaluate(y.to_numpy(dtype=int)[hold], rival.probability(features[hold]),
                                 rival.params.risk_cutoffs)

    return Trained(model, model.metrics, model.spec.names, features["snapshot_date"].max(), frame_hash(features), {
        "training_rows": len(features), "positive_rate": float(y.mean()),
        "feature_importance": frame_md([(k, f"{v:.3f}") for k, v in top], ["feature", "share of gain"]),
    }, rescore=rescore)


def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    model = ml_churn.ChurnModel.load(champion.artifact_path)
    features = read_features(warehouse, model.spec.names)
    scored = model.score(features, cfg["actions"])
    n = len(scored)
    dist = scored["risk_level"].value_counts().reindex(["High", "Medium", "Low"], fill_value=0)
    return Scored(scored, features["snapshot_date"].max(), {
        "mean_probability": float(scored["churn_probability"].mean()),
        "risk_levels": counts_md(dist, n, "risk"),
    }, inputs=features)


SPEC = ModelSpec(
    name="churn",
    train_doc="A churn model (XGBoost, calibrated) trained on the current features and registered as challenger. "
              "Not materialized when the source has no churn outcomes: no labels, no meaningless model.",
    score_doc="scores.churn: every customer's churn probability, risk level, top 3 reasons and recommended "
              "action, from the champion; each run is appended to scores.churn_history.",
    fit=fit, model_class="ml.churn:ChurnModel", score=score,
    train_deps=(CUSTOMER_FEATURES, LABELS),
    kinds=frozenset({"xgboost", "duckdb"}),
    domain="retention",
    table=ScoredTable(
        "churn", "customer", "latest churn scores",
        (ScoreColumn("customer_id", CUSTOMER_ID),
         ScoreColumn("churn_probability", type="DOUBLE", doc="Calibrated probability (Platt scaling on a held-out slice) that the customer "
                     "churns in the outcome window after the snapshot.", customer_scores=True),
         ScoreColumn("churn_risk_level", "`Low` / `Medium` / `High` from `models.churn.risk_cutoffs` (default: "
                     "Medium from 0.3, High from 0.6).", customer_scores=True, was="risk_level"),
         *(ScoreColumn(f"churn_reason_{i}", f"The feature that pushes this customer's churn score up the {nth} most "
                       "(XGBoost per-feature contributions, `approx_contribs`), named as in "
                       "`features.customer_features` ([features.md](features.md)); null when fewer push it up.",
                       customer_scores=True, was=f"reason_{i}")
           for i, nth in ((1, "first"), (2, "second"), (3, "third"))),
         ScoreColumn("retention_action", "From `models.churn.actions`: the action of the first reason whose name "
                     "starts with a configured prefix, else the risk level's action; none for Low.",
                     customer_scores=True, was="recommended_action")),
        trend=("churn_probability", "churn_risk_level")),
)
