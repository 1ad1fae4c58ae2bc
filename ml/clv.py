"""Customer lifetime value: BG/NBD purchase counts x Gamma-Gamma spend, discounted over a horizon.

Models (fitted by maximum likelihood on the per-customer summary of `warehouse.clv.clv_summary`):
- BG/NBD, Fader, Hardie & Lee (2005), "Counting your customers the easy way": while alive a customer buys
  at rate lambda ~ Gamma(r, alpha) and after each repeat purchase drops out with probability p ~ Beta(a, b).
- Gamma-Gamma, Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves": the mean value of a
  customer's repeat purchases has a Gamma(p, nu) spread with nu ~ Gamma(q, gamma) across customers.

Why our own code and not a library. `lifetimes` 0.11.3 still imports and fits with numpy 2 / pandas 2.3 /
scipy 1.17 and reproduces the paper, but is unmaintained since 2020 and fits through autograd (30 s for
~1M customers here). `btyd` (0.1b3, 2022) is a dormant beta fork of it. `pymc-marketing` is maintained but
brings pymc, pytensor (a C compiler at run time) and arviz for what is, here, a 4-parameter MLE. The
closed-form log-likelihoods are a few lines each, so they are implemented here with analytic gradients, on
log-parameters (all are positive, no constraints left but wide bounds), minimised with scipy's L-BFGS-B
(quasi-Newton with the exact gradient: ~30-100 evaluations where Nelder-Mead needs hundreds). Customers with
the same (x, t_x, T) are collapsed into one weighted row, and the gamma functions are evaluated once per
distinct x: a million customers fit in ~1 s (BG/NBD) + ~2 s (Gamma-Gamma); `fit_sample` caps it further.

Conditional expectations use the Euler transform of the paper's hypergeometric term,
(1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose parameters stay
small for heavy buyers: scipy's hyp2f1 on the paper's form overflows for x in the hundreds (daily bank
debits), the transformed one agrees with mpmath to ~1e-8 for r up to ~100. Where it fails (r in the
thousands: a fit that finds no heterogeneity in purchase rates) the result falls outside the bounds the
expectation must lie in and is recomputed by quadrature over the dropout probability (within 2e-4 of
mpmath). Both depend only on (x, T), computed once per distinct pair: scoring runs at >1M customers/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaincinv, digamma, expit, gammaln, hyp2f1, roots_legendre
from scipy.stats import spearmanr

from ml.errors import NotEnoughData
from ml.params import CLVParams
from ml.registry import load_artifacts, save_artifacts

DAYS_PER_MONTH = 365.25 / 12
_BOUND = (-12.0, 12.0)  # log-parameter bounds: e^+-12 covers any plausible scale and keeps exp() finite


# ---------------------------------------------------------------------------------------------- fitting


def _arrays(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (summary["frequency"].to_numpy(float), summary["recency"].to_numpy(float), summary["T"].to_numpy(float))


def _sample(summary: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(summary) <= n:
        return summary
    return summary.iloc[np.sort(np.random.default_rng(seed).choice(len(summary), n, replace=False))]


def _dot(w: np.ndarray, v: np.ndarray) -> float:
    # einsum, not `@`: a threaded BLAS dot of 1-D arrays is ~100x slower on a busy 2-core machine
    return float(np.einsum("i,i->", w, v))


class _Distinct:
    """A column as its distinct values and, per row, the index of its value: the likelihoods evaluate the
    expensive functions (gammaln, digamma, log) once per distinct x, t_x or T, then gather."""

    def __init__(self, values: np.ndarray):
        self.u, self.i = np.unique(values, return_inverse=True)

    def reduce(self, keep: np.ndarray, weights: np.ndarray) -> None:
        """Keep the rows `keep` only (one per distinct history) and count the customers per distinct value."""
        self.i = self.i[keep]
        self.w = np.bincount(self.i, weights=weights, minlength=len(self.u))


@dataclass
class _BGData:
    x: np.ndarray  # one row per distinct (x, t_x, T) history ...
    w: np.ndarray  # ... and how many customers have it
    dx: _Distinct
    dtx: _Distinct
    dT: _Distinct

    @classmethod
    def of(cls, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> _BGData:
        dx, dtx, dT = _Distinct(x), _Distinct(tx), _Distinct(T)
        key = (dx.i.astype(np.int64) * len(dtx.u) + dtx.i) * len(dT.u) + dT.i  # < 2^63 for any real summary
        _, keep, counts = np.unique(key, return_index=True, return_counts=True)
        w = counts.astype(float)
        for d in (dx, dtx, dT):
            d.reduce(keep, w)
        return cls(x[keep], w, dx, dtx, dT)


def bgnbd_loglik(log_params: np.ndarray, d: _BGData) -> tuple[float, np.ndarray]:
    """Sum of the BG/NBD log-likelihood (FHL 2005, eq. 6) and its gradient in log-parameters.

    LL = A(x) + log(exp(a3) + [x > 0] exp(a4)) with A the gamma-function terms, a3 = -(r+x) log(alpha+T)
    (still alive at T) and a4 = log(a/(b+x-1)) - (r+x) log(alpha+t_x) (dropped out after the last purchase)."""
    r, alpha, a, b = np.exp(log_params)
    ux, wx = d.dx.u, d.dx.w
    A = (gammaln(r + ux) - gammaln(r) + r * np.log(alpha) + gammaln(a + b) + gammaln(b + ux) - gammaln(b)
         - gammaln(a + b + ux))
    rep_u = ux > 0
    log_b1 = np.log(np.where(rep_u, b + ux - 1, 1.0))
    inv_b1 = np.where(rep_u, np.exp(-log_b1), 0.0)
    log_T, log_tx = np.log(alpha + d.dT.u)[d.dT.i], np.log(alpha + d.dtx.u)[d.dtx.i]
    rx = r + d.x
    a3 = -rx * log_T
    a4 = np.where(d.x > 0, np.log(a) - log_b1[d.dx.i] - rx * log_tx, -np.inf)
    m = np.logaddexp(a3, a4)
    s = np.exp(a4 - m)  # weight of the "dropped out after t_x" branch
    ws, w1s = d.w * s, d.w * (1 - s)
    g_r = _dot(wx, digamma(r + ux) - digamma(r) + np.log(alpha)) - _dot(w1s, log_T) - _dot(ws, log_tx)
    g_alpha = (wx.sum() * r / alpha - _dot(w1s, rx / (alpha + d.dT.u)[d.dT.i])
               - _dot(ws, rx / (alpha + d.dtx.u)[d.dtx.i]))
    g_a = _dot(wx, digamma(a + b) - digamma(a + b + ux)) + ws.sum() / a
    g_b = _dot(wx, digamma(a + b) + digamma(b + ux) - digamma(b) - digamma(a + b + ux)) - _dot(ws, inv_b1[d.dx.i])
    return _dot(wx, A) + _dot(d.w, m), np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])


@dataclass
class _GGData:
    x: np.ndarray  # per customer with repeat purchases (mean values are continuous: nothing to collapse)
    m: np.ndarray
    dx: _Distinct
    x_log_m: float  # sums of the terms that do not depend on the parameters
    log_m: float

    @classmethod
    def of(cls, x: np.ndarray, m: np.ndarray) -> _GGData:
        dx = _Distinct(x)
        dx.w = np.bincount(dx.i, minlength=len(dx.u)).astype(float)
        log_m = np.log(m)
        return cls(x, m, dx, _dot(x, log_m), float(log_m.sum()))


def gamma_gamma_loglik(log_params: np.ndarray, d: _GGData) -> tuple[float, np.ndarray]:
    """Sum of the Gamma-Gamma log-likelihood of the mean repeat value m given x (FHL 2005b) and its gradient:
    log f = lgamma(px+q) - lgamma(px) - lgamma(q) + q log v + (px-1) log m + px log x - (px+q) log(v + m x)."""
    p, q, v = np.exp(log_params)
    ux, wx = d.dx.u, d.dx.w
    px = p * ux
    vmx = v + d.m * d.x
    lvm = np.log(vmx)
    x_lvm, sum_lvm = _dot(d.x, lvm), float(lvm.sum())
    ll = (_dot(wx, gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + px * np.log(ux))
          + p * d.x_log_m - d.log_m - p * x_lvm - q * sum_lvm)
    g_p = _dot(wx, ux * (digamma(px + q) - digamma(px) + np.log(ux))) + d.x_log_m - x_lvm
    g_q = _dot(wx, digamma(px + q) - digamma(q) + np.log(v)) - sum_lvm
    g_v = len(d.x) * q / v - _dot(p * d.x + q, 1 / vmx)
    return float(ll), np.array([g_p * p, g_q * q, g_v * v])


def _maximise(loglik, start: np.ndarray, data, n: float, bounds: list[tuple[float, float]]):
    """L-BFGS-B on the mean negative log-likelihood (scaled by the customer count so the tolerances mean the
    same at 2,000 and at 1M customers). Returns the result and whether it converged: L-BFGS-B's own flag, or
    a projected gradient ~0 (a line search that stops for lack of float precision at an optimum on a bound
    is flagged ABNORMAL though the optimum is found)."""
    def neg(theta):
        ll, g = loglik(theta, data)
        return -ll / n, -g / n

    res = minimize(neg, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8})
    lo, hi = np.array(bounds).T
    pg = np.where(((res.x <= lo + 1e-6) & (res.jac > 0)) | ((res.x >= hi - 1e-6) & (res.jac < 0)), 0.0, res.jac)
    return res, bool(res.success or np.max(np.abs(pg)) < 1e-5)


def _at_bound(theta: np.ndarray, bounds: list[tuple[float, float]]) -> bool:
    return bool(any(t <= lo + 1e-6 or t >= hi - 1e-6 for t, (lo, hi) in zip(theta, bounds, strict=True)))


def fit_bgnbd(summary: pd.DataFrame, fit_sample: int | None = None, seed: int = 7) -> dict:
    """Maximum-likelihood BG/NBD parameters {r, alpha, a, b} (alpha in the summary's time unit), with the
    log-likelihood, the customers it was fitted on, whether the optimiser converged and whether a parameter
    sits on its bound (e.g. a -> 0: nobody seems to drop out; r, alpha -> inf: everybody buys at one rate)."""
    s = _sample(summary, fit_sample, seed)
    if s.empty:
        raise NotEnoughData("BG/NBD needs customers with a purchase in the calibration window; the summary is empty")
    d = _BGData.of(*_arrays(s))
    bounds = [_BOUND] * 4
    res, converged = _maximise(bgnbd_loglik, np.zeros(4), d, d.w.sum(), bounds)
    r, alpha, a, b = np.exp(res.x)
    return {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b), "loglik": float(-res.fun * d.w.sum()),
            "fit_customers": int(d.w.sum()), "converged": converged, "at_bound": _at_bound(res.x, bounds)}


def fit_gamma_gamma(summary: pd.DataFrame, fit_sample: int | None = None, seed: int = 7) -> dict:
    """Maximum-likelihood Gamma-Gamma parameters {p, q, v} on the customers with repeat purchases of positive
    mean value. q is kept above 1 so that the population mean value v p / (q - 1) exists. Also reports the
    correlation of frequency and monetary value, which the model assumes to be about 0."""
    s = _sample(summary, fit_sample, seed)
    s = s[(s["frequency"] > 0) & (s["monetary"] > 0)]
    if len(s) < 10:
        raise NotEnoughData(f"Gamma-Gamma needs customers with repeat purchases of positive value; {len(s)} have one")
    x, m = s["frequency"].to_numpy(float), s["monetary"].to_numpy(float)
    d = _GGData.of(x, m)
    bounds = [_BOUND, (np.log(1 + 1e-6), _BOUND[1]), _BOUND]
    res, converged = _maximise(gamma_gamma_loglik, np.log([1.0, 2.0, float(np.mean(m))]), d, len(x), bounds)
    p, q, v = np.exp(res.x)
    return {"p": float(p), "q": float(q), "v": float(v), "loglik": float(-res.fun * len(x)),
            "fit_customers": len(x), "converged": converged, "at_bound": _at_bound(res.x, bounds),
            "frequency_monetary_corr": float(np.corrcoef(x, m)[0, 1])}


# ------------------------------------------------------------------------------------------ predictions


def p_alive(bg: dict, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(still active at T | x, t_x, T) (FHL 2005, eq. 11); 1 for customers without repeat purchases."""
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    x = np.asarray(x, float)
    rep = x > 0
    log_odds = np.log(a) - np.log(np.where(rep, b + x - 1, 1.0)) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    return np.where(rep, expit(-log_odds), 1.0)


def _alive_closed_form(bg: dict, t: float, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E[X(T, T+t] | alive at T, x, T] from FHL 2005 eq. 10, through the Euler transform (module docstring)."""
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    if abs(a - 1) < 1e-9:  # (a+b+x-1)/(a-1) * (1 - ...) is 0/0 at a = 1; the limit is continuous
        a = 1 + 1e-9
    z = t / (alpha + T + t)
    with np.errstate(all="ignore"):
        return (a + b + x - 1) / (a - 1) * (1 - (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z))


def _alive_quadrature(bg: dict, t: float, x: np.ndarray, T: np.ndarray, nodes: int = 64) -> np.ndarray:
    """The same expectation by integrating over the dropout probability p ~ Beta(a, b+x) in quantile space:
    E[(1 - ((alpha+T) / (alpha+T+p t))^(r+x)) / p], the integrand bounded and smooth in p. Slower than the
    closed form (one betaincinv per distinct x and node) but valid where scipy's hyp2f1 is not, e.g. for
    r in the thousands (purchase rates that barely vary between customers)."""
    r, alpha, a, b = bg["r"], bg["alpha"], bg["a"], bg["b"]
    u, w = roots_legendre(nodes)
    v, w = (u + 1) / 2, w / 2
    ux, ix = np.unique(x, return_inverse=True)
    p = betaincinv(a, b + ux[:, None], v[None, :])[ix]  # (customers, nodes)
    s, beta = (r + x)[:, None], (alpha + T)[:, None]
    with np.errstate(all="ignore"):
        g = np.where(p > 0, -np.expm1(-s * np.log1p(p * t / beta)) / p, s * t / beta)
    return g @ w


def _alive(bg: dict, t: float, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E[X(T, T+t] | alive at T, x, T]: the closed form, checked against the bounds the expectation must lie in
    (a customer alive at T buys at most as one who never drops out, at least as one who drops out after the
    next purchase); rows outside them (scipy's hyp2f1 failing) are computed by quadrature instead."""
    if t <= 0:
        return np.zeros(len(x))
    r, alpha = bg["r"], bg["alpha"]
    alive = _alive_closed_form(bg, t, x, T)
    hi = (r + x) * t / (alpha + T)
    lo = -np.expm1(-(r + x) * np.log1p(t / (alpha + T)))
    bad = ~(np.isfinite(alive) & (alive <= hi * (1 + 1e-6) + 1e-12) & (alive >= lo * (1 - 1e-6) - 1e-12))
    if bad.any():
        alive[bad] = _alive_quadrature(bg, t, x[bad], T[bad])
    return alive


def _histories(x: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (x, T) pairs and each row's pair: the if-alive expectation depends on nothing else, and a
    million customers have far fewer distinct pairs (T counts days since the first purchase)."""
    ux, ix = np.unique(x, return_inverse=True)
    uT, iT = np.unique(T, return_inverse=True)
    _, first, inverse = np.unique(ix.astype(np.int64) * len(uT) + iT, return_index=True, return_inverse=True)
    return x[first], T[first], inverse


def expected_purchases(bg: dict, t: float, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E[X(T, T+t] | x, t_x, T]: expected purchases in the next t time units (FHL 2005, eq. 10), as
    P(alive) x expected purchases if alive."""
    x, tx, T = np.asarray(x, float), np.asarray(tx, float), np.asarray(T, float)
    hx, hT, inverse = _histories(x, T)
    return _alive(bg, t, hx, hT)[inverse] * p_alive(bg, x, tx, T)


def expected_purchases_new(bg: dict, t: np.ndarray | float) -> np.ndarray:
    """E[X(t)]: expected repeat purchases in the first t time units after a first purchase (FHL 2005, eq. 9),
    for a customer nothing else is known about (that is the if-alive expectation at x = 0, T = 0)."""
    t = np.atleast_1d(np.asarray(t, float))
    ut, inverse = np.unique(t, return_inverse=True)
    return np.array([_alive(bg, v, np.zeros(1), np.zeros(1))[0] for v in ut])[inverse]


def expected_avg_value(gg: dict, x: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """E[M | p, q, v, m_x, x]: the customer's expected value per purchase, a weighted mean of the population
    mean v p / (q - 1) and the customer's own repeat mean m_x (FHL 2005b, eq. 5)."""
    p, q, v = gg["p"], gg["q"], gg["v"]
    x = np.asarray(x, float)
    m = np.where(x > 0, np.maximum(np.asarray(monetary, float), 0.0), 0.0)  # no negative spend
    return (v + m * x) * p / (p * x + q - 1)


def clv(bg: dict, gg: dict, summary: pd.DataFrame, params: CLVParams) -> tuple[np.ndarray, np.ndarray]:
    """Discounted expected profit over `horizon_months`: for each month, the incremental expected purchases
    x expected value per purchase x margin, discounted at the monthly equivalent of annual_discount_rate
    (end of month). Returns (clv, expected purchases over the whole horizon)."""
    x, tx, T = _arrays(summary)
    hx, hT, inverse = _histories(x, T)
    month = DAYS_PER_MONTH / params.time_unit_days
    discounted, prev = np.zeros(len(hx)), np.zeros(len(hx))
    for i in range(1, params.horizon_months + 1):
        cum = _alive(bg, i * month, hx, hT)
        discounted += (cum - prev) / (1 + params.annual_discount_rate) ** (i / 12)
        prev = cum
    alive = p_alive(bg, x, tx, T)
    value = expected_avg_value(gg, x, summary["monetary"].to_numpy(float)) * params.margin
    return discounted[inverse] * alive * value, prev[inverse] * alive


def tier(values: np.ndarray, tiers: tuple[tuple[str, float | None], ...]) -> np.ndarray:
    """Tier names by rank of `values` (highest first): the first tier takes the top share of customers, the
    next the following share, and the last one the rest. Equal values are split in input order, so the
    shares hold exactly (to rounding) whatever the ties."""
    names = np.array([n for n, _ in tiers], dtype=object)
    shares = np.array([s if s is not None else 0.0 for _, s in tiers[:-1]], float)
    if (shares < 0).any() or shares.sum() > 1 + 1e-9:
        raise ValueError(f"tier shares must be >= 0 and add up to at most 1: {tiers}")
    n = len(values)
    cuts = np.rint(np.cumsum(shares) * n).astype(int)
    rank = np.empty(n, int)
    rank[np.argsort(-np.asarray(values, float), kind="stable")] = np.arange(n)
    return names[np.searchsorted(cuts, rank, side="right")]


# ------------------------------------------------------------------------------------------- the model


@dataclass
class CLVModel:
    bgnbd: dict
    gamma_gamma: dict
    params: CLVParams
    metrics: dict = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return []  # fitted on each customer's transactions, not on features.customer_features

    def importance(self) -> dict[str, float]:
        return {}

    def save(self, models_dir: str | Path, version: int) -> Path:
        return save_clv(self, models_dir, version)

    @classmethod
    def load(cls, folder: str | Path) -> CLVModel:
        return load_clv(folder)

    def score(self, summary: pd.DataFrame) -> pd.DataFrame:
        """One row per customer of a summary (as of the scoring date): expected purchases over the horizon,
        P(alive), expected value per purchase, CLV and its tier."""
        x, tx, T = _arrays(summary)
        value, horizon = clv(self.bgnbd, self.gamma_gamma, summary, self.params)
        return pd.DataFrame({
            "customer_id": summary["customer_id"].to_numpy(),
            "expected_purchases_horizon": horizon,
            "p_alive": p_alive(self.bgnbd, x, tx, T),
            "expected_avg_value": expected_avg_value(self.gamma_gamma, x, summary["monetary"].to_numpy(float)),
            "clv": value,
            "clv_tier": tier(value, self.params.tiers),
        })


def _relative(pred: float, actual: float) -> tuple[float | None, float | None]:
    """Signed and absolute relative error; None (valid JSON for the registry, unlike NaN) when actual is 0."""
    if not actual:
        return None, None
    e = pred / actual - 1
    return e, abs(e)


def holdout_metrics(bg: dict, gg: dict, summary: pd.DataFrame) -> dict:
    """Predictions for the holdout window of a summary built with holdout_end, against what happened: the
    aggregate repeat purchases (conditional on each customer's history) and their value, per customer MAE."""
    x, tx, T = _arrays(summary)
    t = float(summary["holdout_t"].iloc[0])
    pred = expected_purchases(bg, t, x, tx, T)
    actual = summary["holdout_x"].to_numpy(float)
    out = {"holdout_t": t, "holdout_pred": float(pred.sum()), "holdout_actual": float(actual.sum()),
           "holdout_mae": float(np.mean(np.abs(pred - actual)))}
    out["holdout_error"], out["holdout_abs_error"] = _relative(out["holdout_pred"], out["holdout_actual"])
    out["holdout_value_pred"] = float(_dot(pred, expected_avg_value(gg, x, summary["monetary"].to_numpy(float))))
    out["holdout_value_actual"] = float(summary["holdout_value"].sum())
    out["holdout_value_error"], out["holdout_value_abs_error"] = _relative(out["holdout_value_pred"],
                                                                           out["holdout_value_actual"])
    return out


def train_clv(summary: pd.DataFrame, params: CLVParams | None = None) -> CLVModel:
    """Fit BG/NBD and Gamma-Gamma on a calibration summary; when it has holdout columns (clv_summary with
    holdout_end), measure the aggregate holdout errors too."""
    p = params or CLVParams()
    bg = fit_bgnbd(summary, p.fit_sample, p.seed)
    gg = fit_gamma_gamma(summary, p.fit_sample, p.seed)
    metrics = {
        "bgnbd_params": {k: bg[k] for k in ("r", "alpha", "a", "b")},
        "gg_params": {k: gg[k] for k in ("p", "q", "v")},
        "customers": int(len(summary)),
        "repeat_customers": int((summary["frequency"] > 0).sum()),
        "bgnbd_loglik": bg["loglik"], "gg_loglik": gg["loglik"],
        "converged": bg["converged"] and gg["converged"],
        "bgnbd_at_bound": bg["at_bound"], "gg_at_bound": gg["at_bound"],
        "frequency_monetary_corr": gg["frequency_monetary_corr"],
    }
    if "holdout_x" in summary.columns and len(summary):
        metrics.update(holdout_metrics(bg, gg, summary))
    return CLVModel(bg, gg, p, metrics)


def _value_metrics(pred: np.ndarray, actual: np.ndarray) -> dict:
    top = np.argsort(-pred, kind="stable")[: max(1, len(pred) // 10)]
    total = float(actual.sum())
    return {"value_error": _relative(float(pred.sum()), total)[0], "value_mae": float(np.mean(np.abs(pred - actual))),
            "spearman": float(spearmanr(pred, actual).statistic),
            "top_decile_capture": float(actual[top].sum() / total) if total else None}


def compare_with_supervised(model: CLVModel, summary: pd.DataFrame, features: pd.DataFrame | None = None,
                            holdout_share: float = 0.2, n_estimators: int = 300, seed: int = 7) -> dict:
    """A supervised challenger on the same holdout window: XGBoost (Tweedie loss: many zeros, long tail)
    regressing each customer's holdout_value on the calibration summary (+ `features`, one row per customer
    as of calibration_end, e.g. features.customer_features), trained on the customers outside a customer
    holdout (ml.split.holdout_mask, salt "clv") and compared there with BG/NBD x Gamma-Gamma's expected
    holdout value. The challenger learns from the very window it is judged on (other customers), which the
    probabilistic model never sees: its edge here is an upper bound. Returns metrics for both models."""
    import xgboost as xgb  # only for this comparison

    from ml.frame import FeatureSpec
    from ml.split import holdout_mask

    frame = summary[["customer_id", "frequency", "recency", "T", "monetary"]].rename(
        columns={c: f"clv_{c}" for c in ("frequency", "recency", "T", "monetary")})
    if features is not None:
        frame = frame.merge(features, on="customer_id", how="left")
    spec = FeatureSpec.infer(frame)
    X, y = spec.matrix(frame), summary["holdout_value"].to_numpy(float)
    hold = holdout_mask(summary["customer_id"], holdout_share, salt="clv")
    reg = xgb.XGBRegressor(n_estimators=n_estimators, max_depth=4, learning_rate=0.05, subsample=0.8,
                           colsample_bytree=0.8, objective="reg:tweedie", tweedie_variance_power=1.5,
                           tree_method="hist", enable_categorical=True, random_state=seed, n_jobs=0)
    reg.fit(X[~hold], y[~hold])
    x, tx, T = _arrays(summary)
    probabilistic = (expected_purchases(model.bgnbd, float(summary["holdout_t"].iloc[0]), x, tx, T)
                     * expected_avg_value(model.gamma_gamma, x, summary["monetary"].to_numpy(float)))
    return {"holdout_customers": int(hold.sum()), "features": len(spec.names),
            "bgnbd_gg": _value_metrics(probabilistic[hold], y[hold]),
            "xgboost": _value_metrics(reg.predict(X[hold]), y[hold])}


def save_clv(model: CLVModel, models_dir: str | Path, version: int) -> Path:
    """<models_dir>/clv/v<version>/model.joblib (plain dicts and the params: no pickled code). Returns the folder."""
    return save_artifacts(models_dir, "clv", version, {
        "bgnbd": model.bgnbd, "gamma_gamma": model.gamma_gamma, "params": model.params.model_dump(),
        "metrics": model.metrics})


def load_clv(folder: str | Path) -> CLVModel:
    rest, _ = load_artifacts(folder)
    return CLVModel(rest["bgnbd"], rest["gamma_gamma"], CLVParams.from_config(rest["params"]), rest["metrics"])
