"""Transaction fraud: a ranked queue for investigators each morning. XGBoost where the data holds labelled frauds;
an IsolationForest anomaly score where it does not, marked `unsupervised` on every row it scores.

Pure functions on a frame of per-transaction features: `transaction_id`, `booked_at` (a timestamp), optionally
`customer_id`, the label `fraud` (1/0) when there is one, and the feature columns (numbers, or text with few values).
A model is judged the way a fraud team uses it at 0.1-1% base rates, on the latest transactions (a time split, as
the model will be used: trained on the past, run on tomorrow): the area under the precision-recall curve (ROC AUC
looks excellent for almost any model when 99.8% of transactions are genuine) and the precision and recall of each
day's review queue, the `review_per_day` highest scores of the day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from ml.errors import NotEnoughData
from ml.frame import FeatureSpec, gain_shares, robust_scale, top_names
from ml.params import FraudParams
from ml.registry import load_artifacts, save_artifacts
from ml.split import check_classes

LABEL = "fraud"
WEIGHT = "sample_weight"  # 1 / the chance a row was sampled (warehouse/fraud.py): metrics and fits weigh by it
NOT_FEATURES = {"transaction_id", "customer_id", "booked_at", LABEL, WEIGHT}
SUPERVISED, UNSUPERVISED = "supervised", "unsupervised"
UNUSUAL = 3.0  # robust z-score from which a value is named as a reason for an anomaly score


def time_holdout(booked_at: pd.Series, share: float) -> np.ndarray:
    """True for the latest `share` of transactions by time (ties in file order): what a model is judged on."""
    order = np.argsort(pd.to_datetime(booked_at).to_numpy(), kind="stable")
    held = np.zeros(len(order), dtype=bool)
    held[order[int(round(len(order) * (1 - share))):]] = True
    return held


def review_queue(booked_at: pd.Series, score: np.ndarray, per_day: int,
                 weight: np.ndarray | None = None) -> np.ndarray:
    """True for the transactions investigators would review: each calendar day's `per_day` highest scores. With
    sample weights, a day's queue holds the highest scores until their weights add up to `per_day` (a sampled row
    stands for `weight` transactions of the whole population)."""
    w = np.ones(len(score)) if weight is None else np.asarray(weight, dtype=float)
    frame = pd.DataFrame({"day": pd.to_datetime(booked_at).dt.floor("D").to_numpy(), "score": score, "w": w})
    order = frame.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    before = order.groupby("day")["w"].cumsum() - order["w"]  # weight of the higher scores of the same day
    return (before < per_day).reindex(frame.index).to_numpy()


def judge(y: np.ndarray, score: np.ndarray, booked_at: pd.Series, per_day: int,
          weight: np.ndarray | None = None) -> dict:
    """The holdout figures a gate reads: AUPRC, ROC AUC, and the daily review queue's precision and recall, each
    weighted by `weight` (a sample's rows standing for the population's) when given."""
    y = np.asarray(y, dtype=int)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    queue = review_queue(booked_at, score, per_day, w)
    found = float((w * y)[queue].sum())
    return {"auprc": float(average_precision_score(y, score, sample_weight=w)),
            "roc_auc": float(roc_auc_score(y, score, sample_weight=w)),
            "precision_at_review": found / max(float(w[queue].sum()), 1.0),
            "recall_at_review": found / max(float((w * y).sum()), 1.0),
            "reviewed": int(round(w[queue].sum())), "holdout_frauds": int(y.sum()), "holdout_transactions": len(y),
            "base_rate": float((w * y).sum() / w.sum())}


@dataclass
class FraudModel:
    method: str  # supervised | unsupervised
    spec: FeatureSpec
    params: FraudParams
    booster: xgb.Booster | None = None  # supervised
    forest: IsolationForest | None = None  # unsupervised, with the training figures below
    center: dict[str, float] = field(default_factory=dict)  # per numeric input: training median (and fill value)
    spread: dict[str, float] = field(default_factory=dict)  # per numeric input: training IQR / 1.349 (a robust SD)
    quantiles: list[float] = field(default_factory=list)  # training anomaly scores at 0, 0.1%, ..., 100%
    metrics: dict = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.spec.names

    def importance(self) -> dict[str, float]:
        return self.gain

    def save(self, models_dir: str | Path, version: int) -> Path:
        rest = {"method": self.method, "spec": self.spec.to_dict(), "params": self.params.model_dump(),
                "forest": self.forest, "center": self.center, "spread": self.spread, "quantiles": self.quantiles,
                "metrics": self.metrics, "importance": self.gain}
        return save_artifacts(models_dir, "fraud", version, rest, {"": self.booster} if self.booster else None)

    @classmethod
    def load(cls, folder: str | Path) -> FraudModel:
        rest, boosters = load_artifacts(folder)
        return cls(rest["method"], FeatureSpec.from_dict(rest["spec"]), FraudParams.from_config(rest["params"]),
                   boosters.get(""), rest["forest"], rest["center"], rest["spread"], rest["quantiles"],
                   rest["metrics"], rest["importance"])

    def _inputs(self, frame: pd.DataFrame) -> xgb.DMatrix | pd.DataFrame:
        """The model matrix, built once per frame: a DMatrix for the booster, the typed frame for the forest."""
        m = self.spec.matrix(frame)
        return xgb.DMatrix(m, enable_categorical=True) if self.method == SUPERVISED else m

    def _numbers(self, m: pd.DataFrame) -> np.ndarray:
        """The IsolationForest's matrix: numbers with gaps filled by the training median, categories as codes."""
        m = m.fillna({col: self.center[col] for col in self.spec.numeric})
        for col in self.spec.categorical:
            m[col] = m[col].cat.codes
        return m.to_numpy(dtype="float32")

    def _score(self, inputs: xgb.DMatrix | pd.DataFrame) -> np.ndarray:
        if self.method == SUPERVISED:
            return self.booster.predict(inputs)
        anomaly = -self.forest.score_samples(self._numbers(inputs))
        return np.interp(anomaly, self.quantiles, np.linspace(0, 1, len(self.quantiles)))

    def _reasons(self, inputs: xgb.DMatrix | pd.DataFrame, top: int) -> np.ndarray:
        if self.method == SUPERVISED:
            contribs = self.booster.predict(inputs, pred_contribs=True, approx_contribs=True)[:, :-1]  # last: bias
            return top_names(contribs, self.spec.names, top)
        cols = self.spec.numeric
        m = inputs[cols].to_numpy(dtype="float64")
        z = np.abs(m - np.array([self.center[c] for c in cols])) / np.array([self.spread[c] for c in cols])
        return top_names(np.nan_to_num(z, nan=0.0), cols, top, floor=UNUSUAL)

    @property
    def flag_at(self) -> float:
        return self.params.flag_at if self.method == SUPERVISED else self.params.flag_at_unsupervised

    def fraud_score(self, frame: pd.DataFrame) -> np.ndarray:
        """Supervised: the probability of fraud. Unsupervised: the share of training transactions less unusual
        than this one (0.999: more unusual than 99.9% of them)."""
        return self._score(self._inputs(frame))

    def reasons(self, frame: pd.DataFrame, top: int = 3) -> np.ndarray:
        """Supervised: the inputs pushing the score up most (XGBoost contributions). Unsupervised: the numbers
        furthest from the training median, in robust standard deviations, from UNUSUAL on."""
        return self._reasons(self._inputs(frame), top)

    def score(self, frame: pd.DataFrame, top: int = 3) -> pd.DataFrame:
        """One row per transaction: its ids, fraud_score, fraud_rank (1 = review first), flagged, reasons, method."""
        inputs = self._inputs(frame)  # scores and reasons read the same matrix
        out = frame[[c for c in ("transaction_id", "customer_id", "booked_at") if c in frame.columns]].reset_index(
            drop=True)
        out["fraud_score"] = self._score(inputs)
        out["fraud_rank"] = out["fraud_score"].rank(method="first", ascending=False).astype("int64")
        out["flagged"] = out["fraud_score"] >= self.flag_at
        reasons = self._reasons(inputs, top)
        for i in range(top):
            out[f"reason_{i + 1}"] = reasons[:, i] if i < reasons.shape[1] else None
        out["method"] = self.method
        return out


