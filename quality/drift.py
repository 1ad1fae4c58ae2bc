"""Drift math (no dagster): a reference profile of a population, and PSI / KS of a new population against it.

A profile is plain JSON, saved with each trained model version:
  numeric column:     bin edges at the training deciles, the share of rows per bin (+ a missing bin) and
                      1,001 reference quantiles, from which the two-sample KS statistic is computed (error
                      at most 0.001 against the full sample, which is never stored);
  categorical column: the most frequent categories (the rest pooled as "(other)") and their shares.
PSI = sum((current - reference) * ln(current / reference)) over the bins; an empty bin counts as `epsilon`
so a category that appears or vanishes gives a large PSI, never a division error.

A model's band (`verdict`) is led by its score: the band of its worst score column, raised to "warn" (never
further) when its inputs drifted, each input weighted by its share of the model's importance (saved with the
reference; equal shares when the model has none). Columns constant in the reference are measured but marked
"skipped": their PSI compares rounding noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MISSING, OTHER = "(missing)", "(other)"
N_QUANTILES = 1001
SKIPPED = "skipped"  # the band of a column measured but not counted (see `measure`)
RANK = {"stable": 0, "warn": 1, "alert": 2}


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
    constant_share: float = Field(0.999, gt=0, le=1, description=(
        "a column whose reference holds one value (or nothing) in at least this share of rows is not counted "
        "(band `skipped`): there is no spread for PSI to compare"))
    min_rows: int = Field(100, ge=1, description=(
        "a population of fewer rows (scored now, or in the reference) is measured but not counted (band `skipped`): "
        "PSI over ten bins of a few dozen values (40 agencies) moves by ~0.4 with no change at all"))
    constant_spread: float = Field(1e-6, ge=0, description=(
        "a numeric column whose reference values all lie within this fraction of their magnitude is not counted "
        "(band `skipped`), e.g. a P(alive) of 1 for everyone but rounding"))

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


def constant_reason(ref: dict, bands: Bands = DEFAULT_BANDS) -> str | None:
    """Why a profiled column cannot show drift (constant or nearly so in the reference), else None."""
    shares = np.asarray(ref["shares"], dtype="float64")
    if ref["kind"] == "categorical":
        named = shares[:-1]  # the last share is "(other)": many values pooled, not one
        i = int(named.argmax()) if len(named) else -1
        if i >= 0 and named[i] >= bands.constant_share:
            return f"one value ({ref['categories'][i]}) in {named[i]:.2%} of the reference rows"
        return None
    missing = float(shares[-1])
    if missing >= bands.constant_share:
        return f"missing in {missing:.2%} of the reference rows"
    q = np.asarray(ref["quantiles"], dtype="float64")
    if not len(q):
        return "no values in the reference"
    lo, hi = q[0], q[-1]
    if hi - lo <= bands.constant_spread * max(abs(lo), abs(hi)):
        return f"constant in the reference: every value within {hi - lo:.2g} of {hi:.10g}"
    # a run of equal quantiles is one value held by at least (run - 1) / 1000 of the present rows
    starts = np.r_[0, np.flatnonzero(np.diff(q) != 0) + 1]
    runs = np.diff(np.r_[starts, len(q)])
    top = (runs.max() - 1) / (len(q) - 1) * (1 - missing)
    if top >= bands.constant_share:
        return f"one value ({q[starts[runs.argmax()]]:.10g}) in {top:.2%} of the reference rows"
    return None


def feature_weights(reference: dict) -> dict[str, float]:
    """Each profiled input's share of the model's importance saved with the reference (`importance`, any
    scale); equal shares when the model reports none (or the reference predates it)."""
    features = list(reference.get("features") or {})
    given = {f: max(float((reference.get("importance") or {}).get(f) or 0.0), 0.0) for f in features}
    total = sum(given.values())
    if total <= 0:
        return {f: 1.0 / len(features) for f in features}
    return {f: v / total for f, v in given.items()}


def measure(reference: dict, scores: pd.DataFrame, inputs: pd.DataFrame, bands: Bands = DEFAULT_BANDS,
            exclude: Mapping[str, str] | None = None, threads: int = 2) -> pd.DataFrame:
    """Every profiled score column (kind score) and input (kind feature) present now, against the reference,
    worst first: compare()'s columns plus kind, weight (an input's share of the model's importance) and note.
    A column constant in the reference, an input named in `exclude` (column -> why), or every column of a population
    below `bands.min_rows`, is measured but its band is `skipped` and note says why: it does not count in `verdict`."""
    exclude = exclude or {}
    few = min(len(scores), int(reference.get("rows") or len(scores)))
    too_few = (f"{few:,} rows: too few for PSI (monitoring.drift.min_rows {bands.min_rows})"
               if few < bands.min_rows else None)
    parts = []
    for kind, profile, frame in (("score", reference.get("scores") or {}, scores),
                                 ("feature", reference.get("features") or {}, inputs)):
        rows = compare(profile, frame, bands, threads).assign(kind=kind)
        rows["note"] = [too_few or (exclude.get(f) if kind == "feature" else None) or constant_reason(profile[f], bands)
                        for f in rows["feature"]]
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True) if any(len(p) for p in parts) else parts[0]
    weights = feature_weights(reference)
    rows["weight"] = np.where(rows["kind"] == "feature", rows["feature"].map(weights), np.nan).astype("float64")
    rows.loc[rows["note"].notna(), "band"] = SKIPPED
    return rows.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Verdict:
    band: str  # the model's: its score's band, raised to "warn" at most by its weighted inputs
    score_band: str
    score_psi: float  # the worst counted score column's PSI (0 when none is counted)
    score_column: str | None
    input_psi: float  # the importance-weighted PSI of the counted inputs: sum of weight x PSI
    input_band: str


def verdict(rows: pd.DataFrame, bands: Bands = DEFAULT_BANDS) -> Verdict:
    """A model's drift band from its `measure` rows. The score is what is published and acted on, so it leads:
    a drifted score gives the model its band; drifted inputs under a stable score are worth a look (warn) but
    not an alarm, and an input counts by its weight, so a big shift of an input the model hardly uses stays
    stable. Skipped columns count for nothing."""
    counted = rows[rows["band"] != SKIPPED]
    scores, inputs = counted[counted["kind"] == "score"], counted[counted["kind"] == "feature"]
    worst = scores.loc[scores["psi"].idxmax()] if len(scores) else None
    score_psi = float(worst["psi"]) if worst is not None else 0.0
    weight = inputs["weight"] if "weight" in inputs else pd.Series(1.0 / max(len(inputs), 1), index=inputs.index)
    input_psi = float((weight.fillna(0.0) * inputs["psi"]).sum())
    score_band, input_band = bands.band(score_psi), bands.band(input_psi)
    band = max(score_band, min(input_band, "warn", key=RANK.get), key=RANK.get)
    return Verdict(band, score_band, score_psi, None if worst is None else str(worst["feature"]), input_psi,
                   input_band)


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
