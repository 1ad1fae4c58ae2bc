"""Credit risk in Dagster: a WoE scorecard and a monotone XGBoost judged on the same holdout, the one
models.credit_risk.champion_policy picks served (ml/credit_risk.py), through the shared model lifecycle. Real
default outcomes when the source has them, else the RFM proxy target."""

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
from assets.metadata import frame_md
from assets.resources import Warehouse
from ml.errors import NotEnoughData
from ml.registry import Entry
from ml.split import check_classes, holdout_mask
from warehouse.columns import CUSTOMER_ID, ScoreColumn, ScoredTable

ml_credit = lazy_module("ml.credit_risk")  # XGBoost/scikit-learn/SciPy load on first use


def fit(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict) -> Trained:
    features = read_features(warehouse)
    with warehouse.connect() as con:
        labels = con.execute("SELECT customer_id, value FROM features.labels WHERE label = ?", [cfg["label"]]).df()
        if labels["value"].nunique() < 2 and not cfg["proxy_when_no_labels"]:
            require_label(con, cfg["label"], "models.credit_risk.label")
    p = ml_credit.CreditParams.from_config(cfg["params"])
    if labels["value"].nunique() < 2:
        if not cfg["proxy_when_no_labels"]:
            raise NotEnoughData(f"the '{cfg['label']}' outcomes hold one class only (defaults, or none)")
        labels = None  # the RFM proxy target (needs transactions)
        if features["frequency"].fillna(0).eq(0).all():
            raise NotEnoughData(f"no '{cfg['label']}' outcomes (models.credit_risk.label) and no transactions for "
                                "the RFM proxy target")
    frame, y, proxy = ml_credit.credit_target(features, labels, p.seed)
    hold = holdout_mask(frame["customer_id"], p.holdout_share, salt="holdout")
    check_classes(y.to_numpy(), hold, cfg["min_holdout_per_class"],
                  ("defaulted" if not proxy else "proxy-bad", "good"))
    model = ml_credit.train_credit_risk(frame, y, p, proxy=proxy, policy=cfg.get("champion_policy"))

    def rescore(champion: Entry) -> dict:  # the champion, as it serves, on the customers the challenger was judged on
        rival = ml_credit.CreditModel.load(champion.artifact_path)
        return ml_credit.evaluate(y.to_numpy(dtype=int)[hold], rival.predict_pd(frame[hold]))

    card = model.scorecard_table()
    iv = list(model.iv.items())[:10]
    return Trained(model, {**model.metrics, "target_proxy": int(proxy)}, model.features,
                   features["snapshot_date"].max(), frame_hash(frame), {
        "target": "RFM proxy (least engaged K-Means cluster), not observed defaults" if proxy
                  else f"observed '{cfg['label']}' outcomes of {len(frame):,} customers",
        "training_rows": len(frame), "bad_rate": float(y.mean()),
        "model_kind": model.kind, "model_kind_why": model.metrics["model_kind_why"],
        "information_value": frame_md([(k, f"{v:.3f}") for k, v in iv], ["feature", "IV"]),
        "scorecard": dg.MetadataValue.md(card.head(60).to_markdown(index=False, floatfmt=".4g")),
    }, rescore=rescore)


def score(context: dg.AssetExecutionContext, warehouse: Warehouse, cfg: dict, champion: Entry) -> Scored:
    model = ml_credit.CreditModel.load(champion.artifact_path)
    features = read_features(warehouse, model.features)
    scored = model.score(features)
    n = max(len(scored), 1)
    grades = scored.groupby("grade")["pd"].agg(["size", "mean"]).sort_index()
    return Scored(scored, features["snapshot_date"].max(), {
        "model_kind": model.kind, "mean_pd": float(scored["pd"].mean()),
        "target_kind": str(scored["target_kind"].iloc[0]) if len(scored) else "",
        "grades": frame_md([(g, f"{r['size']:,}", f"{r['size'] / n:.1%}", f"{r['mean']:.2%}")
                            for g, r in grades.iterrows()], ["grade", "customers", "share", "mean PD"]),
    }, inputs=features)


