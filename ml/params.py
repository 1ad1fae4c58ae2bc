"""Every model's parameters, with their defaults and what each one does: the one place they are defined.

The pipeline's settings (assets/settings.py, `models.<model>.params`) are these classes, so a default
written here is the default a run uses, `scorehouse settings` shows and docs/settings.md lists. Unknown keys
are refused. Kept apart from the model modules so that reading the settings does not load XGBoost,
scikit-learn or SciPy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_serializer, field_validator


class Params(BaseModel):
    """Model parameters: typed, unknown keys refused."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Self:
        """From settings or from a saved artifact's params (lists where tuples are expected are fine)."""
        return cls.model_validate(dict(cfg or {}))


def _cutoffs(value: Any) -> tuple[float, float]:
    ok = (isinstance(value, list | tuple) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
          and 0 < value[0] < value[1] < 1)
    if not ok:
        raise ValueError(f"expected 2 numbers in (0, 1), the lower first, got {value!r}")
    return float(value[0]), float(value[1])


RiskCutoffs = Annotated[tuple[float, float], BeforeValidator(_cutoffs)]


# ------------------------------------------------------------------------------------------------- churn

class ChurnTraining(Params):
    """models.churn.params: XGBoost and the split (the risk cut-offs are models.churn.risk_cutoffs)."""

    n_estimators: int = Field(150, ge=1, description=(
        "XGBoost trees. Reason codes cost in proportion to trees: 400 trees at 0.05 gave +0.001 AUC on "
        "Churn_Modelling and +0.002 on the demo bank for 2.7x the scoring time"))
    max_depth: int = Field(4, ge=1, description="XGBoost tree depth")
    learning_rate: float = Field(0.1, gt=0, description="XGBoost learning rate")
    subsample: float = Field(0.8, gt=0, le=1, description="share of customers each tree sees")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="share of features each tree sees")
    min_child_weight: float = Field(5.0, ge=0, description="XGBoost min_child_weight")
    holdout_share: float = Field(0.2, gt=0, lt=1, description=(
        "customers held out (by a hash of customer_id: the same ones every run)"))
    calibration_share: float = Field(0.2, gt=0, lt=1, description=(
        "of the rest: the probability calibration is fitted on it"))
    max_train_rows: int | None = Field(200_000, ge=1, description=(
        "the trees are fitted on at most this many of the other customers, a sample that keeps the churn rate "
        "(by a hash of customer_id); the holdout and the calibration slice are never sampled. null: all. On the "
        "generated 1M bank 200,000 gave holdout AUC 0.8676 against 0.8689 on all 620,146 (learning curve in "
        "benchmarks/RESULTS.md)"))
    seed: int = Field(7, description="random seed")
    exclude: tuple[str, ...] = Field((), description="feature columns never used")


class ChurnParams(ChurnTraining):
    """What a churn model is trained and scored with (saved in its artifact)."""

    risk_cutoffs: RiskCutoffs = Field((0.3, 0.6), description="churn probability from which risk is Medium, High")


# ---------------------------------------------------------------------------------------------- segments

PREFERRED = (
    "recency_days", "frequency", "monetary", "balance_now", "balance_change_90d", "products_held", "income",
    "age", "tenure_months", "spend_to_income", "channel_share_online", "channel_share_mobile", "txn_trend_90d",
)


