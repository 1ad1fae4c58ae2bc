"""Churn model: train a challenger, gate it, promote it, score every customer with the champion.

ml/churn.py does the modelling and ml/registry.py the bookkeeping; these assets move data between them and
the warehouse and report what a user checks in the UI (holdout metrics, the gate's verdict, scores)."""

import dagster as dg
import pandas as pd

from assets.metadata import frame_md, table_metadata
from ml import registry
from ml.churn import ChurnParams, load_churn, save_churn, train_churn
from orchestration.resources import Settings, Warehouse
from warehouse.features import training_frame
from warehouse.scores import write_scores

CHURN = "churn"
CHALLENGER = dg.AssetKey(["ml", "churn_challenger"])
CHAMPION = dg.AssetKey(["ml", "churn_champion"])
CUSTOMER_FEATURES = dg.AssetKey(["features", "customer_features"])


def _churn_settings(settings: Settings) -> dict:
    return settings.get("models", "churn")


def _params(cfg: dict) -> ChurnParams:
    return ChurnParams.from_config({**cfg["params"], "risk_cutoffs": cfg["risk_cutoffs"]})


@dg.asset(key=CHALLENGER, group_name="training", kinds={"xgboost", "duckdb"}, pool="warehouse",
          deps=[CUSTOMER_FEATURES, dg.AssetKey(["features", "labels"])], output_required=False)
def churn_challenger(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings):
    """A churn model trained on the current features and registered as `challenger` in ml.model_registry.

    Not materialized (and nothing downstream runs) when the source has no churn outcomes: a bank that sends
    no churn labels gets no churn model rather than a meaningless one."""
    cfg = _churn_settings(settings)
    with warehouse.connect() as con:
        features, y = training_frame(con, cfg["label"])
    snap = features["snapshot_date"].max() if len(features) else None
    if y.nunique() < 2:
        context.log.info(f"no '{cfg['label']}' outcomes with both classes in features.labels: churn not trained")
        return
    model = train_churn(features, y, _params(cfg))
    with warehouse.connect() as con:
        version = registry.next_version(con, CHURN)
        folder = save_churn(model, warehouse.paths.models, version)
        data_hash = str(pd.util.hash_pandas_object(features, index=False).sum())
        registry.register(con, CHURN, version, snapshot_date=snap, data_hash=data_hash, features=model.spec.names,
                          params=cfg["params"], metrics=model.metrics, artifact_path=folder,
                          run_id=context.run.run_id)
    top = list(model.importance.items())[:10]
    m = model.metrics
    yield dg.MaterializeResult(metadata={
        "version": version, "auc": m["auc"], "brier": m["brier"], "high_risk_precision": m["high_risk_precision"],
        "high_risk_recall": m["high_risk_recall"], "holdout_rows": m["holdout_rows"],
        "training_rows": len(features), "positive_rate": float(y.mean()), "artifact": str(folder),
        "feature_importance": frame_md([(k, f"{v:.3f}") for k, v in top], ["feature", "share of gain"]),
    })


@dg.asset_check(asset=CHALLENGER, blocking=True, pool="warehouse",
                description="The challenger meets the thresholds in models.churn.gate and is not worse than the "
                            "champion on the same holdout; a failing challenger is marked rejected.")
def churn_gate(warehouse: Warehouse, settings: Settings) -> dg.AssetCheckResult:
    gate = _churn_settings(settings)["gate"]
    thresholds = {**{k: (">=", v) for k, v in gate.get("min", {}).items()},
                  **{k: ("<=", v) for k, v in gate.get("max", {}).items()}}
    higher = {k: v == "higher" for k, v in gate.get("not_worse_than_champion", {}).items()}
    with warehouse.connect() as con:
        challenger = registry.get(con, CHURN, "challenger")
        champion = registry.get(con, CHURN, "champion")
        if challenger is None:
            return dg.AssetCheckResult(passed=False, metadata={"actual": "no challenger registered",
                                                               "threshold": str(thresholds)})
        passed, why = registry.compare(challenger.metrics, champion.metrics if champion else None, thresholds,
                                       higher, gate.get("tolerance", 0.0))
        if not passed:
            registry.reject(con, CHURN, challenger.version, "; ".join(why))
    shown = {k: round(challenger.metrics[k], 4) for k in {*thresholds, *higher} if k in challenger.metrics}
    return dg.AssetCheckResult(passed=passed, metadata={
        "actual": str(shown), "threshold": str({k: f"{op} {v}" for k, (op, v) in thresholds.items()}),
        "challenger_version": challenger.version,
        "champion": f"v{champion.version} {({k: round(champion.metrics.get(k, 0), 4) for k in higher})}"
                    if champion else "none yet",
        "failed": "; ".join(why) or "none",
    })


@dg.asset(key=CHAMPION, group_name="training", kinds={"duckdb"}, pool="warehouse", deps=[CHALLENGER])
def churn_champion(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The challenger that passed its gate, promoted to `champion` (the previous one is retired)."""
    with warehouse.connect() as con:
        challenger = registry.get(con, CHURN, "challenger")
        previous = registry.get(con, CHURN, "champion")
        if challenger is None:
            raise dg.Failure("no churn challenger waiting in ml.model_registry: materialize "
                             "ml/churn_challenger first (a rejected one is not promoted)")
        registry.promote(con, CHURN, challenger.version,
                         f"passed the gate; replaces v{previous.version}" if previous else "passed the gate; first")
    context.log.info(f"churn v{challenger.version} is the champion")
    return dg.MaterializeResult(metadata={"version": challenger.version, "auc": challenger.metrics["auc"],
                                          "replaced": f"v{previous.version}" if previous else "none"})


@dg.asset(key=["scores", "churn"], group_name="scoring", kinds={"xgboost", "duckdb"}, pool="warehouse",
          deps=[CHAMPION, CUSTOMER_FEATURES])
def churn_scores(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings) -> dg.MaterializeResult:
    """scores.churn: every customer's churn probability, risk level, top 3 reasons and recommended action,
    from the champion; each run is appended to scores.churn_history."""
    actions = _churn_settings(settings)["actions"]
    with warehouse.connect() as con:
        champion = registry.get(con, CHURN, "champion")
        if champion is None:
            raise dg.Failure("no churn champion in ml.model_registry: train one first")
        features = con.execute("SELECT * FROM features.customer_features").df()
    model = load_churn(champion.artifact_path)
    scored = model.score(features, actions)
    snap = features["snapshot_date"].max()
    with warehouse.connect() as con:
        n = write_scores(con, CHURN, scored, version=champion.version, snapshot_date=snap, run_id=context.run.run_id)
        md = table_metadata(con, "scores.churn")
    dist = scored["risk_level"].value_counts().reindex(["High", "Medium", "Low"], fill_value=0)
    return dg.MaterializeResult(metadata={
        **md, "model_version": champion.version, "customers_scored": n,
        "mean_probability": float(scored["churn_probability"].mean()),
        "risk_levels": frame_md([(k, f"{v:,}", f"{v / max(n, 1):.1%}") for k, v in dist.items()],
                                ["risk", "customers", "share"]),
    })


model_assets = [churn_challenger, churn_champion, churn_scores]
model_checks = [churn_gate]
