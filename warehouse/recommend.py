"""What the next-best-product recommender learns from, in DuckDB SQL: product holdings and acquisitions as of
a date, and outcome labels that are the acquisition of a product.

Two kinds of product source, both optional:
* holdings (raw.accounts joined to raw.products): `product_state(con, d, window_days, ...)` gives, per customer
  of features.customer_features, which products are held at date d and which were acquired (opened and not
  held at d) in (d, d + window_days]. The recommender trains on the state at snapshot - W with the
  acquisitions up to the snapshot, is evaluated on the state at the snapshot with the acquisitions after it
  (the pipeline's snapshot leaves an outcome window after it), and scores with the state at the snapshot.
  One aggregate over raw.accounts per date (2 maxima of 0/1 indicators per product): at 1M customers and
  2.8M accounts about 2 s of SQL and 1 s into pandas per date on 2 cores; one row per customer leaves it.
* label products: outcome labels in features.labels that ARE an acquisition (e.g. term_deposit in the UCI
  bank marketing set, which has no accounts), with features.customer_features as features.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import pandas as pd

from warehouse.db import has_rows
from warehouse.mapping import sql_str

STATE_DOCS = {
    "customer_id": "Customer key (every customer of features.customer_features).",
    "history": "True when the customer had an account opened on or before the state date (else: cold start).",
    "tenure_months": "Months from joined_date (else the first account opened) to the state date.",
    "products_held": "Distinct products held open at the state date.",
    "held_<p>": "1 when product <p> is held open at the state date.",
    "acq_<p>": "1 when product <p> was opened in (date, date + window] and was not held at the date.",
}


@dataclass
class RecommendInputs:
    """Everything a recommender trains, is evaluated and scores on, as of one snapshot."""

    snapshot: date
    window_days: int
    catalogue: pd.DataFrame  # product_id, product_name, category, column (slug used in held_/acq_ names)
    train: pd.DataFrame | None = None  # state at snapshot - W, acquisitions in (snapshot - W, snapshot]
    current: pd.DataFrame | None = None  # state at the snapshot, acquisitions in (snapshot, snapshot + W]
    observed_until: date | None = None  # last acquisition date seen: the evaluation window ends here at most
    label_features: pd.DataFrame | None = None  # features.customer_features (label products only)
    label_targets: pd.DataFrame | None = None  # customer_id + one 0/1 column per label product
    notes: list[str] = field(default_factory=list)


def _day(d: date) -> str:
    return f"DATE '{date.fromisoformat(str(d)).isoformat()}'"


def _slug(value: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(value)).strip("_").lower() or "blank"


def has_holdings(con: duckdb.DuckDBPyConnection) -> bool:
    return has_rows(con, "raw.accounts")


def snapshot_date(con: duckdb.DuckDBPyConnection) -> date | None:
    return con.execute("SELECT max(snapshot_date) FROM features.customer_features").fetchone()[0]


def catalogue(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The products customers can hold: raw.products, plus any product of raw.accounts the catalogue lacks
    (named by its id, category unknown). `column` is the product's slug in held_/acq_ column names (unique)."""
    frame = con.execute("""
        WITH held AS (SELECT DISTINCT product_id FROM raw.accounts WHERE product_id IS NOT NULL),
        listed AS (SELECT product_id, any_value(product_name) AS product_name, any_value(category) AS category
                   FROM raw.products WHERE product_id IS NOT NULL GROUP BY product_id)
        SELECT coalesce(l.product_id, h.product_id) AS product_id,
               coalesce(l.product_name, l.product_id, h.product_id) AS product_name,
               lower(l.category) AS category
        FROM listed l FULL JOIN held h USING (product_id) ORDER BY 1""").df()
    seen: set[str] = set()
    cols = []
    for pid in frame["product_id"]:
        slug, k = _slug(pid), 2
        while slug in seen:
            slug, k = f"{_slug(pid)}_{k}", k + 1
        seen.add(slug)
        cols.append(slug)
    frame["column"] = cols
    return frame


