"""From a feature table (one row per customer) to a model matrix: which columns a model may use and how.

Numbers are used as they are (XGBoost handles missing values); text columns with few distinct values become
pandas categories (XGBoost's native categorical splits); keys, dates and high-cardinality text are left out.
The chosen columns and category levels are part of the model, so scoring builds exactly the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.errors import MissingInputs

NOT_FEATURES = {"customer_id", "snapshot_date"}


@dataclass
class FeatureSpec:
    numeric: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> levels seen in training

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @classmethod
    def infer(cls, frame: pd.DataFrame, max_levels: int = 30, exclude: set[str] = frozenset()) -> FeatureSpec:
        numeric, categorical = [], {}
        for col in frame.columns:
            if col in NOT_FEATURES or col in exclude:
                continue
            s = frame[col]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                if s.notna().any() and s.nunique(dropna=True) > 1:
                    numeric.append(col)
            elif pd.api.types.is_object_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
                levels = s.dropna().astype(str).value_counts()
                if 1 < len(levels) <= max_levels:
                    categorical[col] = sorted(levels.index)
        return cls(numeric, categorical)

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model matrix in a fixed column order: exactly the columns the model was trained on (MissingInputs
        naming them when `frame` lacks some, or a number column arrives as text); unseen category levels become
        missing, as any level the model never saw."""
        self.check(frame)
        out = pd.DataFrame(index=frame.index)
        for col in self.numeric:
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float32")
        for col, levels in self.categorical.items():
            out[col] = pd.Categorical(frame[col].astype("string"), categories=levels)
        return out

    def check(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.names if c not in frame.columns]
        if missing:
            raise MissingInputs(missing)
        text = [c for c in self.numeric if not (pd.api.types.is_numeric_dtype(frame[c])
                                               or pd.api.types.is_bool_dtype(frame[c]) or frame[c].isna().all())]
        if text:
            raise MissingInputs(text, "that were numbers at training and are text now")

    def to_dict(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(list(d["numeric"]), {k: list(v) for k, v in d["categorical"].items()})


def gain_shares(booster) -> dict[str, float]:
    """Each feature's share of an XGBoost booster's total gain, largest first (features it never splits on are
    absent): the model's own measure of what it relies on."""
    gain = booster.get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    return dict(sorted(((k, v / total) for k, v in gain.items()), key=lambda kv: -kv[1]))


def top_names(values: np.ndarray, names: list[str], top: int, floor: float = 0.0,
              chunk_rows: int = 65_536) -> np.ndarray:
    """Reason codes: for each row of `values` (rows x features, e.g. a feature's contribution to a score), the
    names of the `top` largest, largest first; None where a value is not above `floor`. An (n, min(top,
    features)) array, found without sorting every row (at 1M x 70 a full argsort costs seconds), `chunk_rows` rows
    at a time: the negated copy and the partition's indices of all rows at once are twice the size of `values`."""
    k = min(top, values.shape[1])
    out = np.empty((len(values), k), dtype=object)
    labels = np.array(names, dtype=object)
    for start in range(0, len(values), chunk_rows):
        v = values[start:start + chunk_rows]
        order = np.argpartition(-v, k - 1, axis=1)[:, :k]  # the k largest, unordered, then ordered
        order = np.take_along_axis(order, np.argsort(-np.take_along_axis(v, order, 1), axis=1, kind="stable"), 1)
        part = labels[order]
        part[np.take_along_axis(v, order, 1) <= floor] = None
        out[start:start + chunk_rows] = part
    return out


def robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `x` (NaN skipped): the median (0 for a column with no value), and a robust spread: IQR / 1.349
    (the standard deviation of a normal distribution with that IQR), else the standard deviation where the IQR is
    0, else 1. What an outlier is measured in, unmoved by the outliers themselves."""
    center = np.nan_to_num(np.nanmedian(x, axis=0))
    q75, q25 = np.nanpercentile(x, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    std = np.nanstd(x, axis=0)
    return center, np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))


SCORE_CHUNK_ROWS = 131_072


def in_row_chunks(score, frame: pd.DataFrame, rows: int | None = None) -> pd.DataFrame:
    """`score(part)` for every `rows` rows of `frame`, concatenated: for scoring whose every row is scored on its
    own (a prediction and its reason codes), so that the model's matrices (XGBoost's copy of the inputs, the
    per-feature contributions) are a chunk's size rather than the population's. Same rows, same values."""
    rows = rows or SCORE_CHUNK_ROWS
    if len(frame) <= rows:
        return score(frame)
    return pd.concat([score(frame.iloc[i:i + rows]) for i in range(0, len(frame), rows)], ignore_index=True)
