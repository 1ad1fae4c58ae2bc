"""Segments in Dagster: K-Means clusters with human names plus RFM segments (ml/segments.py), through the
shared model lifecycle."""

from __future__ import annotations

import dagster as dg

from assets.lazy import lazy_module
from assets.lifecycle import ModelSpec, Scored, Trained, frame_hash, read_features
from assets.metadata import counts_md, frame_md
from assets.resources import Warehouse
from ml.errors import NotEnoughData
from ml.registry import Entry
from warehouse.columns import CUSTOMER_ID, ScoreColumn, ScoredTable

ml_segments = lazy_module("ml.segments")  # XGBoost/scikit-learn/SciPy load on first use

RFM_COLUMNS = ["rfm_r", "rfm_f", "rfm_m", "recency_days", "frequency"]


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    features = read_features(warehouse)
    p = ml_segments.SegmentParams.from_config(cfg["params"])
    if len(features) < 10 * p.k_max:
        raise NotEnoughData(f"{len(features):,} customers: too few to segment into up to {p.k_max} groups")
    model = ml_segments.train_segments(features, p)
    prof = model.profile_table()

    def rescore(champion: Entry) -> dict:  # the champion's clusters on the challenger's holdout customers
        return ml_segments.holdout_silhouette(ml_segments.SegmentModel.load(champion.artifact_path), features, p)

    metrics = dict(model.metrics)
    metrics["min_share"] = float(prof["share"].min())
    return Trained(model, metrics, model.features, features["snapshot_date"].max(), frame_hash(features), {
        "training_rows": len(features),
        "segments": frame_md([(r.segment_id, r.segment_name, f"{r.size:,}", f"{r.share:.1%}", r.holdout_silhouette,
                               r.description) for r in prof.itertuples()],
                             ["id", "name", "customers", "share", "silhouette", "profile (median vs all)"]),
        "silhouette_by_k": str(model.metrics["silhouette_by_k"]),
    }, rescore=rescore)


def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    model = ml_segments.SegmentModel.load(champion.artifact_path)
    features = read_features(warehouse, [*model.features, *RFM_COLUMNS])
    scored = model.score(features, rfm_active_days=cfg["rfm_active_days"])
    n = max(len(scored), 1)
    seg = scored["segment_name"].value_counts()  # ml/'s names: scores.segments calls it behaviour_segment
    rfm = scored["rfm_segment"].value_counts()
    return Scored(scored, features["snapshot_date"].max(), {
        "segments": counts_md(seg, n, "segment"),
        "rfm_segments": counts_md(rfm, n, "RFM segment"),
    }, inputs=features)


SPEC = ModelSpec(
    name="segments",
    train_doc="K-Means on scaled behaviour features, k in 4..6 chosen by silhouette, each cluster named from its "
              "profile; registered as challenger with its holdout silhouette.",
    score_doc="scores.segments: every customer's cluster (id, human name, distance to its centre) and RFM segment, "
              "from the champion; each run is appended to scores.segments_history.",
    fit=fit, model_class="ml.segments:SegmentModel", score=score,
    kinds=frozenset({"scikitlearn", "duckdb"}),
    comparable_on=("features",),
    domain="marketing",
    table=ScoredTable(
        "segments", "customer", "K-Means and RFM segments",
        (ScoreColumn("customer_id", CUSTOMER_ID),
         ScoreColumn("behaviour_segment_id", "The customer's K-Means cluster, numbered by size (0 = largest). k is "
                     "chosen in 4..6 by silhouette.", was="segment_id"),
         ScoreColumn("behaviour_segment", "The K-Means cluster's human name, from its profile of behaviour, e.g. "
                     "\"affluent multi-product spenders\", \"new customers\" (rules in `ml/segments.py`); the training "
                     "asset's metadata lists each cluster with its profile. Not the bank's own segment "
                     "(`bank_segment`).", customer_scores=True, was="segment_name"),
         ScoreColumn("rfm_segment", "The classic R x F grid on `rfm_r` / `rfm_f`: Champions, Loyal customers, "
                     "Potential loyalists, New customers, Promising, Need attention, About to sleep, At risk, Can't lose "
                     "them, Hibernating, Lost; \"No activity\" without transactions. A customer whose last transaction "
                     "is at most `models.segments.rfm_active_days` (7) before the snapshot counts as recent (R at least "
                     "4) whatever the quintiles say: when most customers were seen in the last days, a tie, the "
                     "quintiles alone would call some of them Hibernating.", customer_scores=True),
         ScoreColumn("centroid_distance", "Distance to the cluster centre in scaled units (large: an atypical "
                     "member).")),
        trend=("behaviour_segment", "rfm_segment")),  # silhouettes on different feature spaces are not comparable
)
