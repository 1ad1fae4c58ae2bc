"""Next-best product in Dagster: per-product propensities with a popularity fallback (ml/recommend.py) on
holdings and acquisitions built in SQL (warehouse/recommend.py), through the shared model lifecycle."""

from __future__ import annotations

import dagster as dg

from assets.features import RAW
from assets.lazy import lazy_module
from assets.lifecycle import CUSTOMER_FEATURES, LABELS, ModelSpec, Scored, Trained, frame_hash
from assets.metadata import counts_md, frame_md, rounded
from assets.resources import Warehouse
from ml.errors import NotEnoughData
from ml.registry import Entry
from warehouse.columns import CUSTOMER_ID, Derived, ScoreColumn, ScoredTable
from warehouse.recommend import load_inputs

ml_recommend = lazy_module("ml.recommend")  # XGBoost/scikit-learn/SciPy load on first use


def _inputs(warehouse: Warehouse, p: ml_recommend.RecommendParams, training: bool):
    with warehouse.connect() as con:
        return load_inputs(con, p.window_days, p.label_products, p.static_features, p.exclude, training=training)


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    p = ml_recommend.RecommendParams.from_config(cfg["params"])
    inputs = _inputs(warehouse, p, training=True)
    for note in inputs.notes:
        context.log.info(note)
    if not len(inputs.catalogue):
        raise NotEnoughData("no products: no holdings in raw.accounts and no label products (models.recommendations."
                            "params.label_products)")
    model = ml_recommend.train_recommender(inputs, p)
    m = model.metrics

    def rescore(champion: Entry) -> dict:  # the champion ranked on the same window and customers
        return ml_recommend.evaluate(ml_recommend.RecommenderModel.load(champion.artifact_path), inputs)

    k = p.eval_k
    per = m.get("per_product", {})
    frames = [f for f in (inputs.train, inputs.current, inputs.label_features) if f is not None]
    return Trained(model, m, model.features, inputs.snapshot, frame_hash(frames[0]) if frames else "empty", {
        "vs_popularity": frame_md([(name, rounded(m.get(f"{key}")), rounded(m.get(f"baseline_{key}")))
                                   for name, key in ((f"precision@{k}", f"precision_at_{k}"),
                                                     (f"recall@{k}", f"recall_at_{k}"),
                                                     (f"MAP@{k}", f"map_at_{k}"), ("coverage", "coverage"),
                                                     ("diversity", "diversity"))],
                                  ["metric", "model", "popularity baseline"]),
        "products": frame_md([(pid, i.get("source"), i.get("train_positives"), rounded(i.get("auc")),
                               i.get("eval_positives")) for pid, i in per.items()],
                             ["product", "scored by", "acquisitions (training)", "holdout AUC",
                              "acquisitions (holdout)"]),
    }, rescore=rescore)



def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    model = ml_recommend.RecommenderModel.load(champion.artifact_path)
    inputs = _inputs(warehouse, model.params, training=False)
    recs = model.recommend(inputs)
    top = recs[recs["rank"] == 1]["product_name"].value_counts().head(10)
    n = max(recs["customer_id"].nunique(), 1)
    return Scored(recs, inputs.snapshot, {
        "customers": int(recs["customer_id"].nunique()),
        "from_popularity": float((recs["source"] == "popularity").mean()) if len(recs) else 0.0,
        "first_choice": counts_md(top, n, "product ranked first"),
    }, order_by="customer_id, rank", inputs=inputs.current)


SPEC = ModelSpec(
    name="recommendations",
    train_doc="Next-best product: a propensity per product not yet held (XGBoost, trained on what customers "
              "acquired in the window before the snapshot, judged on what they acquired after it) with a "
              "popularity fallback; registered as challenger with precision/recall/MAP@5, coverage and "
              "diversity against the popularity baseline.",
    score_doc="scores.recommendations: each customer's top products not yet held (customer x rank) with the "
              "propensity score and whether it came from the model or popularity; each run is appended to "
              "scores.recommendations_history.",
    fit=fit, model_class="ml.recommend:RecommenderModel", score=score,
    train_deps=(CUSTOMER_FEATURES, LABELS, RAW["accounts"]),
    score_deps=(CUSTOMER_FEATURES, RAW["accounts"]),
    kinds=frozenset({"xgboost", "duckdb"}),
    domain="sales",
    table=ScoredTable(
        "recommendations", "customer and rank", "next-best products",
        (ScoreColumn("customer_id", CUSTOMER_ID),
         ScoreColumn("rank", "Rank 1 is the best next product; up to `models.recommendations.params.top_n` (5) "
                     "products the customer does not hold."),
         ScoreColumn("product_id", "The product (`bi.products`), or the label name for label products such as "
                     "`term_deposit`."),
         ScoreColumn("product_name", "Its display name, from `raw.products`."),
         ScoreColumn("propensity", "Probability that the customer takes the product up within the window (90 days).",
                     was="score"),
         ScoreColumn("source", "`model` (propensity model) or `popularity` (the product has too few acquisitions to "
                     "model, or the customer has no history).")),
        derived=(Derived("top_products", "The customer's best 3 recommended products, in rank order "
                         "(`scores.recommendations`).",
                         "string_agg(coalesce(product_name, product_id), ', ' ORDER BY rank) FILTER (WHERE rank <= 3)",
                         ("rank", "product_id", "product_name")),),
        trend=("propensity", "product_id")),
)
