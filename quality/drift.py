"""Drift math (no dagster): a reference profile of a population, and PSI / KS of a new population against it.

A profile is plain JSON, saved with each trained model version:
  numeric column:     bin edges at the training deciles, the share of rows per bin (+ a missing bin) and
                      1,001 reference quantiles, from which the two-sample KS statistic is computed (error
                      at most 0.001 against the full sample, which is never stored);
  categorical column: the most frequent categories (the rest pooled as "(other)") and their shares.
PSI = sum((current - reference) * ln(current / reference)) over the bins; an empty bin counts as `epsilon`
so a category that appears or vanishes gives a large PSI, never a division error.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MISSING, OTHER = "(missing)", "(other)"
N_QUANTILES = 1001


class Bands(BaseModel):
    """monitoring.drift: PSI below `psi_warn` is stable, from `psi_warn` a warning, from `psi_alert` an alert
    (industry rule of thumb), and how profiles are built and reported. Every default here, nowhere else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_warn: float = Field(0.10, gt=0, description='PSI from which a feature or score is "warn" (check severity WARN)')
    psi_alert: float = Field(0.25, gt=0, description='PSI from which it is "alert" (check severity ERROR)')
    epsilon: float = Field(1e-4, gt=0, lt=1, description="share given to an empty bin, so PSI stays finite")
    max_categories: int = Field(30, ge=1, description=(
        'a text column\'s most frequent values profiled; the rest pooled as "(other)"'))
    top_features: int = Field(5, ge=1, description="drifted columns listed per model in checks, metadata and alerts")

    @field_validator("psi_alert")
    @classmethod
    def _ordered(cls, alert: float, info: ValidationInfo) -> float:
        warn = info.data.get("psi_warn")
        if warn is not None and alert < warn:
            raise ValueError(f"psi_alert ({alert}) is below psi_warn ({warn})")
        return alert

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Bands:
        return cls.model_validate(dict(cfg or {}))

    @property
    def warn(self) -> float:
        return self.psi_warn

    @property
    def alert(self) -> float:
        return self.psi_alert

    def band(self, psi: float) -> str:
        return "alert" if psi >= self.alert else "warn" if psi >= self.warn else "stable"


DEFAULT_BANDS = Bands()