def static_columns(con: duckdb.DuckDBPyConnection, patterns: list[str] | tuple[str, ...],
                   exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Columns of features.customer_features matching the patterns (fnmatch, e.g. `attr_*`), minus exclude."""
    names = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' "
        "AND table_name = 'customer_features' ORDER BY ordinal_position").fetchall()]
    keep = [c for c in names if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    return [c for c in keep if c not in set(exclude) and c not in ("customer_id", "snapshot_date")]


def product_state(con: duckdb.DuckDBPyConnection, d: date, window_days: int, products: pd.DataFrame,
                  static: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per customer of features.customer_features: history, tenure_months and products_held at `d`,
    held_<p> (held open at d) and acq_<p> (opened in (d, d + window_days] and not held at d) for each product
    of `products` (a catalogue frame), plus the `static` columns of features.customer_features. Ordered by
    customer_id. Accounts without an opened_date count as opened long ago (as in features.holdings)."""
    s, w = _day(d), int(window_days)
    aggs, outer = [], []
    for pid, col in zip(products["product_id"], products["column"], strict=True):
        is_p = f"(product_id = {sql_str(pid)})::TINYINT"
        aggs.append(f"max({is_p} * h) AS held_{col}, max({is_p} * o) AS opened_{col}")
        outer.append(f"coalesce(a.held_{col}, 0)::TINYINT AS held_{col}, "
                     f"(coalesce(a.opened_{col}, 0) * (1 - coalesce(a.held_{col}, 0)))::TINYINT AS acq_{col}")
    # distinct products held = the sum of the flags (the catalogue holds every product of raw.accounts)
    held_sum = " + ".join(f"coalesce(a.held_{c}, 0)" for c in products["column"]) or "0"
    has_customers = has_rows(con, "raw.customers")
    joined = "c.joined_date" if has_customers else "NULL::DATE"
    customers = "LEFT JOIN raw.customers c USING (customer_id)" if has_customers else ""
    statics = "".join(f', f."{c}"' for c in static)
    agg_sql = "".join(f",\n {x}" for x in aggs)
    outer_sql = "".join(f",\n {x}" for x in outer)
    # 0/1 indicators computed once per account, aggregated as maxima of products (cheaper than FILTER/CASE)
    return con.execute(f"""
        WITH acc AS (
            SELECT customer_id, product_id, opened_date,
                   ((opened_date IS NULL OR opened_date <= {s}) AND (closed_date IS NULL OR closed_date > {s}))::TINYINT AS h,
                   (opened_date > {s} AND opened_date <= {s} + {w})::TINYINT AS o
            FROM raw.accounts WHERE customer_id IS NOT NULL AND product_id IS NOT NULL),
        a AS (
            SELECT customer_id, bool_or(opened_date IS NULL OR opened_date <= {s}) AS history,
                   min(opened_date) AS first_opened{agg_sql}
            FROM acc GROUP BY customer_id)
        SELECT f.customer_id, coalesce(a.history, false) AS history,
               date_diff('month', coalesce({joined}, a.first_opened), {s}) AS tenure_months,
               ({held_sum})::INTEGER AS products_held{outer_sql}{statics}
        FROM features.customer_features f LEFT JOIN a USING (customer_id) {customers}
        ORDER BY f.customer_id""").df()


def last_opened(con: duckdb.DuckDBPyConnection) -> date | None:
    return con.execute("SELECT max(opened_date) FROM raw.accounts").fetchone()[0]


def label_frame(con: duckdb.DuckDBPyConnection, labels: list[str] | tuple[str, ...]
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """features.customer_features and, aligned to it, one 0/1 column per label product (0 when a customer
    has no outcome for it), as in warehouse.features.training_frame but for several labels in one query."""
    pivot = "".join(f",\n max(CASE WHEN label = {sql_str(x)} THEN value END) AS _target_{i}"
                    for i, x in enumerate(labels))
    frame = con.execute(f"""
        WITH t AS (SELECT customer_id{pivot} FROM features.labels GROUP BY customer_id)
        SELECT f.*, t.* EXCLUDE (customer_id)
        FROM features.customer_features f LEFT JOIN t USING (customer_id) ORDER BY f.customer_id""").df()
    tcols = [f"_target_{i}" for i in range(len(labels))]
    targets = pd.DataFrame({"customer_id": frame["customer_id"]})
    for col, label in zip(tcols, labels, strict=True):
        targets[label] = frame[col].fillna(0).astype("int8")
    return frame.drop(columns=tcols), targets


def label_outcomes(con: duckdb.DuckDBPyConnection, labels: list[str] | tuple[str, ...]) -> dict[str, int]:
    """How many distinct outcome values each of `labels` has in features.labels (absent: not in the dict)."""
    if not labels:
        return {}
    return dict(con.execute("SELECT label, count(DISTINCT value) FROM features.labels "
                            "WHERE label IN (SELECT unnest(?)) GROUP BY label", [list(labels)]).fetchall())


def load_inputs(con: duckdb.DuckDBPyConnection, window_days: int = 90, label_products: tuple[str, ...] = (),
                static_patterns: tuple[str, ...] = ("age", "income", "credit_score", "gender", "region", "segment",
                                                    "attr_*"),
                exclude: tuple[str, ...] = (), training: bool = True) -> RecommendInputs:
    """Everything the recommender needs as of the features' snapshot date, in three queries at most
    (`training=False`: what scoring needs only, without the state at snapshot - W)."""
    snap = snapshot_date(con)
    if snap is None:
        raise ValueError("features.customer_features is empty: build the features first")
    inputs = RecommendInputs(snapshot=snap, window_days=window_days, catalogue=pd.DataFrame(
        columns=["product_id", "product_name", "category", "column"]))
    if has_holdings(con):
        cat = catalogue(con)
        static = static_columns(con, static_patterns, exclude)
        inputs.catalogue = cat
        if training:
            inputs.train = product_state(con, snap - timedelta(days=window_days), window_days, cat, static)
        inputs.current = product_state(con, snap, window_days, cat, static)
        inputs.observed_until = last_opened(con)
    outcomes = label_outcomes(con, label_products)  # a source without the label simply has no such product
    labels = [x for x in label_products if outcomes.get(x, 0) > 1]
    single = [x for x in label_products if outcomes.get(x) == 1]
    if single:
        inputs.notes.append(f"label products with one outcome only in features.labels, left out: {', '.join(single)}")
    clash = [x for x in labels if x in set(inputs.catalogue["product_id"])]
    if clash:  # one product, one source: its holdings history is the richer one
        inputs.notes.append(f"label products also held in raw.accounts, modelled from holdings: {', '.join(clash)}")
        labels = [x for x in labels if x not in clash]
    if labels:
        features, targets = label_frame(con, labels)
        inputs.label_features = features.drop(columns=[c for c in exclude if c in features.columns])
        inputs.label_targets = targets
        extra = pd.DataFrame({"product_id": labels, "product_name": labels, "category": [None] * len(labels),
                              "column": [f"label_{_slug(x)}" for x in labels]})
        inputs.catalogue = (pd.concat([inputs.catalogue, extra], ignore_index=True) if len(inputs.catalogue)
                            else extra)
    return inputs
