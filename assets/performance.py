"""Relationship-manager and agency performance in Dagster: each book's score month by month (features, DuckDB SQL in
warehouse/performance.py, the score in ml/performance.py), and per level an XGBoost regressor predicting next
month's score, through the shared model lifecycle (gate, champion, scores, history, drift)."""

import dagster as dg
import pandas as pd

from assets.features import GROUP, RAW
from assets.fraud import AFTER_CUSTOMER_MODELS
from assets.lazy import lazy_module
from assets.lifecycle import PRIORITY, ModelSpec, Scored, Trained, frame_hash, read_features
from assets.metadata import frame_md, table_metadata
from assets.resources import Settings, Warehouse, holds_warehouse
from ml.errors import NotEnoughData
from ml.params import BookScoreParams, PerformanceParams
from ml.registry import Entry
from warehouse import performance as W
from warehouse.columns import ScoreColumn, ScoredTable
from warehouse.db import content_version

ml_performance = lazy_module("ml.performance")  # XGBoost and scikit-learn load on first use

BOOK = dg.AssetKey(["features", W.TABLE])
@dg.asset(key=BOOK, group_name=GROUP, kinds={"duckdb", "sql"}, pool="warehouse",
          deps=[RAW[t] for t in ("customers", "managers", "accounts", "transactions", "labels", "targets")],
          op_tags=AFTER_CUSTOMER_MODELS)
@holds_warehouse
def book_performance(context: dg.AssetExecutionContext, warehouse: Warehouse,
                     settings: Settings) -> dg.MaterializeResult:
    """features.book_performance: every relationship manager's and agency's book month by month over the last
    `features.book.periods` complete months (clients, products held, used, opened and closed, departures, money
    flow), its performance score (objective achievement where raw.targets has the month's, else the book
    composite of features.book.score) and the inputs the performance models read (scores before, rates over the
    quarter, size)."""
    cfg = settings.get("features", "book")
    score = BookScoreParams.from_config(cfg["score"])
    with warehouse.connect() as con:
        span = W.periods(con, cfg["periods"])
        raw = W.book(con, *span, cfg["activity_filter"]) if span else pd.DataFrame()
        objectives = W.targets(con, *span) if span else None
        frame = (ml_performance.features(ml_performance.period_scores(raw, score, objectives)) if len(raw)
                 else pd.DataFrame({c: pd.Series(dtype="object") for c in [*W.BOOK_DOCS, *W.FEATURE_DOCS]}))
        for c in ("period", "next_period"):  # DATE columns, not timestamps
            frame[c] = pd.to_datetime(frame[c]).dt.date
        con.register("_book", frame)
        con.execute(f"CREATE OR REPLACE TABLE features.{W.TABLE} AS SELECT * FROM _book ORDER BY level, entity_id, "
                    "period")
        con.unregister("_book")
        md = table_metadata(con, f"features.{W.TABLE}", docs={**W.BOOK_DOCS, **W.FEATURE_DOCS},
                            show=["level", "entity_id", "period", "clients", "products_held", "score"])
        version = dg.DataVersion(content_version(con, f"features.{W.TABLE}"))
    counts = frame.groupby("level")["entity_id"].nunique().to_dict() if len(frame) else {}
    months = f"{span[0]:%Y-%m} to {span[1]:%Y-%m}" if span else "no transactions"
    context.log.info(f"features.{W.TABLE}: {counts.get('manager', 0):,} managers and {counts.get('agency', 0):,} "
                     f"agencies, {months}")
    return dg.MaterializeResult(metadata={**md, "managers": counts.get("manager", 0),
                                          "agencies": counts.get("agency", 0), "months": months,
                                          "scored_by": ", ".join(sorted(frame["score_source"].dropna().unique()))
                                          if len(frame) else "nothing"},
                                data_version=version)


def _frame(warehouse: Warehouse, level: str) -> pd.DataFrame:
    """One level's rows of features.book_performance (a clear failure when it is not built yet), in one order every
    time: the fit samples rows and folds by position, and ranks break ties by it."""
    frame = read_features(warehouse, table=W.TABLE)
    return frame[frame["level"] == level].sort_values(["entity_id", "period"], kind="stable").reset_index(drop=True)


def _fit(level: str):
    def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
        p = PerformanceParams.from_config(cfg["params"])
        frame = _frame(warehouse, level)
        if not len(frame):
            raise NotEnoughData(f"no {level} has a book: the source maps no {level}s to customers (customers."
                                f"{level}_id), or no accounts and transactions")
        model = ml_performance.train_performance(frame, level, p, cfg["min_entities"])
        _, test = ml_performance.split(frame, p.holdout_periods)

        def rescore(champion: Entry) -> dict:  # the champion on the periods this challenger was judged on
            return ml_performance.judge(ml_performance.PerformanceModel.load(champion.artifact_path), test)

        m = model.metrics
        top = list(model.importance().items())[:8]
        return Trained(model, m, model.features, pd.Timestamp(frame["period"].max()).date(), frame_hash(frame), {
            "holdout": frame_md([("this model", f"{m['rmse']:.2f}", f"{m['mae']:.2f}", f"{m['r2']:.3f}"),
                                 ("last score carried forward", f"{m['rmse_last']:.2f}", "", "")],
                                ["next month's score", "RMSE", "MAE", "R²"]),
            "cross_validation": f"RMSE {m['cv_rmse']:.2f} ± {m['cv_rmse_sd']:.2f} ({m['cv_folds']} folds by "
                                     f"{level}, training months)",
            "feature_importance": frame_md([(k, f"{v:.3f}") for k, v in top], ["input", "share of gain"]),
        }, rescore=rescore)

    return fit