def is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _numeric(values: pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values  # converted once by compare() for PSI, KS and the mean
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _numeric_shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of rows per bin: (-inf, e0], (e0, e1], ..., (e_last, inf), then missing."""
    missing = np.isnan(x)
    counts = np.bincount(np.searchsorted(edges, x[~missing], side="left"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype("float64")
    return counts / max(len(x), 1)


def _labels(values: pd.Series) -> pd.Series:
    return values.astype("object").where(values.notna(), MISSING).astype(str)


def profile_column(values: pd.Series, bands: Bands = DEFAULT_BANDS) -> dict:
    """The reference profile of one column."""
    if is_numeric(values):
        x = _numeric(values)
        present = x[~np.isnan(x)]
        edges = np.unique(np.quantile(present, np.linspace(0.1, 0.9, 9))) if len(present) else np.array([0.0])
        quantiles = np.quantile(present, np.linspace(0, 1, N_QUANTILES)) if len(present) else np.array([])
        return {"kind": "numeric", "edges": edges.tolist(), "shares": _numeric_shares(x, edges).tolist(),
                "quantiles": quantiles.tolist(), "mean": float(present.mean()) if len(present) else None}
    counts = _labels(values).value_counts()
    keep = counts.index[: bands.max_categories].tolist()
    shares = [float(counts[c]) / max(len(values), 1) for c in keep]
    return {"kind": "categorical", "categories": [*keep, OTHER],
            "shares": [*shares, float(counts.iloc[bands.max_categories:].sum()) / max(len(values), 1)]}


def build_profile(frame: pd.DataFrame, columns: list[str], bands: Bands = DEFAULT_BANDS) -> dict[str, dict]:
    return {c: profile_column(frame[c], bands) for c in columns if c in frame.columns}


def current_shares(values: pd.Series | np.ndarray, ref: dict) -> np.ndarray:
    """The shares of a new population in the reference's bins."""
    if ref["kind"] == "numeric":
        return _numeric_shares(_numeric(values), np.asarray(ref["edges"]))
    cats = ref["categories"][:-1]
    labels = _labels(values)
    counts = labels.value_counts()
    shares = [float(counts.get(c, 0)) / max(len(values), 1) for c in cats]
    return np.array([*shares, 1.0 - sum(shares)])


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> float:
    ref = np.maximum(np.asarray(reference, dtype="float64"), epsilon)
    cur = np.maximum(np.asarray(current, dtype="float64"), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(ref_quantiles: list[float], values: pd.Series | np.ndarray, presorted: bool = False
                 ) -> float | None:
    """Two-sample KS statistic: the largest gap between the reference's distribution function (from its
    quantiles) and the new population's. Between two reference quantiles the reference's function is flat and
    the new one only rises, so the gap peaks at a quantile or just below one: counting the new values at and
    below each of the 1,001 quantiles gives the same supremum as evaluating at every step of both functions."""
    q = np.asarray(ref_quantiles, dtype="float64")
    x = _numeric(values)
    x = x[~np.isnan(x)]
    if not presorted:
        x = np.sort(x)  # then 2 x 1,001 binary searches; numpy's sort beats 1M searches into q
    if not len(q) or not len(x):
        return None
    n, m = len(x), len(q)
    at_or_below, below = np.searchsorted(x, q, side="right") / n, np.searchsorted(x, q, side="left") / n
    f_ref, f_ref_below = np.searchsorted(q, q, side="right") / m, np.searchsorted(q, q, side="left") / m
    return float(max(np.max(np.abs(f_ref - at_or_below)), np.max(np.abs(f_ref_below - below))))


def compare(profile: dict[str, dict], frame: pd.DataFrame, bands: Bands = DEFAULT_BANDS, threads: int = 2
            ) -> pd.DataFrame:
    """PSI, KS and band per profiled column present in `frame`, worst first. Columns: feature, psi, ks, band,
    reference_mean, current_mean (NaN where they do not apply: KS and means of text columns)."""
    def measure(col: str, ref: dict) -> dict:
        numeric = ref["kind"] == "numeric"
        # sorted once (NaN last): binning and KS then search sorted keys, which is several times faster
        x = np.sort(_numeric(frame[col])) if numeric else None
        cur = current_shares(x if numeric else frame[col], ref)
        value = psi(np.asarray(ref["shares"]), cur, bands.epsilon)
        ks = ks_statistic(ref["quantiles"], x, presorted=True) if numeric else None
        return {
            "feature": col, "psi": value, "ks": np.nan if ks is None else ks, "band": bands.band(value),
            "reference_mean": np.nan if ref.get("mean") is None else ref["mean"],
            "current_mean": float(np.nanmean(x)) if numeric and (~np.isnan(x)).any() else np.nan,
        }

    # numpy sorts and searches without the GIL: columns side by side use both cores (74 columns x 1M rows of
    # churn inputs: ~5 s on one thread)
    columns = [(c, ref) for c, ref in profile.items() if c in frame.columns]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        rows = list(pool.map(lambda item: measure(*item), columns))
    out = pd.DataFrame(rows, columns=["feature", "psi", "ks", "band", "reference_mean", "current_mean"]).astype(
        {"psi": "float64", "ks": "float64", "reference_mean": "float64", "current_mean": "float64"})
    return out.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def bin_labels(ref: dict) -> list[str]:
    if ref["kind"] == "categorical":
        return list(ref["categories"])
    e = [f"{v:.4g}" for v in ref["edges"]]
    return [f"≤ {e[0]}", *(f"{a} – {b}" for a, b in zip(e, e[1:], strict=False)), f"> {e[-1]}", MISSING]


def distribution_rows(ref: dict, values: pd.Series) -> list[tuple[str, float, float]]:
    """(bin, reference share, current share) for the bins either population has: the small table the score
    asset shows."""
    cur = current_shares(values, ref)
    return [(label, float(r), float(c)) for label, r, c in zip(bin_labels(ref), ref["shares"], cur, strict=True)
            if r > 0 or c > 0]
