"""Relationship-manager and agency performance: each period's score (0-100) from the book, and an XGBoost regressor
predicting next period's from this period's book and the scores before it.

The score of a period is objective achievement where the bank delivers objectives (raw.targets: 100 x the mean of
achieved / target over the period's objectives, each capped), else a composite of the book
(BookScoreParams.weights: product activity, book growth and retention) on the T-score scale within the period
(50: the network's average; 10 points: one standard deviation). The model is judged on the latest
periods (by time), against carrying the last score forward: a network whose scores barely move is predicted well
by that already, so the gate asks for skill over it as well as a low RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import GroupKFold

from ml.errors import NotEnoughData
from ml.params import BookScoreParams, PerformanceParams
from ml.registry import load_artifacts, save_artifacts
from warehouse.performance import FEATURE_DOCS

ENTITY = ["level", "entity_id"]  # a manager and an agency may share an id
KEYS = [*ENTITY, "period"]
FEATURES = list(FEATURE_DOCS)  # what the model reads for a period: the book's rates and size, the scores before it


def _ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    return a / b.where(b > 0)


def period_scores(book: pd.DataFrame, params: BookScoreParams, targets: pd.DataFrame | None = None) -> pd.DataFrame:
    """The book (one row per entity and period, the counts of warehouse.performance.BOOK_DOCS) with its rates, its score and where the score came from
    (`objectives` where the entity has objectives with an achievement for the period, else `book composite`)."""
    f = book.sort_values(KEYS).reset_index(drop=True)
    # rates over the last `window_periods` periods (each entity's own): a month's handful of new products at a
    # 40-client manager is noise, not performance
    by = f.groupby(ENTITY, sort=False)

    def trailing(column: str) -> pd.Series:
        return by[column].transform(lambda s: s.rolling(params.window_periods, min_periods=1).sum())

    held = trailing("products_held")
    f["activity"] = _ratio(trailing("products_active"), held).fillna(0.0).clip(0, 1)
    f["growth"] = _ratio(trailing("new_products") - trailing("closed_products"), held).fillna(0.0)
    f["retention"] = (1 - _ratio(trailing("closed_products"), held).fillna(0.0)).clip(0, 1)
    w = params.weights
    total = sum(w.values())
    composite = 100 * (w.get("activity", 0) * f["activity"]
                       + w.get("growth", 0) * (0.5 + params.growth_scale * f["growth"]).clip(0, 1)
                       + w.get("retention", 0) * f["retention"]) / total
    # On the T-score scale within each period: 50 is the network's average book that period and 10 points one
    # standard deviation, so a month that moves every book alike (a season, a wave of departures) moves no score,
    # and predicting 50 for everyone scores an RMSE of 10 — the bar a model must beat.
    by = composite.groupby([f["level"], f["period"]], sort=False)
    spread = by.transform("std").fillna(0.0)
    t_score = 50 + 10 * (composite - by.transform("mean")) / spread.where(spread > 0)
    f["score"], f["score_source"] = t_score.fillna(50.0).clip(0, 100), "book composite"
    if targets is not None and len(targets):
        t = targets.dropna(subset=["achieved"])
        t = t[t["target"] > 0]
        if len(t):
            got = (t["achieved"] / t["target"]).clip(0, params.achievement_cap) / params.achievement_cap
            achieved = (100 * got).groupby([t[k] for k in KEYS]).mean().rename("achievement").reset_index()
            f = f.merge(achieved, on=KEYS, how="left")
            has = f["achievement"].notna()
            f.loc[has, "score"] = f.loc[has, "achievement"]
            f.loc[has, "score_source"] = "objectives"
            f = f.drop(columns="achievement")
    return f


def features(scored: pd.DataFrame) -> pd.DataFrame:
    """FEATURES per entity and period (lags within each entity, periods in order), and `next_score`: the score of
    the entity's next period (NaN for its latest), what the model learns to predict."""
    f = scored.sort_values(KEYS).reset_index(drop=True)
    by = f.groupby(ENTITY, sort=False)
    f["score_lag_1"] = by["score"].shift(1)
    f["score_lag_2"] = by["score"].shift(2)
    f["score_mean_3"] = by["score"].transform(lambda s: s.rolling(3, min_periods=1).mean())
    f["score_mean_all"] = by["score"].transform(lambda s: s.expanding().mean())
    f["score_trend"] = f["score"] - f["score_lag_2"]
    f["activity_mean_3"] = by["activity"].transform(lambda s: s.rolling(3, min_periods=1).mean())
    f["growth_mean_3"] = by["growth"].transform(lambda s: s.rolling(3, min_periods=1).mean())
    f["products_per_client"] = _ratio(f["products_held"], f["clients"])
    f["active_client_share"] = _ratio(f["active_clients"], f["clients"])
    f["churned_client_share"] = _ratio(f["churned_clients"], f["clients"])
    f["transactions_per_client"] = _ratio(f["transactions"], f["clients"])
    f["flow_per_client"] = _ratio(f["net_flow"], f["clients"])
    f["clients_change"] = _ratio(f["clients"], by["clients"].shift(1)) - 1
    f["next_score"] = by["score"].shift(-1)
    f["next_period"] = by["period"].shift(-1)
    return f


