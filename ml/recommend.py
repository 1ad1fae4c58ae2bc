"""Next-best product: a propensity per product, top-N products not yet held per customer, with scores.

Products come from holdings (raw.accounts, time split) and/or from outcome labels that are an acquisition
(customer holdout); warehouse/recommend.py builds the frames. The propensity of a product is the
probability that a customer who does not hold it acquires it within `window_days`. It comes from ONE XGBoost
model per kind of source, fitted on one row per (customer, product not held) with the product as a
categorical feature, rather than from a model per product: products with few acquisitions then borrow what
the others show (income, age, tenure act on most products alike). On generated banks of 5,000 customers
this beat the popularity baseline on MAP@5 (0.64 vs 0.56-0.58) where per-product models did not (0.55-0.58),
and it stayed ahead of them at 20,000 and 100,000 customers. Products with fewer than `min_positives`
acquisitions fall back to their popularity (acquisition rate of the customers not holding them), on the same
scale, so the two mix in one ranking. Customers without any history (no account yet at the state date) get
the popularity ranking of the customers who were new in the training window. Held products are never
recommended.

Evaluation (`evaluate`) is out of time for holdings: the models learn from the state at snapshot - W and
the acquisitions up to the snapshot, and are judged on the state at the snapshot and the acquisitions in the
W days after it. Ranking metrics are computed over the customers with at least one acquisition in the
evaluation window (customers without any carry no ranking information) and compared with the popularity
baseline (the same ranking from acquisition rates alone):
- precision@k = hits in the top k / k (also when fewer than k products are left to recommend); its ceiling
  is mean(min(k, acquired) / k), far below 1 when customers acquire about one product per window, so
  precision_at_k_of_ceiling (precision / ceiling) and map_at_k_lift (MAP / baseline MAP) are reported too;
- recall@k = hits in the top k / products acquired;
- MAP@k = mean over customers of AP@k = sum over hit ranks r of precision@r / min(k, acquired);
- coverage = share of the catalogue recommended to at least one customer (all customers' top N);
- diversity = distinct categories / products in a customer's list, averaged over lists of 2 or more.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import brier_score_loss, roc_auc_score

from ml.errors import NotEnoughData
from ml.frame import FeatureSpec, gain_shares
from ml.params import RecommendParams
from ml.registry import load_artifacts, save_artifacts
from ml.split import holdout_mask
from warehouse.recommend import RecommendInputs

MODEL = "recommendations"
HOLDINGS, LABEL = "holdings", "label"
OUTPUT_COLUMNS = ["customer_id", "rank", "product_id", "product_name", "score", "source"]


PRODUCT = "_product"  # the feature that names the product a row is about


def _codes(spec: FeatureSpec, frame: pd.DataFrame) -> np.ndarray:
    """The model matrix as float32 with category codes (missing: NaN), plus an empty product column: what
    XGBoost sees of a pandas categorical frame, built once and copied per product."""
    m = spec.matrix(frame)
    out = np.full((len(frame), len(spec.names) + 1), np.nan, dtype=np.float32)
    for i, col in enumerate(spec.names):
        s = m[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy()
            out[:, i] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, i] = s.to_numpy(dtype=np.float32, na_value=np.nan)
    return out


@dataclass
class Propensity:
    """One XGBoost model for a group of products (the holdings, or the label products): one row per customer
    and product not held, the product as a categorical feature, so products with few acquisitions borrow
    what the others show (income, age, tenure act on most products alike)."""

    kind: str
    spec: FeatureSpec
    products: list[str]  # the products it scores, in the order of their codes in PRODUCT
    booster: xgb.Booster | None = None

    @property
    def names(self) -> list[str]:
        return [*self.spec.names, PRODUCT]

    @property
    def types(self) -> list[str]:
        return ["q"] * len(self.spec.numeric) + ["c"] * (len(self.spec.categorical) + 1)

    def predict(self, X: np.ndarray, code: int, rows: np.ndarray) -> np.ndarray:
        Xk = X[rows]
        Xk[:, -1] = code
        return self.booster.inplace_predict(Xk)

    def fit(self, X: np.ndarray, eligible: np.ndarray, y: np.ndarray, p: RecommendParams) -> None:
        """X: one row per customer (_codes); eligible, y: (customers, products) masks and outcomes."""
        r, k = np.nonzero(eligible)
        Xp = X[r]
        Xp[:, -1] = k
        params = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
                  "max_depth": p.max_depth, "eta": p.learning_rate, "subsample": p.subsample,
                  "colsample_bytree": p.colsample_bytree, "min_child_weight": p.min_child_weight,
                  "lambda": p.reg_lambda, "max_cat_to_onehot": 1, "seed": p.seed,
                  # one thread: on 2 shared cores a 2-thread fit of 2M rows took 60 s against 38 s (its threads
                  # wait for each other at every tree level); scoring parallelises across products instead
                  "nthread": 1}
        dm = xgb.DMatrix(Xp, label=y[r, k], feature_names=self.names, feature_types=self.types,
                         enable_categorical=True)
        self.booster = xgb.train(params, dm, num_boost_round=p.n_estimators)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.spec.to_dict(), "products": self.products}


@dataclass
class RecommenderModel:
    params: RecommendParams
    catalogue: pd.DataFrame  # product_id, product_name, category, column, kind (holdings | label)
    popularity: np.ndarray  # per catalogue product: acquisition rate of customers with history
    popularity_new: np.ndarray  # per catalogue product: acquisition rate of customers new in the window
    models: dict[str, Propensity] = field(default_factory=dict)  # kind -> its products' model
    metrics: dict = field(default_factory=dict)

    @property
    def product_ids(self) -> list[str]:
        return list(self.catalogue["product_id"])

    @property
    def features(self) -> list[str]:
        return list(dict.fromkeys(name for m in self.models.values() for name in m.names))

    def importance(self) -> dict[str, float]:
        """Each input's share of total gain, summed over the propensity models (the product column, which says
        which product a row is about, left out)."""
        out: dict[str, float] = {}
        for prop in self.models.values():
            for name, share in (gain_shares(prop.booster) if prop.booster is not None else {}).items():
                if name != PRODUCT:
                    out[name] = out.get(name, 0.0) + share
        return out

    def save(self, models_dir: str | Path, version: int) -> Path:
        return save_recommender(self, models_dir, version)

    @classmethod
    def load(cls, folder: str | Path) -> RecommenderModel:
        return load_recommender(folder)

    def score(self, inputs: RecommendInputs) -> pd.DataFrame:
        """Every customer's top `params.top_n` recommendations."""
        return self.recommend(inputs)

    def modelled(self, product_id: str) -> bool:
        return any(product_id in m.products for m in self.models.values())

    def _kind(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.catalogue["kind"].to_numpy() == kind)

    def scores(self, inputs: RecommendInputs, customers: pd.Series | None = None, baseline: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(customer ids, scores, held, from a model): one row per customer, one column per catalogue product.

        Customers are `customers`, else everyone in the state and label frames. `baseline`: popularity only."""
        frames = [(kind, f) for kind, f in ((HOLDINGS, inputs.current), (LABEL, inputs.label_features))
                  if f is not None]
        if customers is None:  # everyone, in the order of the frames (the warehouse sorts them by id)
            parts = [f["customer_id"].astype(str) for _, f in frames]
            customers = parts[0] if len(parts) == 1 else pd.Series(pd.unique(pd.concat(parts)), dtype=object)
        ids = pd.Index(customers.astype(str).to_numpy(dtype=object))
        n, p = len(ids), len(self.catalogue)
        score = np.broadcast_to(self.popularity_new, (n, p)).copy()  # nothing known: cold start
        held = np.zeros((n, p), dtype=bool)
        model = np.zeros((n, p), dtype=bool)
        for kind, frame in frames:
            cols = self._kind(kind)
            if not len(cols):
                continue
            own = frame["customer_id"].astype(str)
            at = np.arange(n) if ids.equals(pd.Index(own)) else ids.get_indexer(own)
            if (at < 0).any():
                frame, at = frame.loc[at >= 0], at[at >= 0]
            known = frame["history"].to_numpy(dtype=bool) if kind == HOLDINGS else np.ones(len(frame), dtype=bool)
            if kind == HOLDINGS:
                flags = frame[[f"held_{c}" for c in self.catalogue["column"].iloc[cols]]].to_numpy()
                held[np.ix_(at, cols)] = flags == 1
            score[np.ix_(at[known], cols)] = self.popularity[cols]
            if not baseline and kind in self.models and known.any():
                self._predict(self.models[kind], frame if known.all() else frame.loc[known], at[known], score,
                              held, model)
        return ids.to_numpy(), score, held, model

    def _predict(self, prop: Propensity, frame: pd.DataFrame, rows: np.ndarray, score, held, model) -> None:
        X = _codes(prop.spec, frame)
        where = {pid: j for j, pid in enumerate(self.product_ids)}
        jobs = [(where[pid], code, ~held[rows, where[pid]]) for code, pid in enumerate(prop.products)]
        probs = _parallel([lambda c=code, e=elig: prop.predict(X, c, e) for _, code, elig in jobs],
                          self.params.n_jobs)
        for (j, _, elig), prob in zip(jobs, probs, strict=True):
            score[rows[elig], j] = prob
            model[rows[elig], j] = True

    def recommend(self, inputs: RecommendInputs, n: int | None = None, customers: pd.Series | None = None,
                  baseline: bool = False) -> pd.DataFrame:
        """customer_id, rank, product_id, product_name, score, source (model | popularity): each customer's
        min(n, products not held) best products by score, rank 1 first. Vectorised over customers."""
        ids, score, held, model = self.scores(inputs, customers, baseline)
        return top_n(ids, score, held, model, self.catalogue, n or self.params.top_n)


def top_n(ids: np.ndarray, score: np.ndarray, held: np.ndarray, model: np.ndarray, catalogue: pd.DataFrame,
          n: int) -> pd.DataFrame:
    """The n best products not held per row of `score` (ties: catalogue order), as long rows."""
    k = min(n, score.shape[1])
    if len(ids) == 0 or k == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
    order = np.argsort(np.where(held, np.inf, -score), axis=1, kind="stable")[:, :k]
    keep = ~np.take_along_axis(held, order, axis=1).ravel()  # held products sort last: a prefix is kept
    prod = order.ravel()[keep]
    pids = catalogue["product_id"].to_numpy(dtype=object)
    names = catalogue["product_name"].to_numpy(dtype=object)
    return pd.DataFrame({
        "customer_id": np.repeat(np.asarray(ids, dtype=object), k)[keep],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int16), len(ids))[keep],
        "product_id": pids[prod],
        "product_name": names[prod],
        "score": np.take_along_axis(score, order, axis=1).ravel()[keep],
        "source": np.array(["popularity", "model"], dtype=object)[
            np.take_along_axis(model, order, axis=1).ravel()[keep].astype(np.int8)],
    })


# ------------------------------------------------------------------------------------------------ metrics
def ranking_metrics(recs: pd.DataFrame, relevant: pd.DataFrame, k: int = 5) -> dict:
    """precision@k, recall@k, MAP@k and hit rate over the customers of `relevant` (customer_id, product_id
    pairs: what each customer acquired); customers without recommendations count as all misses.
    Also the ceilings a perfect ranking would reach given how many products each customer acquired."""
    rel = relevant[["customer_id", "product_id"]].drop_duplicates()
    n_rel = rel.groupby("customer_id").size()
    if n_rel.empty:
        return {f"precision_at_{k}": None, f"recall_at_{k}": None, f"map_at_{k}": None, f"hit_rate_at_{k}": None,
                f"precision_at_{k}_ceiling": None, "eval_customers": 0, "acquisitions_per_customer": None}
    top = recs.loc[(recs["rank"] <= k) & recs["customer_id"].isin(n_rel.index), ["customer_id", "rank", "product_id"]]
    hits = top.merge(rel.assign(_hit=1), on=["customer_id", "product_id"], how="left")
    hits = hits.assign(_hit=hits["_hit"].fillna(0)).sort_values(["customer_id", "rank"])
    hits["_cum"] = hits.groupby("customer_id")["_hit"].cumsum()
    hits["_prec"] = hits["_hit"] * hits["_cum"] / hits["rank"]
    per = hits.groupby("customer_id").agg(h=("_hit", "sum"), ap=("_prec", "sum")).reindex(n_rel.index, fill_value=0)
    m = n_rel.to_numpy(dtype=float)
    h, ap = per["h"].to_numpy(dtype=float), per["ap"].to_numpy(dtype=float)
    return {
        f"precision_at_{k}": float(np.mean(h / k)),
        f"recall_at_{k}": float(np.mean(h / m)),
        f"map_at_{k}": float(np.mean(ap / np.minimum(m, k))),
        f"hit_rate_at_{k}": float(np.mean(h > 0)),
        f"precision_at_{k}_ceiling": float(np.mean(np.minimum(m, k) / k)),
        "eval_customers": int(len(m)),
        "acquisitions_per_customer": float(m.mean()),
    }


def coverage(recs: pd.DataFrame, catalogue: pd.DataFrame) -> float | None:
    """Share of the catalogue's products recommended to at least one customer."""
    if len(catalogue) == 0:
        return None
    return float(catalogue["product_id"].isin(recs["product_id"].unique()).mean())


def diversity(recs: pd.DataFrame, catalogue: pd.DataFrame) -> float | None:
    """Intra-list diversity: distinct categories / products in a list, averaged over lists of 2 or more
    (a product without a category is a category of its own)."""
    cat = catalogue.set_index("product_id")["category"]
    cat = cat.where(cat.notna(), "product:" + cat.index.to_series())
    lists = recs.assign(_cat=recs["product_id"].map(cat)).groupby("customer_id").agg(
        n=("product_id", "size"), d=("_cat", "nunique"))
    lists = lists[lists["n"] >= 2]
    return float((lists["d"] / lists["n"]).mean()) if len(lists) else None


def _auc_brier(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    if len(y) == 0:
        return None, None
    brier = float(brier_score_loss(y, p))
    return (float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None), brier


def _relevant(model: RecommenderModel, inputs: RecommendInputs, hold: pd.Index | None) -> pd.DataFrame:
    """(customer_id, product_id) acquisitions in the evaluation period: holdings acquired after the
    snapshot, label products with outcome 1 (holdout customers only)."""
    parts = []
    cat = model.catalogue
    if inputs.current is not None and _observed_days(inputs) > 0:
        hp = model._kind(HOLDINGS)
        acq = inputs.current[[f"acq_{c}" for c in cat["column"].iloc[hp]]].to_numpy(dtype=bool)
        r, j = np.nonzero(acq)
        parts.append(pd.DataFrame({"customer_id": inputs.current["customer_id"].to_numpy(dtype=object)[r],
                                   "product_id": cat["product_id"].to_numpy(dtype=object)[hp][j]}))
    lp = model._kind(LABEL)
    if len(lp) and inputs.label_targets is not None:
        t = inputs.label_targets
        t = t[t["customer_id"].isin(hold)] if hold is not None else t
        for pid in cat["product_id"].iloc[lp]:
            parts.append(pd.DataFrame({"customer_id": t.loc[t[pid] == 1, "customer_id"].to_numpy(dtype=object),
                                       "product_id": pid}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["customer_id", "product_id"])


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def _observed_days(inputs: RecommendInputs) -> int:
    if inputs.observed_until is None:
        return 0
    return max(0, min(inputs.window_days, (inputs.observed_until - inputs.snapshot).days))


def _judged(inputs: RecommendInputs, most: int | None) -> RecommendInputs:
    """`inputs` with at most about `most` customers in its evaluation state (those with the lowest hash of their
    id: a challenger and the champion are judged on the same ones), the label products' frames untouched."""
    current = inputs.current
    if most is None or current is None or len(current) <= most:
        return inputs
    return replace(inputs, current=current[holdout_mask(current["customer_id"], most / len(current), salt="recommend_eval")])


def evaluate(model: RecommenderModel, inputs: RecommendInputs) -> dict:
    """Metrics of `model` against the popularity baseline on the evaluation period (see the module doc)."""
    p, k = model.params, model.params.eval_k
    inputs = _judged(inputs, p.max_eval_customers)
    hold = None
    if len(model._kind(LABEL)) and inputs.label_features is not None:
        ids = inputs.label_features["customer_id"]
        hold = pd.Index(ids[holdout_mask(ids, p.holdout_share)].astype(str))
    ids, score, held, from_model = model.scores(inputs)
    recs = top_n(ids, score, held, from_model, model.catalogue, p.top_n)
    base_ids, base_score, base_held, base_model = model.scores(inputs, baseline=True)
    base = top_n(base_ids, base_score, base_held, base_model, model.catalogue, p.top_n)
    relevant = _relevant(model, inputs, hold)
    if hold is not None:  # with label products, every ranking is judged on the customers their model left out
        relevant = relevant[relevant["customer_id"].isin(hold)]
    out = {**ranking_metrics(recs, relevant, k), "coverage": coverage(recs, model.catalogue),
           "diversity": diversity(recs, model.catalogue)}
    b = ranking_metrics(base, relevant, k)
    out.update({f"baseline_{m}": b[m] for m in (f"precision_at_{k}", f"recall_at_{k}", f"map_at_{k}",
                                                f"hit_rate_at_{k}")})
    out[f"map_at_{k}_lift"] = _ratio(out[f"map_at_{k}"], b[f"map_at_{k}"])  # model / popularity baseline
    out[f"precision_at_{k}_of_ceiling"] = _ratio(out[f"precision_at_{k}"], out[f"precision_at_{k}_ceiling"])
    out["baseline_coverage"] = coverage(base, model.catalogue)
    out["baseline_diversity"] = diversity(base, model.catalogue)
    out["eval_window_days"] = _observed_days(inputs) if inputs.current is not None else None
    out["customers_scored"] = int(len(ids))
    out["catalogue_products"] = int(len(model.catalogue))

    per, aucs, briers = {}, [], []
    index = pd.Index(ids)
    for j, row in model.catalogue.iterrows():
        pid = row["product_id"]
        info = dict(model.metrics.get("per_product", {}).get(pid, {}))
        if row["kind"] == HOLDINGS and inputs.current is not None and _observed_days(inputs) > 0:
            c = inputs.current
            rows = c["history"].to_numpy(dtype=bool) & (c[f"held_{row['column']}"].to_numpy() == 0)
            y = c.loc[rows, f"acq_{row['column']}"].to_numpy(dtype=int)
            at = index.get_indexer(c.loc[rows, "customer_id"].astype(str))
        elif row["kind"] == LABEL and hold is not None:
            t = inputs.label_targets[inputs.label_targets["customer_id"].isin(hold)]
            y = t[pid].to_numpy(dtype=int)
            at = index.get_indexer(t["customer_id"].astype(str))
        else:
            y, at = np.zeros(0, dtype=int), np.zeros(0, dtype=np.int64)
        info.update({"eval_rows": int(len(y)), "eval_positives": int(y.sum())})
        if model.modelled(pid) and len(y):
            auc, brier = _auc_brier(y, score[at, j])
            info.update({"auc": auc, "brier": brier})
            if auc is not None:
                aucs.append(auc)
                briers.append(brier)
        per[pid] = info
    out["auc"] = float(np.mean(aucs)) if aucs else None
    out["brier"] = float(np.mean(briers)) if briers else None
    out["products_with_model"] = int(sum(len(m.products) for m in model.models.values()))
    out["per_product"] = per
    out["notes"] = list(inputs.notes)
    return out


# ------------------------------------------------------------------------------------------------ training
def _parallel(tasks: list, n_jobs: int) -> list:
    """Run independent XGBoost calls side by side, each on one thread (XGBoost releases the GIL). Scoring
    predicts product by product this way: one call on several threads synchronises them for every block
    of rows, which stalls when the cores are shared with other work."""
    if n_jobs <= 1 or len(tasks) <= 1:
        return [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(lambda t: t(), tasks))


def _rate(y: np.ndarray) -> float:
    return float(y.mean()) if len(y) else 0.0


def _sample(ids: pd.Series, pairs: np.ndarray, max_rows: int) -> np.ndarray:
    """Customers to fit on: all, or a fixed share (by a hash of the id: the same ones run after run) so that
    their (customer, product) rows stay under max_rows."""
    total = int(pairs.sum())
    if total <= max_rows:
        return np.ones(len(ids), dtype=bool)
    return holdout_mask(ids, max_rows / total, salt="recommend_fit")


def _train_holdings(inputs: RecommendInputs, cat: pd.DataFrame, cols: np.ndarray, p: RecommendParams,
                    model: RecommenderModel, per: dict) -> None:
    train = inputs.train
    hist = train["history"].to_numpy(dtype=bool)
    new = ~hist
    use_new = new.sum() >= p.min_new_customers
    free = train[[f"held_{c}" for c in cat["column"].iloc[cols]]].to_numpy() == 0
    y = train[[f"acq_{c}" for c in cat["column"].iloc[cols]]].to_numpy(dtype=np.int8)
    keep = []
    for k, j in enumerate(cols):
        pid = cat["product_id"].iloc[j]
        elig = hist & free[:, k]
        model.popularity[j] = _rate(y[elig, k])
        model.popularity_new[j] = _rate(y[new, k]) if use_new else model.popularity[j]
        pos = int(y[elig, k].sum())
        per[pid] = {"kind": HOLDINGS, "train_rows": int(elig.sum()), "train_positives": pos,
                    "popularity": float(model.popularity[j])}
        if p.min_positives <= pos < elig.sum():
            keep.append(k)
    if not keep:
        return
    feats = train.loc[hist].drop(columns=[c for c in train.columns if c.startswith("acq_")] + ["history"])
    prop = Propensity(HOLDINGS, FeatureSpec.infer(feats, exclude=set(p.exclude)),
                      [cat["product_id"].iloc[cols[k]] for k in keep])
    sample = _sample(train.loc[hist, "customer_id"], free[hist][:, keep], p.max_train_rows)
    prop.fit(_codes(prop.spec, feats.loc[sample]), free[hist][sample][:, keep], y[hist][sample][:, keep], p)
    model.models[HOLDINGS] = prop


def _train_labels(inputs: RecommendInputs, cat: pd.DataFrame, cols: np.ndarray, p: RecommendParams,
                  model: RecommenderModel, per: dict) -> None:
    feats = inputs.label_features
    fit = ~holdout_mask(feats["customer_id"], p.holdout_share)
    pids = list(cat["product_id"].iloc[cols])
    y = inputs.label_targets[pids].to_numpy(dtype=np.int8)[fit]
    keep = []
    for k, j in enumerate(cols):
        model.popularity[j] = model.popularity_new[j] = _rate(y[:, k])
        pos = int(y[:, k].sum())
        per[pids[k]] = {"kind": LABEL, "train_rows": int(len(y)), "train_positives": pos,
                        "popularity": float(model.popularity[j])}
        if p.min_positives <= pos < len(y):
            keep.append(k)
    if not keep:
        return
    prop = Propensity(LABEL, FeatureSpec.infer(feats, exclude=set(p.exclude)), [pids[k] for k in keep])
    sample = _sample(feats.loc[fit, "customer_id"], np.ones((int(fit.sum()), len(keep)), bool), p.max_train_rows)
    prop.fit(_codes(prop.spec, feats.loc[fit].loc[sample]), np.ones((int(sample.sum()), len(keep)), bool),
             y[sample][:, keep], p)
    model.models[LABEL] = prop


def train_recommender(inputs: RecommendInputs, params: RecommendParams | None = None) -> RecommenderModel:
    """Fit the propensity model(s), fall back to popularity for products with too few acquisitions, and
    evaluate (see `evaluate`)."""
    p = params or RecommendParams()
    cat = inputs.catalogue[~inputs.catalogue["product_id"].isin(p.exclude_products)].reset_index(drop=True)
    holding_cols = set(inputs.current.columns) if inputs.current is not None else set()
    cat["kind"] = np.where([f"held_{c}" in holding_cols for c in cat["column"]], HOLDINGS, LABEL)
    if len(cat) == 0:
        raise NotEnoughData("no products to recommend: no holdings in raw.accounts and no label products")
    model = RecommenderModel(p, cat, np.zeros(len(cat)), np.zeros(len(cat)))
    per: dict[str, dict] = {}
    hp, lp = model._kind(HOLDINGS), model._kind(LABEL)
    if len(hp) and inputs.train is not None:
        _train_holdings(inputs, cat, hp, p, model, per)
    if len(lp) and inputs.label_features is not None:
        _train_labels(inputs, cat, lp, p, model, per)
    for pid, info in per.items():
        info["source"] = "model" if model.modelled(pid) else "popularity"
    model.metrics = {"per_product": per}
    model.metrics = evaluate(model, inputs)
    if not model.metrics.get("eval_customers"):
        raise NotEnoughData("no product taken up after the snapshot: no window to judge the recommendations on "
                            "(snapshot.holdout_days)")
    return model


# ------------------------------------------------------------------------------------------------ artifacts
def save_recommender(model: RecommenderModel, models_dir: str | Path, version: int) -> Path:
    """<models_dir>/recommendations/v<version>/: booster_<kind>.json per propensity model (XGBoost
    save_model) and model.joblib with the rest."""
    return save_artifacts(models_dir, MODEL, version, {
        "params": model.params.model_dump(), "catalogue": model.catalogue, "popularity": model.popularity,
        "popularity_new": model.popularity_new, "models": [m.to_dict() for m in model.models.values()],
        "metrics": model.metrics}, {kind: prop.booster for kind, prop in model.models.items()})


def load_recommender(folder: str | Path) -> RecommenderModel:
    rest, boosters = load_artifacts(folder)
    models = {}
    for d in rest["models"]:
        booster = boosters[d["kind"]]
        booster.set_param({"nthread": 1})  # one thread per call: scoring runs products side by side
        models[d["kind"]] = Propensity(d["kind"], FeatureSpec.from_dict(d["spec"]), list(d["products"]), booster)
    return RecommenderModel(RecommendParams.from_config(rest["params"]), rest["catalogue"], rest["popularity"],
                            rest["popularity_new"], models, rest["metrics"])
