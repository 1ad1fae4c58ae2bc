"""Customer segments: K-Means on scaled behaviour features (k chosen by silhouette), named from each cluster's
profile, plus the classic RFM grid. Pure functions on DataFrames, like ml/churn.py.

Features. `SegmentParams.features` lists the preferred behaviour columns in order of preference. A column is
used when it is in the frame, numeric, non-null for at least `min_non_null` of the training customers, and
not (nearly) constant: its most common value covers at most `max_top_share` of them. When fewer than
`min_features` preferred columns qualify (a bank that sends only customer attributes, e.g. churn_modelling or
German credit), the numeric `attr_*` columns of the bank's customer file are added, subject to the same tests.
Then, in that order, a column is dropped when its transformed values correlate above `max_corr` (|Pearson|)
with a column already kept: the same quantity sent twice (balance_now and attr_balance) would otherwise
count twice in the distances. `exclude` removes columns by name (e.g. bank_marketing's macro-economic
indicators, which describe the month of the call, not the customer).

Preprocessing, fitted on the training customers and kept in the model (`Transform`): missing values become
the column's median; a skewed column (|skewness| > `skew_threshold`) whose skewness the transform reduces
is replaced by a signed log, sign(x) * log1p(|x| / s), with s the median of its non-zero |x| (scale-free,
linear near 0 so overdrafts and small balances are not torn apart); then each column is centred on its
median, divided by its robust spread (IQR / 1.349, the standard deviation when the IQR is 0) and clipped to
+-`clip_z`.

K-Means and k. Customers are split by `ml.split.holdout_mask(customer_id, holdout_share, salt="holdout")`.
K-Means (k-means++, `n_init` starts, fixed seed) is fitted on the other customers (a hash-chosen sample of
`fit_sample` of them at scale, sorted by customer_id so row order does not matter); each k in k_min..k_max is
scored by the silhouette on a hash-chosen sample of `silhouette_sample` training customers and the best k is
kept. The reported `silhouette` is measured on the holdout customers (a hash-chosen sample of about
`silhouette_sample` of them at scale), so a challenger and the champion are compared on the same customers. Clusters are
numbered by size, largest first (ties: by centroid), so the same data gives the same ids and names.

Naming rules (`_name_clusters`). For each cluster and feature the effect size
d = (mean in cluster - mean overall) / std overall is computed on the scaled values (a z-score of the
cluster's centre against the population). A feature is a trait of the cluster when |d| >= `name_min_effect`
(0.5: a medium effect). A lexicon (`LEXICON`, matched on the column name, first match wins; unknown
`attr_*` columns read as "high-<name>"/"low-<name>") gives each feature a concept and the word for its high
and low side, e.g. age low -> "young", income high -> "affluent", recency high -> "dormant", products high ->
"multi-product", tenure low -> "new", balance low -> "low-balance"; some high sides are nouns:
spend -> "spenders", balance -> "savers", tenure -> "loyalists", loans/debt -> "borrowers".
 1. The noun is the word of the strongest trait that has a noun (else "customers"); with no trait at all
    the cluster is "mainstream customers".
 2. Up to `name_words` adjectives follow from the next strongest traits, one per concept, and are written
    in a fixed concept order (tenure, age, activity, ... see CONCEPT_ORDER): "young digital spenders",
    "affluent savers", "dormant low-balance customers", "new customers", "multi-product loyalists".
 3. Names are unique within a model: clusters that share a name get their next trait word added, one at a
    time, while that separates them; any still equal get " (2)", " (3)", ... in segment-id order.
Each cluster also gets a one-line description for the UI: its three most distinctive features with the
cluster median against the population median, e.g. "age 29 vs 46; balance_now 45.3k vs 7.09k".

Threads. Training runs with `threads` BLAS/OpenMP threads (default 1). K-Means' OpenMP loops spin while they
wait, and on a 2-core machine shared with other work (other assets, XGBoost) 2 threads trained 4x slower than
one (churn_modelling: 16.7 s against 3.9 s, same result); `threads: null` uses every core on an idle machine.
Scoring is plain numpy (nearest centre by one matrix product per chunk): ~0.4-0.5 M customers/s on 2 cores.

RFM segments (`rfm_segments`): the classic R x F grid on the 1-5 scores rfm_r and rfm_f, plus "Lost" and
"No activity"; see RFM_GRID. The quintiles are relative: when most customers were seen in the last days (a tie),
some recent customers land in the low R quintiles. The grid's names are about behaviour, so a customer active
within `active_days` of the snapshot has R at least 4 (RECENT_R), never an inactive segment.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from ml.errors import NotEnoughData
from ml.frame import robust_scale
from ml.params import SegmentParams
from ml.registry import load_artifacts, save_artifacts
from ml.split import holdout_mask, unit_hash

MODEL_NAME = "segments"
NO_ACTIVITY = "No activity"


# --- sampling --------------------------------------------------------------------------------------------

def _take(u: np.ndarray, rows: np.ndarray, limit: int) -> np.ndarray:
    """`rows` (bool) narrowed to a hash sample of about `limit` of them (all of them when fewer)."""
    n = int(rows.sum())
    return rows if n <= limit else rows & (u < limit / n)


@dataclass
class Split:
    holdout: np.ndarray          # bool: the holdout customers
    fit: np.ndarray              # positions K-Means is fitted on (training customers, sorted by customer_id)
    select: np.ndarray           # positions the silhouette of each k is measured on (training customers)
    evaluate: np.ndarray         # positions the reported silhouette is measured on (holdout customers)


def split(features: pd.DataFrame, params: SegmentParams) -> Split:
    ids = features["customer_id"].astype(str).to_numpy()
    hold = holdout_mask(features["customer_id"], params.holdout_share, salt="holdout")
    u = unit_hash(ids, "segments")

    def positions(mask: np.ndarray) -> np.ndarray:
        pos = np.flatnonzero(mask)
        return pos[np.argsort(ids[pos], kind="stable")]

    return Split(hold, positions(_take(u, ~hold, params.fit_sample)),
                 positions(_take(u, ~hold, params.silhouette_sample)),
                 positions(_take(u, hold, params.silhouette_sample)))


# --- preprocessing ---------------------------------------------------------------------------------------

def _numbers(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """The columns as a float64 matrix (missing columns and values: NaN)."""
    out = np.full((len(frame), len(cols)), np.nan)
    for j, c in enumerate(cols):
        if c in frame:
            s = frame[c]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                out[:, j] = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return out


def _skew(x: np.ndarray) -> float:
    d = x - x.mean()
    m2 = np.mean(d * d)
    return float(np.mean(d ** 3) / m2 ** 1.5) if m2 > 0 else 0.0


def _signed_log(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x) / s)


@dataclass
class Transform:
    """Impute -> signed log (some columns) -> robust scale -> clip. Fitted once, applied to any frame."""
    columns: list[str]
    medians: np.ndarray          # raw medians (imputation)
    log_scale: np.ndarray        # s of the signed log per column; NaN: no log
    center: np.ndarray
    scale: np.ndarray
    clip_z: float

    @classmethod
    def fit(cls, raw: np.ndarray, columns: list[str], p: SegmentParams) -> Transform:
        medians = np.nanmedian(raw, axis=0)
        x = np.where(np.isnan(raw), medians, raw)
        log_scale = np.full(len(columns), np.nan)
        for j in range(len(columns)):
            col = x[:, j]
            raw_skew = _skew(col)
            if abs(raw_skew) <= p.skew_threshold:
                continue
            nz = np.abs(col[col != 0])
            s = float(np.median(nz)) if len(nz) else 1.0
            if abs(_skew(_signed_log(col, s))) < abs(raw_skew):
                log_scale[j] = s
                x[:, j] = _signed_log(col, s)
        center, scale = robust_scale(x)
        return cls(list(columns), medians, log_scale, center, scale, p.clip_z)

    def apply_raw(self, raw: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(raw), self.medians, raw)
        logged = ~np.isnan(self.log_scale)
        if logged.any():
            x[:, logged] = _signed_log(x[:, logged], self.log_scale[logged])
        x -= self.center
        x /= self.scale
        return np.clip(x, -self.clip_z, self.clip_z, out=x)

    def apply(self, frame: pd.DataFrame) -> np.ndarray:
        return self.apply_raw(_numbers(frame, self.columns))

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(list(d["columns"]), *(np.asarray(d[k], float) for k in ("medians", "log_scale", "center",
                                                                            "scale")), float(d["clip_z"]))


def _usable(raw: np.ndarray, p: SegmentParams) -> bool:
    v = raw[~np.isnan(raw)]
    if len(v) < max(2, p.min_non_null * len(raw)):
        return False
    _, counts = np.unique(v, return_counts=True)
    return len(counts) > 1 and counts.max() <= p.max_top_share * len(v)


def choose_features(frame: pd.DataFrame, p: SegmentParams) -> tuple[list[str], dict[str, str]]:
    """The columns the clustering uses (see the module docstring) and why each candidate was left out."""
    skipped: dict[str, str] = {}
    excluded = set(p.exclude)

    def qualify(cols) -> list[str]:
        ok = []
        for c in cols:
            if c in excluded or c not in frame or c in ok:
                continue
            s = frame[c]
            if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                skipped[c] = "not numeric"
            elif not _usable(_numbers(frame, [c])[:, 0], p):
                skipped[c] = "too few values or (nearly) constant"
            else:
                ok.append(c)
        return ok

    cols = qualify(p.features)
    if len(cols) < p.min_features:
        cols += qualify(sorted(c for c in frame.columns if c.startswith("attr_") and c not in cols))
    if not cols:
        raise NotEnoughData("segments: no usable numeric feature (behaviour columns or attr_* numbers)")
    raw = _numbers(frame, cols)
    z = Transform.fit(raw, cols, p).apply_raw(raw)
    kept: list[int] = []
    for j, c in enumerate(cols):
        dup = None
        for i in kept:
            if z[:, j].std() > 0 and z[:, i].std() > 0 and abs(np.corrcoef(z[:, i], z[:, j])[0, 1]) > p.max_corr:
                dup = cols[i]
                break
        if dup:
            skipped[c] = f"duplicates {dup} (|r| > {p.max_corr})"
        else:
            kept.append(j)
    return [cols[j] for j in kept], skipped


# --- assignment ------------------------------------------------------------------------------------------

def assign(z: np.ndarray, centers: np.ndarray, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (Euclidean) and the distance to it, in chunks (bounded memory)."""
    labels = np.empty(len(z), np.int32)
    dist = np.empty(len(z), np.float64)
    c2 = (centers * centers).sum(axis=1)
    for a in range(0, len(z), chunk):
        zz = z[a:a + chunk]
        d2 = (zz * zz).sum(axis=1)[:, None] - 2.0 * zz @ centers.T + c2
        lab = d2.argmin(axis=1)
        labels[a:a + chunk] = lab
        dist[a:a + chunk] = np.sqrt(np.maximum(d2[np.arange(len(zz)), lab], 0.0))
    return labels, dist