def _rmse(y, p) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def _booster(x: pd.DataFrame, y: pd.Series, params: PerformanceParams) -> xgb.Booster:
    return xgb.train({"objective": "reg:squarederror", "max_depth": params.max_depth, "eta": params.learning_rate,
                      "min_child_weight": params.min_child_weight, "subsample": params.subsample,
                      "seed": params.seed, "nthread": 2},
                     xgb.DMatrix(x[FEATURES], label=y), num_boost_round=params.n_estimators)


def judge(model: PerformanceModel, test: pd.DataFrame) -> dict:
    """RMSE, MAE and R² of the predicted next score on `test`, and the same for carrying the last score forward
    (`rmse_last`): `skill` is 1 - rmse / rmse_last (0: no better than that; 1: perfect)."""
    y = test["next_score"].to_numpy()
    pred = model.predict(test)
    rmse, last = _rmse(y, pred), _rmse(y, test["score"])
    sst = float(((y - y.mean()) ** 2).sum())
    return {"rmse": rmse, "mae": float(np.mean(np.abs(y - pred))), "r2": 1 - float(((y - pred) ** 2).sum()) / sst
            if sst > 0 else 0.0, "rmse_last": last, "skill": 1 - rmse / last if last > 0 else 0.0,
            "holdout_rows": len(test)}