class SegmentParams(Params):
    """models.segments.params (ml/segments.py explains each step)."""

    features: tuple[str, ...] = Field(PREFERRED, description=(
        "preferred behaviour columns, in order of preference"))
    exclude: tuple[str, ...] = Field((), description=(
        "never used, even as attr_* top-up (e.g. columns that describe the campaign month rather than the "
        "customer)"))
    min_features: int = Field(6, ge=1, description=(
        "fewer usable behaviour columns: the numeric attr_* columns are added"))
    min_non_null: float = Field(0.5, ge=0, le=1, description="share of training customers a column needs a value for")
    max_top_share: float = Field(0.98, gt=0, le=1, description=(
        "most common value covering more of the customers: a (nearly) constant column, not used"))
    max_corr: float = Field(0.9, gt=0, le=1, description=(
        "|correlation| above which a later column duplicates a kept one and is dropped"))
    skew_threshold: float = Field(1.0, ge=0, description="|skewness| above which a column is log-transformed")
    clip_z: float = Field(5.0, gt=0, description="scaled values are clipped to +- this")
    k_min: int = Field(4, ge=2, description="fewest clusters tried")
    k_max: int = Field(6, ge=2, description="most clusters tried (the best k by silhouette is kept)")
    silhouette_sample: int = Field(10_000, ge=10, description=(
        "silhouette is O(n^2): measured on at most this many customers"))
    fit_sample: int = Field(50_000, ge=1, description=(
        "K-Means fitted on at most this many, then everyone is assigned. On the generated 1M bank the holdout "
        "silhouette was flat from 25,000 to 400,000 (0.126-0.129, within its sampling noise; benchmarks/RESULTS.md); "
        "50,000 is the smallest that samples none of the real sets"))
    n_init: int = Field(4, ge=1, description="K-Means starts")
    max_iter: int = Field(300, ge=1, description="K-Means iterations per start")
    seed: int = Field(7, description="random seed")
    threads: int | None = Field(1, ge=1, description=(
        "BLAS/OpenMP threads while training; null: all cores (slower when the machine is shared)"))
    holdout_share: float = Field(0.2, gt=0, lt=1, description="customers held out to measure the silhouette on")
    name_min_effect: float = Field(0.5, ge=0, description=(
        "|effect size| from which a feature is a trait of a cluster (names it)"))
    name_words: int = Field(2, ge=0, description="adjectives in a segment name (before the noun)")

    @field_validator("k_max")
    @classmethod
    def _k_range(cls, k_max: int, info: ValidationInfo) -> int:
        k_min = info.data.get("k_min")
        if k_min is not None and k_max < k_min:
            raise ValueError(f"k_max ({k_max}) is below k_min ({k_min})")
        return k_max


# ------------------------------------------------------------------------------------------ credit risk

class CreditXGB(Params):
    """The monotone XGBoost challenger's settings. Reads like the dict it is passed as (`**p.xgb`)."""

    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(3, ge=1)
    learning_rate: float = Field(0.03, gt=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(3.0, ge=0)

    def keys(self):
        return type(self).model_fields.keys()

    def __getitem__(self, key: str):
        return getattr(self, key)


class CreditParams(Params):
    """models.credit_risk.params: the WoE scorecard and its XGBoost challenger."""

    n_prebins: int = Field(20, ge=2, description=(
        "quantile pre-bins per numeric feature, merged until the bad rate is monotone"))
    min_bin_share: float = Field(0.05, ge=0, lt=1, description=(
        "smallest share of training customers in a bin (the missing bin exempt)"))
    woe_smoothing: float = Field(0.5, ge=0, description=(
        "pseudo-customers per bin at the population's good:bad; an empty bin gets WoE 0"))
    min_iv: float = Field(0.02, ge=0, description="features with less information value are left out")
    max_features: int = Field(15, ge=1, description="features in the scorecard at most")
    max_correlation: float = Field(0.8, gt=0, le=1, description=(
        "a feature whose WoE correlates more with a stronger kept one is left out"))
    max_levels: int = Field(30, ge=1, description="text columns with more distinct values are not features")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="customers held out (by a hash of customer_id)")
    C: float = Field(1.0, gt=0, description="inverse L2 regularisation of the logistic regression on WoE")
    base_score: float = Field(600.0, description="points at base_odds (good:bad)")
    base_odds: float = Field(50.0, gt=0, description="good:bad odds at base_score")
    pdo: float = Field(20.0, gt=0, description="points to double the odds")
    grade_cutoffs: tuple[float, ...] = Field((0.02, 0.05, 0.10, 0.20), description="PD from which grade B, C, D, E")
    xgb: CreditXGB = Field(default_factory=CreditXGB, description="the monotone XGBoost challenger")
    xgb_max_rows: int = Field(200_000, ge=1, description=(
        "the monotone XGBoost trains on a seeded sample of at most this many"))
    xgb_reasons: Literal["approx", "exact"] = Field("approx", description=(
        "XGBoost reason codes: approx (Saabas contributions) or exact (TreeSHAP, ~7x slower)"))
    seed: int = Field(7, description="random seed")
    exclude: tuple[str, ...] = Field(("gender",), description=(
        "never features (gender: a protected attribute, not a credit feature)"))
    proxy_exclude: tuple[str, ...] = Field(
        ("recency_days", "frequency", "monetary", "rfm_r", "rfm_f", "rfm_m", "rfm_score", "txn_count_365d",
         "spend_365d"),
        description="columns that define the RFM proxy target (or copy it): not features of a proxy model")

    @field_validator("grade_cutoffs")
    @classmethod
    def _increasing(cls, cuts: tuple[float, ...]) -> tuple[float, ...]:
        if not all(a < b for a, b in zip((0.0, *cuts), (*cuts, 1.0), strict=True)):
            raise ValueError(f"expected increasing PDs in (0, 1), got {list(cuts)}")
        return cuts

    @property
    def factor(self) -> float:
        return self.pdo / np.log(2)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * np.log(self.base_odds)