SPEC = ModelSpec(
    name="credit_risk",
    train_doc="A WoE scorecard (monotone bins, logistic regression, points from base score / odds / PDO) and a "
              "monotone XGBoost, on observed default outcomes or, without them, the RFM proxy target, both judged on "
              "the same holdout; models.credit_risk.champion_policy picks the one the version serves. Registered "
              "as challenger with the served model's holdout AUC, Gini and KS, both models' AUC and why.",
    score_doc="scores.credit_risk: every customer's points, PD, grade and top 3 reason codes from the served model "
              "(model_kind: scorecard or xgboost), and whether the target was observed defaults or the RFM proxy; "
              "each run is appended to scores.credit_risk_history.",
    fit=fit, model_class="ml.credit_risk:CreditModel", score=score,
    train_deps=(CUSTOMER_FEATURES, LABELS),
    kinds=frozenset({"scikitlearn", "xgboost", "duckdb"}),
    comparable_on=("target_proxy",),  # a proxy-target model is not compared with one on observed defaults
    domain="credit",
    table=ScoredTable(
        "credit_risk", "customer", "credit risk",
        (ScoreColumn("customer_id", CUSTOMER_ID),
         ScoreColumn("credit_points", "Points (more = lower risk): base score 600 at odds 50:1, 20 points to double "
                     "the odds (`models.credit_risk.params`). From the scorecard: the sum of the customer's bin points. "
                     "From the XGBoost: the points its PD is worth on the same scale (600 + 20/ln 2 × (ln(good:bad "
                     "odds) − ln 50)), so points and grades read the same whichever model serves. (Not the bureau's "
                     "`credit_score` of the customer file.)", was="score"),
         ScoreColumn("probability_of_default", type="DOUBLE", doc="Probability of default implied by the points. Trained on the "
                     "customers with a default outcome (e.g. loan holders); for the others it is the PD they would "
                     "have as a borrower.", customer_scores=True, was="pd"),
         ScoreColumn("credit_grade", "A..E by PD (`grade_cutoffs`, default A < 2%, B < 5%, C < 10%, D < 20%, E the "
                     "rest).", customer_scores=True, was="grade"),
         *(ScoreColumn(f"credit_reason_{i}", f"The feature costing the customer the {nth}most points, named as in "
                       "`features.customer_features`; null when no further feature costs any. Scorecard: points lost "
                       "against the feature's best *populous* bin (one holding at least `min_bin_share`, 5%, of the "
                       "training customers; a rare category is merged into the bin of the closest WoE, so no bin is "
                       "smaller, except the missing-value bin). XGBoost: the largest per-customer contributions to its "
                       "log-odds of default (`pred_contribs`, Saabas; `xgb_reasons: exact` for TreeSHAP), i.e. points "
                       "lost against the average customer.",
                       customer_scores=True, was=f"reason_{i}")
           for i, nth in ((1, ""), (2, "second "), (3, "third "))),
         ScoreColumn("target_kind", "`defaulted` (observed defaults) or `rfm_proxy` (no default outcomes in the "
                     "source: the least engaged RFM cluster stands in for \"bad\"; treat as an engagement risk, not "
                     "a credit PD)."),
         ScoreColumn("model_kind", "Which model scored the row: `scorecard` (WoE scorecard) or `xgboost` (monotone "
                     "XGBoost). Both are fitted at each training and judged on the same holdout; "
                     "`models.credit_risk.champion_policy` picks the one the version serves (`best`, `scorecard`, or "
                     "`{scorecard_within: delta}`), recorded in the registry's metrics. Null in history rows scored "
                     "before the column existed (they were scorecards).")),
        trend=("probability_of_default", "credit_grade")),
)