def _score(level: str):
    def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
        model = ml_performance.PerformanceModel.load(champion.artifact_path)
        frame = _frame(warehouse, level)
        latest = frame[frame["period"] == frame["period"].max()].reset_index(drop=True)
        scored = model.score(latest, cfg["support"], cfg["bottom_share"])
        month = pd.to_datetime(scored["period"])
        scored["period"], scored["predicted_period"] = month.dt.date, (month + pd.DateOffset(months=1)).dt.date
        if level == "agency":
            scored = scored.drop(columns="agency_id")
        scored = scored[[c.was or c.name for c in TABLES[level].columns]]
        bottom = scored[scored["support"].notna()]
        period = pd.Timestamp(latest["period"].max()).date() if len(latest) else champion.snapshot_date
        return Scored(scored, period, {
            f"{level}s_ranked": len(scored), "needing_support": len(bottom),
            "best_predicted": frame_md([(r.entity_id, f"{r.predicted_score:.1f}", f"{r.last_score:.1f}")
                                        for r in scored.head(5).itertuples()], [level, "predicted", "last"]),
            "support": frame_md([(r.entity_id, f"{r.predicted_score:.1f}", r.driver_1, r.support)
                                 for r in bottom.tail(5).itertuples()], [level, "predicted", "first driver", "support"]),
        }, order_by="performance_rank", inputs=latest)

    return score


def _table(level: str) -> ScoredTable:
    key = f"{level}_id"
    who = "relationship manager" if level == "manager" else "agency (branch)"
    return ScoredTable(
        f"{level}_performance", level, f"{who} performance",
        (ScoreColumn(key, f"The {who} (`raw.{level}s`).", was="entity_id"),
         *((ScoreColumn("agency_id", "The manager's agency."),) if level == "manager" else ()),
         ScoreColumn("period", "The month whose book was scored (its first day): the latest complete one.",
                     type="DATE"),
         ScoreColumn("predicted_period", "The month the prediction is for (the next one).", type="DATE"),
         ScoreColumn("predicted_score", "Next month's performance score predicted (0-100; on the book composite 50 "
                     "is the network's average and 10 points one standard deviation).", type="DOUBLE"),
         ScoreColumn("last_score", "The score of `period`, as measured.", type="DOUBLE"),
         ScoreColumn("score_source", "`objectives` (achievement of raw.targets) or `book composite`."),
         ScoreColumn("performance_rank", f"1 = the best predicted {level} of the network.", type="BIGINT"),
         ScoreColumn("percentile", "Share of the network predicted below it, in percent (100: the best).",
                     type="DOUBLE"),
         *(c for i in (1, 2, 3) for c in (
             ScoreColumn(f"driver_{i}", f"The input moving the prediction {('most', 'second most', 'third most')[i - 1]}"
                         " (XGBoost contributions), named as in `features.book_performance`."),
             ScoreColumn(f"driver_{i}_effect", f"How far driver_{i} moves the predicted score from this month's, in "
                         "score points (negative: down).", type="DOUBLE"))),
         ScoreColumn("support", f"For the bottom `models.{level}_performance.bottom_share` (a decile) of the "
                     "network: the support its drivers call for (rules in `support`); empty for the others.")),
        trend=("predicted_score",),
        notes=f"One row per {level} for the latest complete month. Not joined to `bi.customer_scores` (not a "
              "customer's score); each month is appended to the history, so a series per "
              f"{level} is `scores.{level}_performance_history`.")


TABLES = {level: _table(level) for level in ("manager", "agency")}


def _spec(level: str) -> ModelSpec:
    who = "relationship manager" if level == "manager" else "agency"
    return ModelSpec(
        name=f"{level}_performance",
        train_doc=f"{who.capitalize()} performance: XGBoost predicting each {level}'s next-month score from this "
                  f"month's book and its scores before (features.book_performance), judged on the latest months "
                  f"(by time) against carrying the last score forward; cross-validation by {level} (`params.cv_folds`, 5) "
                  "reported. Registered as challenger.",
        score_doc=f"scores.{level}_performance: every {level}'s predicted score for next month, last actual, rank "
                  "and percentile in the network, the three inputs moving it most, and a support recommendation "
                  f"for the bottom decile; each month appended to scores.{level}_performance_history.",
        fit=_fit(level), model_class="ml.performance:PerformanceModel", score=_score(level),
        train_deps=(BOOK,), score_deps=(BOOK,), kinds=frozenset({"xgboost", "duckdb"}),
        comparable_on=("score_source",),  # objectives and the composite are different scores
        # like fraud's: a branch of its own, run after the customer models' steps whenever both are ready
        priority=int(AFTER_CUSTOMER_MODELS[PRIORITY]),
        domain="performance", table=TABLES[level])


MANAGER_SPEC, AGENCY_SPEC = _spec("manager"), _spec("agency")