# ------------------------------------------------------------------------------------------ recommendations

class RecommendParams(Params):
    """models.recommendations.params."""

    window_days: int = Field(90, ge=1, description=(
        "train: state at snapshot - window -> what was opened up to the snapshot; judged: the window after"))
    top_n: int = Field(5, ge=1, description="products recommended per customer")
    eval_k: int = Field(5, ge=1, description="k of the ranking metrics (precision@k, MAP@k)")
    min_positives: int = Field(10, ge=0, description=(
        "fewer acquisitions in the training window: the product is ranked by popularity"))
    label_products: tuple[str, ...] = Field((), description=(
        "features.labels labels that are the acquisition of a product (e.g. term_deposit)"))
    static_features: tuple[str, ...] = Field(
        ("age", "income", "credit_score", "gender", "region", "segment", "attr_*"),
        description="customer attributes used besides the behaviour features (globs)")
    exclude: tuple[str, ...] = Field((), description="feature columns never used (e.g. one known only after the outcome)")
    exclude_products: tuple[str, ...] = Field((), description="never recommended, not in the catalogue")
    holdout_share: float = Field(0.2, gt=0, lt=1, description=(
        "label products only: customers held out by a hash of their id"))
    max_train_rows: int = Field(1_000_000, ge=1, description=(
        "(customer, product) rows fitted on at most; customers sampled by id hash above it. On the generated 1M "
        "bank 1,000,000 gave MAP@5 0.6621 against 0.6637 at 2,000,000, in 72% of the time (learning curve in "
        "benchmarks/RESULTS.md)"))
    max_eval_customers: int | None = Field(250_000, ge=1, description=(
        "the ranking metrics are measured on at most this many customers, sampled by a hash of customer_id (the "
        "challenger and the champion on the same ones); null: all. Judging every customer costs what scoring them all does"))
    min_new_customers: int = Field(100, ge=0, description=(
        "customers new in the training window needed for a cold-start ranking"))
    n_estimators: int = Field(100, ge=1, description="XGBoost trees; scoring cost ~ customers x products x trees")
    max_depth: int = Field(5, ge=1, description="XGBoost tree depth")
    learning_rate: float = Field(0.1, gt=0, description="XGBoost learning rate")
    subsample: float = Field(0.8, gt=0, le=1, description="share of rows each tree sees")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="share of features each tree sees")
    min_child_weight: float = Field(5.0, ge=0, description="XGBoost min_child_weight")
    reg_lambda: float = Field(20.0, ge=0, description="shrinks the leaves of rare products toward what the others show")
    seed: int = Field(7, description="random seed")
    n_jobs: int = Field(2, ge=1, description="products scored side by side, one thread each")

    @field_validator("label_products", "static_features", "exclude", "exclude_products", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value


# ------------------------------------------------------------------------------------------------- CLV

Tiers = tuple[tuple[str, float | None], ...]


class CLVParams(Params):
    """models.clv.params: BG/NBD x Gamma-Gamma and the tiers."""

    horizon_months: int = Field(12, ge=1, description="months of future purchases the CLV counts")
    annual_discount_rate: float = Field(0.10, ge=0, description="discount rate per year")
    margin: float = Field(1.0, gt=0, description="share of value that is profit (a bank sets its own)")
    time_unit_days: float = Field(7.0, gt=0, description="the summary's time unit: 7 = weeks, as in Fader, Hardie & Lee")
    tiers: Tiers = Field((("Platinum", 0.10), ("Gold", 0.20), ("Silver", 0.30), ("Bronze", None)), description=(
        "best first: share of scored customers per tier; the last takes the rest (null). In settings a mapping "
        "merges key by key with these tiers; a list of [name, share] pairs replaces them"))
    fit_sample: int | None = Field(200_000, ge=1, description=(
        "fit on at most this many customers (seeded sample); null: all"))
    seed: int = Field(7, description="random seed")

    @field_validator("tiers", mode="before")
    @classmethod
    def _pairs(cls, tiers: Any) -> Any:
        """A mapping {name: share} (YAML keeps its order) or a list of [name, share]."""
        return list(tiers.items()) if isinstance(tiers, Mapping) else tiers

    @field_validator("tiers")
    @classmethod
    def _partition(cls, tiers: Tiers) -> Tiers:
        shown = ", ".join(f"{n}: {'null' if s is None else s}" for n, s in tiers)
        names = [n for n, _ in tiers]
        if not tiers or len(set(names)) < len(names):
            raise ValueError(f"expected one or more tiers with distinct names, got {shown or 'none'}")
        head = [s for _, s in tiers[:-1]]
        if any(s is None for s in head):
            raise ValueError(f"only the last tier may be null (it takes the rest), got {shown} (a mapping merges "
                             "with the default tiers; a list of [name, share] pairs replaces them)")
        if any(s < 0 for s in head) or sum(head) > 1 + 1e-9:
            raise ValueError(f"tier shares must be >= 0 and add up to at most 1, got {shown}")
        return tiers

    @field_serializer("tiers")
    def _as_mapping(self, tiers: Tiers) -> dict[str, float | None]:
        return dict(tiers)  # the shape users write, so that a user's tiers merge with these key by key


def champion_policy(policy: str | dict | None) -> tuple[str, float]:
    """The champion policy as (its name, by how much more holdout AUC the XGBoost must have than the scorecard to
    serve): `best` (0: the higher AUC serves, the scorecard on a tie), `scorecard` (never the XGBoost) or
    `{scorecard_within: delta}` (also written as the string 'scorecard_within: delta'). None means best."""
    if policy is None or policy == "best":
        return "best", 0.0
    if policy == "scorecard":
        return "scorecard", float("inf")
    delta = None
    if isinstance(policy, dict) and list(policy) == ["scorecard_within"]:
        delta = policy["scorecard_within"]
    elif isinstance(policy, str) and policy.partition(":")[0].strip() == "scorecard_within":
        delta = policy.partition(":")[2].strip()
    try:
        delta = float(delta)
    except (TypeError, ValueError):
        delta = None
    if delta is None or not delta >= 0:
        raise ValueError(f"models.credit_risk.champion_policy {policy!r}: expected best, scorecard or "
                         "{scorecard_within: <AUC delta >= 0>}")
    return f"scorecard_within: {delta:g}", delta


# ----------------------------------------------------------------------------------------------- fraud

class FraudParams(Params):
    """models.fraud.params: how transactions are scored for fraud, and judged."""

    method: Literal["auto", "supervised", "unsupervised"] = Field("auto", description=(
        "supervised (XGBoost) needs a fraud label; unsupervised (IsolationForest) scores how unusual a transaction "
        "is; auto: supervised when the data holds labelled frauds"))
    n_estimators: int = Field(400, ge=1, description=(
        "XGBoost trees. On the ULB card transactions (time split) 400 at 0.05 gave AUPRC 0.79, 200 at 0.1 0.67"))
    max_depth: int = Field(4, ge=1, description="XGBoost tree depth")
    learning_rate: float = Field(0.05, gt=0, description="XGBoost learning rate")
    min_child_weight: float = Field(1.0, ge=0, description="XGBoost min_child_weight")
    isolation_trees: int = Field(200, ge=1, description="IsolationForest trees (unsupervised)")
    holdout_share: float = Field(0.2, gt=0, lt=1, description=(
        "the latest transactions held out to judge the model (by time, never at random: fraud patterns move, and "
        "a random split puts the twins of one card-testing burst on both sides)"))
    review_per_day: int = Field(200, ge=1, description=(
        "transactions investigators review a day: precision is judged within that many per day of the holdout"))
    flag_at: float = Field(0.5, gt=0, le=1, description=(
        "supervised: a transaction whose probability of fraud is at least this is flagged"))
    flag_at_unsupervised: float = Field(0.999, gt=0, le=1, description=(
        "unsupervised: a transaction more unusual than this share of the training transactions is flagged"))
    seed: int = Field(7, description="random seed")
    exclude: tuple[str, ...] = Field((), description="feature columns never used")


# ------------------------------------------------------------------------------------- book performance

class BookScoreParams(Params):
    """features.book.score: each period's performance score of a manager's or agency's book (ml/performance.py)."""

    weights: dict[Literal["activity", "growth", "retention"], float] = Field(
        {"activity": 0.5, "growth": 0.3, "retention": 0.2}, description=(
            "the composite without objectives (raw.targets): the weighted sum of activity (share of held products "
            "used), growth (0.5 + growth_scale x net products opened per product held, within 0..1) and retention "
            "(1 - products closed per product held), put on the T-score scale within each period (50: the "
            "network's average; 10 points: one standard deviation)"))
    window_periods: int = Field(3, ge=1, description=(
        "the composite's rates are over this many periods up to the scored one (3 months: a rolling quarter), so "
        "one month's handful of new products at a small book does not swing its score"))
    growth_scale: float = Field(10.0, gt=0, description=(
        "growth's slope: at 10, a book growing 5% over the window scores 1 (and shrinking 5%, 0)"))
    achievement_cap: float = Field(1.0, gt=0, description=(
        "with objectives: each one counts achieved / target up to this (1: beating one objective does not make "
        "up for missing another); the score is 100 x their mean / the cap"))

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict) -> dict:
        if any(v < 0 for v in weights.values()) or not sum(weights.values()) > 0:
            raise ValueError(f"weights must be >= 0 and not all 0, got {weights!r}")
        return weights


class PerformanceParams(Params):
    """models.manager_performance.params / models.agency_performance.params: the XGBoost regressor predicting a
    book's next period score (ml/performance.py)."""

    n_estimators: int = Field(150, ge=1, description="XGBoost trees")
    max_depth: int = Field(2, ge=1, description=(
        "XGBoost tree depth: a network has hundreds of managers, tens of agencies; deeper trees learnt noise"))
    learning_rate: float = Field(0.03, gt=0, description="XGBoost learning rate")
    min_child_weight: float = Field(20.0, ge=0, description="XGBoost min_child_weight")
    subsample: float = Field(0.8, gt=0, le=1, description="share of rows each tree sees")
    holdout_periods: int = Field(2, ge=1, description=(
        "the latest periods whose score is predicted are held out (by time): the gate's RMSE is on them"))
    cv_folds: int = Field(5, ge=2, description=(
        "cross-validation on the training periods, folds by entity (a manager never on both sides): reported"))
    seed: int = Field(7, description="random seed")