def silhouette(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean silhouette (Euclidean) and the per-row values; NaN when fewer than two clusters."""
    return silhouettes(z, [labels])[0]


def silhouettes(z: np.ndarray, labelings: list[np.ndarray], chunk_bytes: int = 16 << 20
                ) -> list[tuple[float, np.ndarray]]:
    """`silhouette` of each labeling of the same rows, the pairwise distances computed once for all of them.

    sklearn's silhouette_samples (the values these equal, tests/test_ml_segments.py) computes every distance again
    for each labeling: choosing k among k_min..k_max measured the same 10,000 x 10,000 distances once per k. Here
    each chunk of rows' distances (float64, the diagonal zeroed, as sklearn does) is summed per cluster of every
    labeling in one product with their cluster-membership matrix."""
    z = np.asarray(z, dtype=np.float64)
    n, out = len(z), [None] * len(labelings)
    rows = np.arange(n)
    measured, width = [], 0  # (position in labelings, cluster code per row, rows per cluster, first column)
    for i, labels in enumerate(labelings):
        values, code = np.unique(labels, return_inverse=True)
        if len(values) < 2 or n < 3:
            out[i] = (float("nan"), np.full(n, np.nan))
            continue
        measured.append((i, code, np.bincount(code).astype(np.float64), width))
        width += len(values)
    if not measured:
        return out
    member = np.zeros((n, width))
    for _, code, _, off in measured:
        member[rows, off + code] = 1.0
    sums = np.empty((n, width))
    sq = np.einsum("ij,ij->i", z, z)
    step = max(1, chunk_bytes // (8 * n))
    for a in range(0, n, step):
        b = min(n, a + step)
        d = z[a:b] @ z.T  # the one chunk-sized array: everything after it in place
        d *= -2.0
        d += sq[a:b, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d[np.arange(b - a), np.arange(a, b)] = 0.0
        sums[a:b] = d @ member
    for i, code, count, off in measured:
        own = sums[rows, off + code]
        k = len(count)
        mean_to = sums[:, off:off + k] / count  # mean distance to each cluster's rows
        size = count[code]
        intra = np.where(size > 1, own / np.maximum(size - 1, 1), 0.0)
        mean_to[rows, code] = np.inf
        inter = mean_to.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (inter - intra) / np.maximum(intra, inter)
        s = np.nan_to_num(np.where(size > 1, s, 0.0))  # a cluster of one: 0, as sklearn defines it
        out[i] = (float(np.mean(s)), s)
    return out


# --- RFM grid --------------------------------------------------------------------------------------------

# The classic RFM segment grid on the recency (R) and frequency (F) scores, 1-5: the R x F map published as
# a regex table in the Miuul "CRM Analytics" course and the many Kaggle notebooks built on it
# ([1-2][1-2] hibernating, [1-2][3-4] at risk, [1-2]5 can't lose, 3[1-2] about to sleep, 33 need attention,
# [3-4][4-5] loyal customers, 41 promising, 51 new customers, [4-5][2-3] potential loyalists, 5[4-5] champions).
# That map has no "Lost"; it is taken from Putler's RFM segment table ("RFM Analysis For Successful Customer
# Segmentation", putler.com: lowest recency, frequency and monetary scores), i.e. R = F = M = 1 (R = F = 1 when
# rfm_m is absent), carved out of Hibernating. Customers without any transaction up to the snapshot get
# "No activity" (their R and F scores are ties at the bottom, not behaviour).
RFM_GRID = np.array([  # rows R = 1..5, columns F = 1..5
    ["Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"],
    ["Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"],
    ["About to sleep", "About to sleep", "Need attention", "Loyal customers", "Loyal customers"],
    ["Promising", "Potential loyalists", "Potential loyalists", "Loyal customers", "Loyal customers"],
    ["New customers", "Potential loyalists", "Potential loyalists", "Champions", "Champions"],
], dtype=object)
RFM_SEGMENTS = ("Champions", "Loyal customers", "Potential loyalists", "New customers", "Promising",
                "Need attention", "About to sleep", "At risk", "Can't lose them", "Hibernating", "Lost",
                NO_ACTIVITY)


RECENT_R = 4  # the R row of a customer active within `active_days`: Promising .. Loyal customers, never asleep


def rfm_segments(frame: pd.DataFrame, active_days: int | None = None) -> np.ndarray:
    """The RFM segment of every row, vectorised. No activity: recency_days missing (no transaction ever;
    when the column is absent, frequency 0), or missing R/F scores. With `active_days`, a row whose
    recency_days is at most that has R at least RECENT_R, whatever its quintile."""
    n = len(frame)
    if "rfm_r" not in frame or "rfm_f" not in frame:
        return np.full(n, NO_ACTIVITY, dtype=object)
    r = _numbers(frame, ["rfm_r"])[:, 0]
    f = _numbers(frame, ["rfm_f"])[:, 0]
    none = np.isnan(r) | np.isnan(f)
    if "recency_days" in frame:
        none |= frame["recency_days"].isna().to_numpy()
    elif "frequency" in frame:
        none |= _numbers(frame, ["frequency"])[:, 0] == 0
    if active_days is not None and "recency_days" in frame:
        recent = _numbers(frame, ["recency_days"])[:, 0] <= active_days  # NaN (never active) compares False
        r = np.where(recent, np.fmax(r, RECENT_R), r)
    ri = np.clip(np.nan_to_num(r, nan=1), 1, 5).astype(np.int64) - 1
    fi = np.clip(np.nan_to_num(f, nan=1), 1, 5).astype(np.int64) - 1
    out = RFM_GRID.ravel()[ri * 5 + fi]
    lost = (ri == 0) & (fi == 0)
    if "rfm_m" in frame:
        lost &= _numbers(frame, ["rfm_m"])[:, 0] == 1
    out[lost] = "Lost"
    out[none] = NO_ACTIVITY
    return out


# --- naming ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Word:
    concept: str
    pattern: str
    high: str | None
    low: str | None
    high_noun: str | None = None


LEXICON = (
    Word("activity", r"recency", "dormant", "active"),
    Word("activity", r"is_active", "active", "inactive"),
    Word("activity", r"^frequency$|txn_count|active_months", "frequent", "occasional"),
    Word("trend", r"txn_trend|spend_trend", "accelerating", "slowing"),
    Word("balance_trend", r"balance_change", "accumulating", "depleting"),
    Word("spend", r"spend_to_income", "high-spending", "frugal", "spenders"),
    Word("spend", r"^monetary$|^spend_", "big-spending", "low-spend", "spenders"),
    Word("borrowing", r"loan|debt|credit_amount|credit_limit|existing_credits", "indebted", None, "borrowers"),
    Word("balance", r"balance|saving", "high-balance", "low-balance", "savers"),
    Word("income", r"income|salary", "affluent", "low-income"),
    Word("credit", r"credit_score", "prime", "subprime"),
    Word("tenure", r"tenure|days_since_first", "long-standing", "new", "loyalists"),
    Word("age", r"(^|_)age$", "senior", "young"),
    Word("products", r"products|accounts_open", "multi-product", "single-product"),
    Word("digital", r"online|mobile|digital|web|app$", "digital", None),
    Word("branch", r"branch", "branch-going", None),
    Word("cash", r"atm|cash", "cash-using", None),
    Word("card", r"cr_card|has_card", "card-holding", "cardless"),
    Word("family", r"dependents|children", "family", None),
    Word("complaints", r"complain", "complaining", None),
)
CONCEPT_ORDER = ("tenure", "age", "activity", "trend", "income", "credit", "balance", "balance_trend", "spend",
                 "products", "digital", "branch", "cash", "card", "family", "borrowing", "complaints")


def word_for(feature: str) -> Word:
    for w in LEXICON:
        if re.search(w.pattern, feature):
            return w
    slug = re.sub(r"^attr_", "", feature).replace("_", "-")
    return Word(feature, "", f"high-{slug}", f"low-{slug}")


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _traits(effects: np.ndarray, columns: list[str], min_effect: float) -> list[tuple[str, str, str | None]]:
    """(concept, adjective, noun or None) of the cluster's traits, strongest first, one per concept."""
    out, seen = [], set()
    for j in np.argsort(-np.abs(effects), kind="stable"):
        d = effects[j]
        if abs(d) < min_effect:
            break
        w = word_for(columns[j])
        word = w.high if d > 0 else w.low
        if word is None or w.concept in seen:
            continue
        seen.add(w.concept)
        out.append((w.concept, word, w.high_noun if d > 0 else None))
    return out


def _rank(concept: str) -> int:
    return CONCEPT_ORDER.index(concept) if concept in CONCEPT_ORDER else len(CONCEPT_ORDER)


def _compose(traits: list[tuple[str, str, str | None]], n_adj: int) -> tuple[str, int]:
    """The name from the traits (the first noun, up to n_adj adjectives) and how many adjectives are left."""
    if not traits:
        return "mainstream customers", 0
    noun = next((t for t in traits if t[2]), None)
    adjs = [t for t in traits if t is not noun]
    used = sorted(adjs[:n_adj], key=lambda t: _rank(t[0]))
    return " ".join([*(t[1] for t in used), noun[2] if noun else "customers"]), len(adjs) - len(used)


def _describe(raw: np.ndarray, rows: np.ndarray, top: list[str], columns: list[str]) -> str:
    """'age 29 vs 46; products_held mean 3.4 vs 2.7': cluster median vs everyone's (means when the medians
    are equal, as with small counts)."""
    parts = []
    for name in top:
        col = raw[:, columns.index(name)]
        inside, everyone = col[rows & ~np.isnan(col)], col[~np.isnan(col)]
        if not len(inside) or not len(everyone):
            continue
        a, b = np.median(inside), np.median(everyone)
        if _fmt(a) == _fmt(b):
            parts.append(f"{name} mean {_fmt(inside.mean())} vs {_fmt(everyone.mean())}")
        else:
            parts.append(f"{name} {_fmt(a)} vs {_fmt(b)}")
    return "; ".join(parts)


def _name_clusters(effects: np.ndarray, columns: list[str], p: SegmentParams) -> list[str]:
    traits = [_traits(e, columns, p.name_min_effect) for e in effects]
    n_adj = [p.name_words] * len(effects)
    names = [_compose(t, n)[0] for t, n in zip(traits, n_adj, strict=True)]
    for _ in range(len(columns)):  # widen colliding names one word at a time while that separates them
        groups: dict[str, list[int]] = {}
        for i, nm in enumerate(names):
            groups.setdefault(nm, []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        changed = False
        for g in clashes:
            for i in g:
                if _compose(traits[i], n_adj[i])[1] > 0:
                    n_adj[i] += 1
                    names[i] = _compose(traits[i], n_adj[i])[0]
                    changed = True
        if not changed:
            break
    seen: dict[str, int] = {}
    for i, nm in enumerate(names):
        seen[nm] = seen.get(nm, 0) + 1
        if seen[nm] > 1:
            names[i] = f"{nm} ({seen[nm]})"
    return names


# --- the model -------------------------------------------------------------------------------------------

@dataclass
class SegmentModel:
    transform: Transform
    centers: np.ndarray                    # k x features, in the scaled space, ordered by segment_id
    names: list[str]
    descriptions: list[str]
    params: SegmentParams
    profile: pd.DataFrame                  # one row per segment (see profile_table)
    metrics: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.transform.columns

    @property
    def k(self) -> int:
        return len(self.centers)

    def importance(self) -> dict[str, float]:
        """How far apart the segments' centres lie along each feature: their spread around the mean centre,
        weighted by segment size, in the scaled units all features share. The features that tell segments apart."""
        share = self.profile["share"].to_numpy(dtype=float)  # by segment_id, the order of the centres
        share = share / share.sum() if share.sum() > 0 else np.full(self.k, 1.0 / self.k)
        spread = np.sqrt(share @ (self.centers - share @ self.centers) ** 2)
        return dict(zip(self.features, spread.tolist(), strict=True))

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """segment_id and distance to its centroid (scaled units) per row."""
        return assign(self.transform.apply(frame), self.centers)

    def score(self, frame: pd.DataFrame, rfm_active_days: int | None = None) -> pd.DataFrame:
        labels, dist = self.predict(frame)
        return pd.DataFrame({
            "customer_id": frame["customer_id"].to_numpy(),
            "segment_id": labels,
            "segment_name": np.asarray(self.names, dtype=object)[labels],
            "rfm_segment": rfm_segments(frame, rfm_active_days),
            "centroid_distance": dist.astype(np.float32),
        })

    def save(self, models_dir: str | Path, version: int) -> Path:
        return save_segments(self, models_dir, version)

    @classmethod
    def load(cls, folder: str | Path) -> SegmentModel:
        return load_segments(folder)

    def profile_table(self) -> pd.DataFrame:
        """One row per segment: id, name, size, share, holdout silhouette, description, top features."""
        return self.profile.copy()

    def to_dict(self) -> dict:
        return {"transform": self.transform.to_dict(), "centers": self.centers.tolist(), "names": self.names,
                "descriptions": self.descriptions, "params": self.params.model_dump(),
                "profile": self.profile.to_dict(orient="list"), "metrics": self.metrics, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: dict) -> SegmentModel:
        return cls(Transform.from_dict(d["transform"]), np.asarray(d["centers"], float), list(d["names"]),
                   list(d["descriptions"]), SegmentParams.from_config(d["params"]), pd.DataFrame(d["profile"]),
                   d["metrics"], d["skipped"])


def holdout_silhouette(model: SegmentModel, features: pd.DataFrame, params: SegmentParams) -> dict:
    """A trained model's silhouette on the holdout customers `params` choose from `features` (as train_segments
    measures its own): how a champion does on the customers a challenger is judged on."""
    z = model.transform.apply(features.iloc[split(features, params).evaluate])
    return {"silhouette": silhouette(z, assign(z, model.centers)[0])[0]}


def _kmeans(z: np.ndarray, k: int, p: SegmentParams) -> KMeans:
    return KMeans(n_clusters=k, init="k-means++", n_init=p.n_init, max_iter=p.max_iter,
                  random_state=p.seed).fit(z)


def _order_by_size(centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cluster order: largest first, ties by centroid coordinates (deterministic)."""
    sizes = np.bincount(labels, minlength=len(centers))
    return np.lexsort((*centers.T[::-1], -sizes))  # the last key sorts first


def train_segments(features: pd.DataFrame, params: SegmentParams | None = None) -> SegmentModel:
    """Choose features, fit the transform and K-Means on the training customers (k in k_min..k_max by
    silhouette), name the clusters, and measure the silhouette on the holdout customers.

    `features` has one row per customer (customer_id + feature columns), e.g. features.customer_features."""
    p = params or SegmentParams()
    with threadpool_limits(p.threads) if p.threads else nullcontext():
        return _train(features, p)


def _train(features: pd.DataFrame, p: SegmentParams) -> SegmentModel:
    if p.k_min < 2 or p.k_max < p.k_min:
        raise ValueError(f"segments: need 2 <= k_min <= k_max, got {p.k_min}..{p.k_max}")
    sp = split(features, p)
    if len(sp.fit) < 2 * p.k_max or len(sp.evaluate) < 2 * p.k_max:
        raise NotEnoughData(f"segments: too few customers ({len(features)}) for {p.k_max} clusters and a holdout")
    train = features.iloc[sp.fit]
    columns, skipped = choose_features(train, p)
    raw_fit = _numbers(train, columns)
    transform = Transform.fit(raw_fit, columns, p)
    z_fit = transform.apply_raw(raw_fit)
    z_sel = transform.apply(features.iloc[sp.select])

    fitted = {k: _kmeans(z_fit, k, p) for k in range(p.k_min, p.k_max + 1)}
    measured = silhouettes(z_sel, [assign(z_sel, km.cluster_centers_)[0] for km in fitted.values()])
    by_k = {k: sil for k, (sil, _) in zip(fitted, measured, strict=True)}
    valid = {k: s for k, s in by_k.items() if np.isfinite(s)}
    best = max(valid, key=lambda k: (valid[k], -k)) if valid else p.k_min
    km = fitted[best]
    fit_labels = assign(z_fit, km.cluster_centers_)[0]
    order = _order_by_size(km.cluster_centers_, fit_labels)
    centers = km.cluster_centers_[order]
    fit_labels = assign(z_fit, centers)[0]

    # holdout silhouette, overall and per cluster
    z_eval = transform.apply(features.iloc[sp.evaluate])
    eval_labels = assign(z_eval, centers)[0]
    sil, sil_rows = silhouette(z_eval, eval_labels)

    # profiles: effect sizes on the scaled training values, medians in the data's own units
    mu, sd = z_fit.mean(axis=0), z_fit.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    effects = np.stack([(z_fit[fit_labels == c].mean(axis=0) - mu) / sd if (fit_labels == c).any()
                        else np.zeros(len(columns)) for c in range(best)])
    names = _name_clusters(effects, columns, p)
    descriptions, tops = [], []
    for c in range(best):
        top = list(np.argsort(-np.abs(effects[c]), kind="stable")[:3])
        tops.append(", ".join(f"{columns[j]} {'+' if effects[c, j] >= 0 else '-'}{abs(effects[c, j]):.2f}sd"
                              for j in top))
        descriptions.append(_describe(raw_fit, fit_labels == c, [columns[j] for j in top], columns))

    all_labels = assign(transform.apply(features), centers)[0]
    sizes = np.bincount(all_labels, minlength=best)
    profile = pd.DataFrame({
        "segment_id": np.arange(best), "segment_name": names, "size": sizes,
        "share": np.round(sizes / max(len(features), 1), 4),
        "holdout_silhouette": [round(float(np.mean(sil_rows[eval_labels == c])), 4) if (eval_labels == c).any()
                               else None for c in range(best)],
        "description": descriptions, "top_features": tops})
    model = SegmentModel(transform, centers, names, descriptions, p, profile, skipped=skipped)
    model.metrics = {
        "silhouette": sil,
        "k": int(best),
        "silhouette_by_k": {str(k): round(float(s), 6) for k, s in by_k.items()},
        "sizes": {nm: int(n) for nm, n in zip(names, sizes, strict=True)},
        "min_share": round(float(sizes.min() / max(len(features), 1)), 6),  # the smallest segment's share
        "inertia": float(km.inertia_),
        "inertia_per_customer": float(km.inertia_ / len(z_fit)),
        "features": columns,
        "fit_rows": int(len(sp.fit)),
        "holdout_rows": int(sp.holdout.sum()),
        "silhouette_rows": int(len(sp.evaluate)),
    }
    return model


def save_segments(model: SegmentModel, models_dir: Path, version: int) -> Path:
    """<models_dir>/segments/v<version>/model.joblib (plain arrays and lists: no pickled classes). Returns
    the folder."""
    return save_artifacts(models_dir, MODEL_NAME, version, model.to_dict())


def load_segments(folder: str | Path) -> SegmentModel:
    return SegmentModel.from_dict(load_artifacts(folder)[0])