def labels(frame: pd.DataFrame) -> np.ndarray | None:
    """1 fraud, 0 genuine or not known (a boolean from DuckDB, nullable, or 1/0)."""
    return frame[LABEL].astype("float64").fillna(0).astype(int).to_numpy() if LABEL in frame.columns else None


def _weights(frame: pd.DataFrame) -> np.ndarray:
    return frame[WEIGHT].to_numpy(dtype=float) if WEIGHT in frame.columns else np.ones(len(frame))


def choose_method(frame: pd.DataFrame, params: FraudParams) -> str:
    y = labels(frame)
    labelled = y is not None and bool(y.any())
    if params.method == SUPERVISED and not labelled:
        raise NotEnoughData(f"models.fraud.params.method is supervised, but no transaction is labelled '{LABEL}'")
    return params.method if params.method != "auto" else (SUPERVISED if labelled else UNSUPERVISED)


def train_fraud(frame: pd.DataFrame, params: FraudParams | None = None, min_frauds: int = 30) -> FraudModel:
    """Fit on all but the latest `holdout_share` of transactions and judge on those (where labels exist)."""
    params = params or FraudParams()
    method = choose_method(frame, params)
    spec = FeatureSpec.infer(frame, exclude=NOT_FEATURES | set(params.exclude))
    if not spec.names:
        raise NotEnoughData("no transaction feature to score fraud on")
    hold = time_holdout(frame["booked_at"], params.holdout_share)
    train, test = frame[~hold], frame[hold]
    y, w = labels(frame), _weights(frame)
    if method == SUPERVISED:
        check_classes(y, hold, min_frauds, ("fraudulent", "genuine"), unit="transactions")
        booster = xgb.train(
            {"objective": "binary:logistic", "eval_metric": "aucpr", "tree_method": "hist",
             "max_depth": params.max_depth, "eta": params.learning_rate, "min_child_weight": params.min_child_weight,
             "seed": params.seed},
            xgb.DMatrix(spec.matrix(train), label=y[~hold], weight=w[~hold], enable_categorical=True),
            num_boost_round=params.n_estimators)
        model = FraudModel(SUPERVISED, spec, params, booster=booster, gain=gain_shares(booster))
    else:
        model = FraudModel(UNSUPERVISED, spec, params)
        matrix = spec.matrix(train)
        center, spread = robust_scale(matrix[spec.numeric].to_numpy(dtype="float64"))
        model.center = dict(zip(spec.numeric, center.tolist(), strict=True))
        model.spread = dict(zip(spec.numeric, spread.tolist(), strict=True))
        model.forest = IsolationForest(n_estimators=params.isolation_trees, random_state=params.seed, n_jobs=1)
        X = model._numbers(matrix)
        model.forest.fit(X, sample_weight=w[~hold])
        model.quantiles = np.quantile(-model.forest.score_samples(X), np.linspace(0, 1, 1001)).tolist()
    model.metrics = {"method": method, "train_transactions": int((~hold).sum()),
                     **evaluate(model, test, params.review_per_day)}
    return model


def evaluate(model: FraudModel, test: pd.DataFrame, per_day: int) -> dict:
    """A model's figures on holdout transactions: the share it flags, and where frauds are labelled how it ranks
    them (judge). The gate compares a challenger and the champion by this, on the same transactions."""
    score = model.fraud_score(test)
    y, w = labels(test), _weights(test)
    out = {"holdout_transactions": len(test), "flagged_share": float(np.average(score >= model.flag_at, weights=w))}
    if y is not None and y.any():
        out |= judge(y, score, test["booked_at"], per_day, w)
    return out

