"""Customer lifetime value in Dagster: BG/NBD x Gamma-Gamma (ml/clv.py) on the per-customer purchase summary
(warehouse/clv.py), through the shared model lifecycle.

The model is fitted on purchases up to the feature snapshot and checked on what customers bought after it
(the source's outcome window): the holdout error is the gate. Scores are as of the snapshot, like every
other model's, so one row per customer lines up across scores.* tables."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd

from assets.features import RAW
from assets.lazy import lazy_module
from assets.lifecycle import CUSTOMER_FEATURES, ModelSpec, Population, Scored, Trained, frame_hash
from assets.metadata import frame_md, rounded
from assets.resources import Warehouse
from ml.errors import NotEnoughData
from ml.registry import Entry
from ml.split import holdout_mask
from warehouse.clv import clv_summary, keep_summary, kept_summary
from warehouse.clv import summary_key as clv_summary_key
from warehouse.columns import CUSTOMER_ID, ScoreColumn, ScoredTable

ml_clv = lazy_module("ml.clv")

NO_HISTORY = "No purchases"


def _summary(warehouse: Warehouse, cfg: dict, holdout: bool) -> tuple[pd.DataFrame, pd.DataFrame, date, bool]:
    """(purchase summary as of the snapshot, population, snapshot, whether the summary was the one this run's
    training kept); with `holdout`, the purchases after the snapshot up to the last transaction are counted too,
    and the summary is kept for the scoring step (warehouse.clv.keep_summary)."""
    p = ml_clv.CLVParams.from_config(cfg["params"])
    with warehouse.connect() as con:
        population = con.execute("SELECT customer_id FROM features.population").df()
        snap = con.execute("SELECT max(snapshot_date) FROM features.population").fetchone()[0]
        last = con.execute("SELECT max(transaction_date)::DATE FROM raw.transactions").fetchone()[0]
        end = last if holdout and last is not None and snap is not None and last > snap else None
        summary, kept = pd.DataFrame(), None
        if snap is not None:
            key = clv_summary_key(con, snap, cfg["event_filter"], cfg["value_expr"], p.time_unit_days)
            kept = None if holdout else kept_summary(con, key)
            summary = kept if kept is not None else \
                clv_summary(con, snap, end, cfg["event_filter"], cfg["value_expr"], p.time_unit_days)
            if holdout:  # for this run's scoring step
                keep_summary(con, summary, key)
    if len(summary):  # customers of the population only (the facts may name others)
        summary = summary[summary["customer_id"].isin(population["customer_id"])].reset_index(drop=True)
    return summary, population, snap, kept is not None


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    summary, population, snap, _ = _summary(warehouse, cfg, holdout=True)
    repeat = int((summary["frequency"] > 0).sum()) if len(summary) else 0
    if repeat < cfg["min_repeat_customers"]:
        raise NotEnoughData(f"{repeat:,} customers with repeat purchases ({cfg['event_filter']}); at least "
                            f"{cfg['min_repeat_customers']} (models.clv.min_repeat_customers)")
    if "holdout_x" not in summary.columns:
        raise NotEnoughData(f"no purchases after the snapshot {snap}: no window to judge the CLV model on "
                            "(snapshot.holdout_days)")
    model = ml_clv.train_clv(summary, ml_clv.CLVParams.from_config(cfg["params"]))
    m = model.metrics
    bg, gg = m["bgnbd_params"], m["gg_params"]
    extra = {}
    sup = cfg["supervised_challenger"]
    if sup["enabled"] and "holdout_value" in summary.columns:
        m["supervised_challenger"] = vs = _supervised(warehouse, model, summary, sup)
        rows = [(name, rounded(v.get("spearman")), rounded(v.get("top_decile_capture")), rounded(v.get("value_error")))
                for name, v in (("BG/NBD x Gamma-Gamma", vs["bgnbd_gg"]), ("XGBoost on features", vs["xgboost"]))]
        extra["vs_supervised"] = frame_md(rows, ["value after the snapshot", "rank correlation",
                                                 "top-10% value captured", "total value error"])
    return Trained(model, m, ["frequency", "recency", "T", "monetary"], snap, frame_hash(summary), {**extra,
        "customers_with_purchases": len(summary), "population": len(population),
        "bgnbd_params": frame_md([(k, f"{v:.4g}") for k, v in bg.items()], ["BG/NBD", "value"]),
        "gamma_gamma_params": frame_md([(k, f"{v:.4g}") for k, v in gg.items()], ["Gamma-Gamma", "value"]),
        "holdout": frame_md([("repeat purchases", f"{m.get('holdout_pred', 0):,.0f}",
                              f"{m.get('holdout_actual', 0):,.0f}", m.get("holdout_error")),
                             ("value", f"{m.get('holdout_value_pred', 0):,.0f}",
                              f"{m.get('holdout_value_actual', 0):,.0f}", m.get("holdout_value_error"))],
                            ["after the snapshot", "predicted", "actual", "relative error"]),
    })



def _supervised(warehouse: Warehouse, model, summary: pd.DataFrame, cfg: dict) -> dict:
    """The supervised challenger of the issue: XGBoost on customer features predicting the value bought after
    the snapshot, compared with the probabilistic model on the same customers (reported, not promoted: it
    learns from the very window it is judged on). Fitted on a hash sample of at most `max_rows` customers."""
    limit = cfg["max_rows"]
    if len(summary) > limit:
        summary = summary[holdout_mask(summary["customer_id"], limit / len(summary), salt="clv_sample")]
    with warehouse.connect() as con:
        con.register("_ids", summary[["customer_id"]])
        features = con.execute("SELECT f.* FROM features.customer_features f SEMI JOIN _ids USING (customer_id)").df()
    return ml_clv.compare_with_supervised(model, summary.reset_index(drop=True), features)


def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    summary, population, snap, reused = _summary(warehouse, cfg, holdout=False)
    model = ml_clv.CLVModel.load(champion.artifact_path)
    scored = model.score(summary) if len(summary) else pd.DataFrame(columns=["customer_id"])
    # every customer of the population gets a row: no purchase before the snapshot, no value to project
    scored = population[["customer_id"]].merge(scored, on="customer_id", how="left")
    scored["clv"] = scored["clv"].fillna(0.0)
    scored["expected_purchases_horizon"] = scored["expected_purchases_horizon"].fillna(0.0)
    scored["clv_tier"] = scored["clv_tier"].fillna(NO_HISTORY)
    n = max(len(scored), 1)
    tiers = scored.groupby("clv_tier")["clv"].agg(["size", "sum", "mean"]).sort_values("mean", ascending=False)
    return Scored(scored, snap, {
        "total_clv": float(scored["clv"].sum()), "horizon_months": model.params.horizon_months,
        "purchase_summary": "kept by this run's training (features.clv_summary)" if reused
        else "computed from raw.transactions",
        "tiers": frame_md([(t, f"{r['size']:,}", f"{r['size'] / n:.1%}", f"{r['mean']:,.2f}", f"{r['sum']:,.0f}")
                           for t, r in tiers.iterrows()], ["tier", "customers", "share", "mean CLV", "total CLV"]),
    }, inputs=summary)


def _tiers(rows: pd.DataFrame, model) -> pd.DataFrame:
    """clv_tier over the whole bank: tiers are shares of all customers with purchases (ties in customer order,
    as clv_summary returns them)."""
    bought = (rows["clv_tier"] != NO_HISTORY).to_numpy()
    tiers = rows["clv_tier"].to_numpy(dtype=object).copy()
    tiers[bought] = ml_clv.tier(rows["clv"].to_numpy(float)[bought], model.params.tiers)
    return pd.DataFrame({"clv_tier": tiers}, index=rows.index)


SPEC = ModelSpec(
    name="clv",
    train_doc="BG/NBD (purchase counts) and Gamma-Gamma (spend per purchase) fitted by maximum likelihood on the "
              "purchases up to the snapshot, checked against what customers bought after it; registered as "
              "challenger with its parameters and holdout error.",
    score_doc="scores.clv: every customer's expected purchases over the horizon, P(alive), expected value per "
              "purchase, discounted CLV and CLV tier, from the champion; each run is appended to "
              "scores.clv_history.",
    fit=fit, model_class="ml.clv:CLVModel", score=score,
    train_deps=(CUSTOMER_FEATURES, RAW["transactions"]),
    score_deps=(dg.AssetKey(["features", "population"]), RAW["transactions"]),
    kinds=frozenset({"scipy", "duckdb"}),
    domain="marketing",
    population=Population(key=("customer_id",), order=("customer_id",), inputs=("clv", "clv_tier"),
                          columns=("clv_tier",), compute=_tiers),
    table=ScoredTable(
        "clv", "customer", "customer lifetime value",
        (ScoreColumn("customer_id", CUSTOMER_ID),
         ScoreColumn("expected_purchases_horizon", "BG/NBD expected purchase days over the horizon "
                     "(`horizon_months`, 12)."),
         ScoreColumn("p_alive", type="DOUBLE", doc="Probability the customer is still active at the snapshot (BG/NBD; null: no purchase "
                     "before the snapshot). It says something only when customers can be seen going quiet: with money "
                     "out as the purchase (the default `models.clv.event_filter`) everyone whose account pays a fee or "
                     "a bill each month bought days ago, and on the demo bank it is 1 for every customer (to 1e-10; "
                     "[model-quality.md](model-quality.md), CLV). Drift monitoring skips it while it is constant.",
                     customer_scores=True),
         ScoreColumn("expected_avg_value", "Gamma-Gamma expected value per purchase."),
         ScoreColumn("clv", type="DOUBLE", doc="Discounted value over the horizon (`annual_discount_rate` 10%, times `margin`); 0 "
                     "without purchase history.", customer_scores=True),
         ScoreColumn("clv_tier", "Platinum (top 10%), Gold (next 20%), Silver (next 30%), Bronze (rest), "
                     "\"No purchases\".", customer_scores=True)),
        trend=("clv", "p_alive")),
    # no importance: BG/NBD x Gamma-Gamma use all four summary columns jointly, none is a lesser input, so each
    # weighs a quarter of the input drift
)
