"""Transaction fraud in Dagster: the latest day's transactions ranked for investigators (ml/fraud.py), through
the shared model lifecycle. Features per transaction in DuckDB SQL (warehouse/fraud.py); XGBoost where the
source labels frauds, an IsolationForest anomaly score where it does not (each gated by its own thresholds)."""

from datetime import datetime

import dagster as dg
import pandas as pd

from assets.features import GROUP, RAW
from assets.lazy import lazy_module
from assets.lifecycle import PRIORITY, ModelSpec, Population, Scored, Trained, frame_hash, read_features
from assets.metadata import frame_md, table_metadata
from assets.resources import Settings, Warehouse, holds_warehouse
from ml import registry
from ml.errors import NotEnoughData
from ml.registry import Entry
from warehouse import fraud as W
from warehouse.columns import Derived, ScoreColumn, ScoredTable

ml_fraud = lazy_module("ml.fraud")  # XGBoost/scikit-learn load on first use

TRANSACTION_FEATURES = dg.AssetKey(["features", "transaction_features"])
NEVER = datetime(9999, 1, 1)  # a start no transaction reaches: the table exists, empty
# after the customer models' steps whenever both are ready (ModelSpec.priority): the same order every run
AFTER_CUSTOMER_MODELS = {PRIORITY: "-1"}


@dg.asset(key=TRANSACTION_FEATURES, group_name=GROUP, kinds={"duckdb", "sql"}, pool="warehouse",
          deps=[RAW["transactions"]], op_tags=AFTER_CUSTOMER_MODELS)
@holds_warehouse
def transaction_features(context: dg.AssetExecutionContext, warehouse: Warehouse,
                         settings: Settings) -> dg.MaterializeResult:
    """features.transaction_features: the transactions of the last `models.fraud.score_days` days delivered, one
    row each, measured against the customer's own earlier transactions only (amount vs usual, velocity in the last
    hour and day, a new channel, the gap since the last one), with the source's extra columns. What scores.fraud
    scores."""
    cfg = settings.get("models", "fraud")
    with warehouse.connect() as con:
        win = W.window(con, cfg["score_days"], cfg["train_days"])
        n = W.build_transaction_features(con, win.score_from if win else NEVER, cfg["history_days"])
        # the preview shows the pipeline's own columns, never a source's extra one (it may hold free text)
        md = table_metadata(con, W.TABLE, docs=W.FEATURE_DOCS, show=[c for c in W.FEATURE_DOCS if c != "fraud"])
    context.log.info(f"{W.TABLE}: {n:,} transactions" + (f" booked from {win.score_from:%Y-%m-%d}" if win else ""))
    return dg.MaterializeResult(metadata={**md, "booked_from": str(win.score_from) if win else "no transactions",
                                          "booked_to": str(win.end) if win else "no transactions"})


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    params = ml_fraud.FraudParams.from_config(cfg["params"])
    with warehouse.connect() as con:
        win = W.window(con, cfg["score_days"], cfg["train_days"])
        if win is None:
            raise NotEnoughData("no transactions")
        frame, share = W.training_frame(con, win.train_from, win.score_from, cfg["history_days"],
                                        cfg["max_train_rows"])
    period = f"{win.train_from:%Y-%m-%d} to {win.score_from:%Y-%m-%d} (models.fraud.train_days)"
    if len(frame) < 1_000:
        raise NotEnoughData(f"{len(frame):,} transactions booked {period}: too few to learn what is usual")
    model = ml_fraud.train_fraud(frame, params, cfg["min_holdout_per_class"])
    test = frame[ml_fraud.time_holdout(frame["booked_at"], params.holdout_share)]

    def rescore(champion: Entry) -> dict:  # the champion on the transactions the challenger was judged on
        return ml_fraud.evaluate(ml_fraud.FraudModel.load(champion.artifact_path), test, params.review_per_day)

    frauds = int(ml_fraud.labels(frame).sum())
    top = list(model.importance().items())[:10]
    return Trained(model, {**model.metrics, "sample_share": share}, model.features, win.score_from.date(),
                   frame_hash(frame), {
        "method": model.method, "training_window": period, "training_rows": len(frame),
        "sample_share": share, "labelled_frauds": frauds,
        **({"feature_importance": frame_md([(k, f"{v:.3f}") for k, v in top], ["feature", "share of gain"])}
           if top else {}),
    }, rescore=rescore)


def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    model = ml_fraud.FraudModel.load(champion.artifact_path)
    frame = read_features(warehouse, model.features, table="transaction_features",
                          ids=("transaction_id", "customer_id", "booked_at"))
    scored = model.score(frame)
    day = frame["booked_at"].max().date() if len(frame) else champion.snapshot_date
    queue = scored.nsmallest(10, "fraud_rank")
    return Scored(scored, day, {
        "method": model.method, "transactions_scored": len(scored), "flagged": int(scored["flagged"].sum()),
        "flag_at": model.flag_at,
        "review_first": frame_md([(r.transaction_id, r.customer_id, f"{r.fraud_score:.4f}", r.reason_1 or "")
                                  for r in queue.itertuples()],
                                 ["transaction", "customer", "score", "first reason"]),
    }, order_by="fraud_rank", inputs=frame)


@dg.asset_check(asset=["scores", "fraud"], name="fraud_flagged", pool="warehouse", op_tags=AFTER_CUSTOMER_MODELS,
                description="The transactions flagged in this run against what the champion flagged on its holdout, "
                            "for as many transactions: more than models.fraud.flagged_jump times as many (and at "
                            "least flagged_jump_min more) fails (WARN, alerted) — a fraud wave, or a broken input.")