@dataclass
class PerformanceModel:
    level: str  # manager | agency
    params: PerformanceParams
    booster: xgb.Booster
    metrics: dict = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return list(FEATURES)

    def importance(self) -> dict[str, float]:
        return self.gain

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Next period's score: this period's plus the change the booster predicts (it learns the change, so
        carrying the score forward is where it starts from, not something it has to learn)."""
        change = self.booster.predict(xgb.DMatrix(frame[FEATURES]))
        return np.clip(frame["score"].to_numpy() + change, 0, 100)

    def contributions(self, frame: pd.DataFrame) -> np.ndarray:
        """Each input's push on each row's predicted change, in score points (XGBoost SHAP values; bias dropped)."""
        return self.booster.predict(xgb.DMatrix(frame[FEATURES]), pred_contribs=True)[:, :-1]

    def score(self, latest: pd.DataFrame, support: dict[str, str], bottom_share: float) -> pd.DataFrame:
        """One row per entity of the latest period: predicted next score, last actual, rank (1 = best predicted)
        and percentile in the network, the three inputs moving the prediction most (signed, in score points), and
        for the bottom `bottom_share` a support recommendation: the rule of the first input pulling it down that
        has one (`support`, by input name), else `support['default']`."""
        pred = self.predict(latest)
        contrib = self.contributions(latest)
        order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :3]
        names = np.array(FEATURES, dtype=object)[order]
        effects = np.take_along_axis(contrib, order, 1)
        out = pd.DataFrame({"entity_id": latest["entity_id"].to_numpy(), "agency_id": latest["agency_id"].to_numpy(),
                            "period": latest["period"].to_numpy(), "predicted_score": pred,
                            "last_score": latest["score"].to_numpy(), "score_source": latest["score_source"].to_numpy()})
        out["performance_rank"] = out["predicted_score"].rank(ascending=False, method="first").astype("int64")
        n = len(out)
        out["percentile"] = 100 * (n - out["performance_rank"]) / max(n - 1, 1)
        for i in range(3):
            out[f"driver_{i + 1}"] = names[:, i] if n else []
            out[f"driver_{i + 1}_effect"] = effects[:, i] if n else []
        down = np.argsort(contrib, axis=1, kind="stable")  # most negative first
        rules = []
        for row, p in zip(range(n), out["percentile"].to_numpy(), strict=True):
            if p > 100 * bottom_share:
                rules.append(None)
                continue
            pulling = [FEATURES[j] for j in down[row] if contrib[row, j] < 0]
            rules.append(next((support[f] for f in pulling if f in support), support.get("default")))
        out["support"] = rules
        return out.sort_values("performance_rank", kind="stable").reset_index(drop=True)

    def save(self, models_dir: str | Path, version: int) -> Path:
        rest = {"level": self.level, "params": self.params.model_dump(), "metrics": self.metrics,
                "importance": self.gain}
        return save_artifacts(models_dir, f"{self.level}_performance", version, rest, {"": self.booster})

    @classmethod
    def load(cls, folder: str | Path) -> PerformanceModel:
        rest, boosters = load_artifacts(folder)
        return cls(rest["level"], PerformanceParams.from_config(rest["params"]), boosters[""], rest["metrics"],
                   rest["importance"])


def split(frame: pd.DataFrame, holdout_periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): the rows with a next score; test predicts the latest `holdout_periods` periods."""
    rows = frame.dropna(subset=["next_score"])
    later = sorted(rows["next_period"].unique())
    if len(later) <= holdout_periods:
        raise NotEnoughData(f"{len(later) + 1} periods of book history: at least {holdout_periods + 2} are needed "
                            f"(a period to learn from and {holdout_periods} to judge on, each with the next one)")
    test = rows["next_period"].isin(later[-holdout_periods:])
    return rows[~test], rows[test]


def train_performance(frame: pd.DataFrame, level: str, params: PerformanceParams, min_entities: int) -> PerformanceModel:
    """Fit on the earlier periods, judge on the latest (`split`), and cross-validate on the earlier ones by entity
    (`cv_rmse`, `cv_rmse_sd`: reported, not gated)."""
    frame = frame.sort_values(KEYS, kind="stable").reset_index(drop=True)  # a fit never depends on the rows' order
    entities = frame["entity_id"].nunique()
    if entities < min_entities:
        raise NotEnoughData(f"{entities} {level}s with a book: at least {min_entities} are needed to rank and judge "
                            f"a model (models.{level}_performance.min_entities)")
    train, test = split(frame, params.holdout_periods)
    folds = min(params.cv_folds, train["entity_id"].nunique())
    cv = []
    for fit_idx, val_idx in GroupKFold(n_splits=folds).split(train, groups=train["entity_id"]):
        part = train.iloc[fit_idx]
        fold = PerformanceModel(level, params, _booster(part, part["next_score"] - part["score"], params))
        cv.append(_rmse(train["next_score"].iloc[val_idx], fold.predict(train.iloc[val_idx])))
    model = PerformanceModel(level, params, _booster(train, train["next_score"] - train["score"], params))
    gain = model.booster.get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    model.gain = {k: v / total for k, v in sorted(gain.items(), key=lambda kv: -kv[1])}
    model.metrics = {**judge(model, test), "cv_rmse": float(np.mean(cv)), "cv_rmse_sd": float(np.std(cv)),
                     "cv_folds": folds, "training_rows": len(train), "entities": entities,
                     "score_source": "objectives" if (frame["score_source"] == "objectives").any() else "book composite"}
    return model