@holds_warehouse
def flagged_check(warehouse: Warehouse, settings: Settings) -> dg.AssetCheckResult:
    cfg = settings.get("models", "fraud")
    with warehouse.connect() as con:
        champion = registry.get(con, "fraud", "champion")
        rows, flagged = con.execute("SELECT count(*), count(*) FILTER (WHERE flagged) FROM scores.fraud").fetchone()
    share = (champion.metrics.get("flagged_share") if champion else None)
    if share is None:
        return dg.AssetCheckResult(passed=True, metadata={
            "actual": f"{flagged:,} of {rows:,} flagged; not judged (the champion has no holdout flagged share)",
            "threshold": f"{cfg['flagged_jump']:g} x the holdout's share"})
    expected = share * rows
    limit = max(cfg["flagged_jump"] * expected, expected + cfg["flagged_jump_min"])
    return dg.AssetCheckResult(passed=flagged <= limit, metadata={
        "actual": f"{flagged:,} of {rows:,} transactions flagged ({flagged / max(rows, 1):.3%})",
        "threshold": f"at most {limit:,.0f}: {cfg['flagged_jump']:g} x the {expected:,.1f} the champion "
                     f"v{champion.version} would flag at its holdout share {share:.3%}, and at least "
                     f"{cfg['flagged_jump_min']} more",
        "flagged": int(flagged), "expected": round(expected, 1), "transactions": int(rows)})


SPEC = ModelSpec(
    name="fraud",
    train_doc="Transaction fraud: XGBoost on the source's fraud labels, else an IsolationForest anomaly score, fitted "
              "on the transactions of the `models.fraud.train_days` days before the scored ones (customers sampled "
              "above `max_train_rows`, every labelled fraud kept) and judged on the latest of them by time: AUPRC and "
              "the daily review queue's precision and recall (`review_per_day`). Registered as challenger.",
    score_doc="scores.fraud: every transaction of the latest day delivered (`models.fraud.score_days`), its fraud "
              "score, rank (1 = review first), whether it is flagged and its top 3 reasons, and whether the model "
              "was supervised or an anomaly score; each day is appended to scores.fraud_history. bi.customer_scores "
              "rolls it up per customer.",
    fit=fit, model_class="ml.fraud:FraudModel", score=score,
    train_deps=(TRANSACTION_FEATURES,), score_deps=(TRANSACTION_FEATURES,),
    kinds=frozenset({"xgboost", "scikitlearn", "duckdb"}),
    comparable_on=("method",),  # an anomaly score is not compared with a supervised model
    domain="fraud",
    gate_key=lambda metrics: "gate" if metrics.get("method") == "supervised" else "unsupervised_gate",
    checks=(flagged_check,),
    # the review queue's order over every shard's transactions (ties in features.transaction_features' order),
    # and the last day booked in the whole bank
    population=Population(key=("transaction_id",), order=("booked_at", "transaction_id"),
                          inputs=("fraud_score", "snapshot_date"), columns=("fraud_rank", "snapshot_date"),
                          compute=lambda rows, model: pd.DataFrame({
                              "fraud_rank": rows["fraud_score"].rank(method="first", ascending=False).astype("int64"),
                              "snapshot_date": rows["snapshot_date"].max()}, index=rows.index)),
    priority=int(AFTER_CUSTOMER_MODELS[PRIORITY]),
    table=ScoredTable(
        "fraud", "transaction", "transaction fraud",
        (ScoreColumn("transaction_id", "Transaction key (`raw.transactions`)."),
         ScoreColumn("customer_id", "The customer it belongs to."),
         ScoreColumn("booked_at", "When it happened.", type="TIMESTAMP"),
         ScoreColumn("fraud_score", "Supervised: the probability that it is fraud (XGBoost on the source's labels). "
                     "Unsupervised: the share of the training transactions less unusual than it (0.999: more "
                     "unusual than 99.9% of them; IsolationForest) — a rank, not a probability.", type="DOUBLE"),
         ScoreColumn("fraud_rank", "1 = review first: the order of `fraud_score` over the scored transactions.",
                     type="BIGINT"),
         ScoreColumn("flagged", "`fraud_score` at or above the model's flag threshold (`models.fraud.params.flag_at`, "
                     "0.5, or `flag_at_unsupervised`, 0.999).", type="BOOLEAN"),
         *(ScoreColumn(f"fraud_reason_{i}", f"The {nth}input pushing the score up most, named as in "
                       "`features.transaction_features`. Supervised: XGBoost contributions. Unsupervised: the numbers "
                       "furthest from the training median, in robust standard deviations (from 3 on; null when no "
                       "further input is that unusual).", was=f"reason_{i}")
           for i, nth in ((1, ""), (2, "second "), (3, "third "))),
         ScoreColumn("fraud_method", "`supervised` (learnt from the source's fraud labels) or `unsupervised` (an "
                     "anomaly score: no labels to learn from; rank, do not read as a probability).", was="method")),
        derived=(Derived("fraud_flagged_transactions", "The customer's flagged transactions in the latest fraud "
                         "scoring (`scores.fraud`); null when none of the customer's transactions were scored.",
                         "count(*) FILTER (WHERE flagged)", ("flagged",), type="BIGINT"),
                 Derived("fraud_max_score", "The highest `fraud_score` among the customer's scored transactions.",
                         "max(fraud_score)", ("fraud_score",), type="DOUBLE")),
        trend=("fraud_score", "flagged"),
        notes="One row per transaction, not per customer: the latest day's transactions (`models.fraud.score_days`). "
              "The customer roll-up is in `bi.customer_scores` (`fraud_flagged_transactions`, `fraud_max_score`)."),
)
