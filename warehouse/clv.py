"""The per-customer purchase summary that BG/NBD and Gamma-Gamma models are fitted on, in DuckDB SQL.

One aggregate query over `raw.transactions`: purchases are first collapsed to one row per customer and day
(several purchases on the same day count as one purchase of their summed value, as in Fader, Hardie & Lee
(2005) and lifetimes' `summary_data_from_transaction_data`), then to one row per customer. Only that summary
(one row per customer) leaves the database: ~35 s for 50M transactions / 1M customers on 2 busy cores within a
2 GB memory limit (the per-day grouping is most of it; a plain per-customer aggregate takes ~10 s there).
"""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pandas as pd

from warehouse.db import delivery_version, transaction
from warehouse.mapping import sql_str

SUMMARY_DOCS = {
    "customer_id": "Customer key.",
    "frequency": "x: repeat purchase days in the calibration window (purchase days - 1).",
    "recency": "t_x: time units from the first to the last purchase day in the calibration window.",
    "T": "Time units from the first purchase day to calibration_end (the customer's age).",
    "monetary": "Mean value of the repeat purchase days (the first purchase excluded); 0 when frequency = 0.",
    "holdout_x": "Purchase days in (calibration_end, holdout_end] (only when holdout_end is given).",
    "holdout_value": "Value bought in (calibration_end, holdout_end] (only when holdout_end is given).",
    "holdout_t": "Length of the holdout window in time units, the same on every row (only with holdout_end).",
}


def _day(d: date) -> str:
    return f"DATE '{date.fromisoformat(str(d)).isoformat()}'"


def clv_summary(
    con: duckdb.DuckDBPyConnection,
    calibration_end: date,
    holdout_end: date | None = None,
    event_filter: str = "amount < 0",
    value_expr: str = "-amount",
    time_unit_days: float = 7.0,
) -> pd.DataFrame:
    """Frequency / recency / age / monetary per customer as of `calibration_end` (inclusive), from raw.transactions.

    A purchase is a transaction matching `event_filter` (SQL on raw.transactions' columns; default: money out),
    worth `value_expr` (default: -amount, so positive). Purchases are counted per day: x = distinct purchase
    days up to calibration_end minus one (the first purchase starts the customer's clock and is not a repeat);
    recency t_x = first -> last purchase day and T = first purchase day -> calibration_end, both in units of
    `time_unit_days` (7: weeks, as in the CDNOW papers). monetary is the mean value of the x repeat purchase
    days (the Gamma-Gamma convention: the first purchase is left out), 0 when x = 0.

    With `holdout_end`, also holdout_x (purchase days in (calibration_end, holdout_end]), holdout_value and
    holdout_t (the window's length in time units). Customers with no purchase on or before calibration_end are
    NOT in the summary: the models describe customers already acquired (first purchases after the
    calibration window are new customers, not repeat purchases). Rows are ordered by customer_id.
    """
    cal = _day(calibration_end)
    upper = _day(holdout_end) if holdout_end is not None else cal
    if holdout_end is not None and date.fromisoformat(str(holdout_end)) <= date.fromisoformat(str(calibration_end)):
        raise ValueError(f"holdout_end {holdout_end} must be after calibration_end {calibration_end}")
    u = float(time_unit_days)
    holdout_cols = ""
    if holdout_end is not None:
        holdout_cols = f""",
            hold_days AS holdout_x,
            hold_value AS holdout_value,
            date_diff('day', {cal}, {upper}) / {u} AS holdout_t"""
    # Calibration days always precede holdout days, so a customer's first day overall is their first
    # calibration day whenever they have one (HAVING): min/arg_min need no CASE. Sums of 0/1 indicators
    # instead of FILTER clauses: measurably faster in DuckDB (see warehouse/features.py rfm). Values summed as
    # DECIMAL: exact, so the same purchases in another row order (a reloaded file, a parallel scan) give the
    # same bits; double sums differ in the last bit, and the likelihood fit turns that into other parameters.
    sql = f"""
        WITH days AS (
            SELECT customer_id, CAST(transaction_date AS DATE) AS day, sum(({value_expr})::DECIMAL(38, 6)) AS value
            FROM raw.transactions
            WHERE ({event_filter}) AND transaction_date < {upper} + 1
            GROUP BY 1, 2
        ), per_customer AS (
            SELECT customer_id,
                   min(day) AS first_day,
                   max(CASE WHEN day <= {cal} THEN day END) AS last_day,
                   sum((day <= {cal})::INTEGER) AS cal_days,
                   sum(CASE WHEN day <= {cal} THEN value ELSE 0 END) AS cal_value,
                   arg_min(value, day) AS first_value,
                   sum((day > {cal})::INTEGER) AS hold_days,
                   sum(CASE WHEN day > {cal} THEN value ELSE 0 END) AS hold_value
            FROM days
            GROUP BY 1
            HAVING sum((day <= {cal})::INTEGER) > 0
        )
        SELECT customer_id,
               cal_days - 1 AS frequency,
               date_diff('day', first_day, last_day) / {u} AS recency,
               date_diff('day', first_day, {cal}) / {u} AS "T",
               CASE WHEN cal_days > 1 THEN (cal_value - first_value) / (cal_days - 1) ELSE 0 END AS monetary{holdout_cols}
        FROM per_customer
        ORDER BY customer_id
    """
    out = con.execute(sql).df()
    out["frequency"] = out["frequency"].astype("int64")
    out["monetary"] = out["monetary"].astype("float64")
    if holdout_end is not None:
        out["holdout_x"] = out["holdout_x"].astype("int64")
        out["holdout_value"] = out["holdout_value"].astype("float64")
    return out


# The summary a training run computed, kept for its scoring step: the challenger's summary with the holdout
# columns holds the scoring summary's columns too (the same purchases up to the snapshot), and at 1M customers
# reading 60M transactions again costs a scoring step ~10 s.
KEPT = "features.clv_summary"
CALIBRATION = ("customer_id", "frequency", "recency", "T", "monetary")


def summary_key(con: duckdb.DuckDBPyConnection, calibration_end: date, event_filter: str, value_expr: str,
                time_unit_days: float) -> str:
    """What a summary depends on: the snapshot, the purchases' definition, and the transactions as delivered
    (their ledger's version: any load, correction or release changes it)."""
    return json.dumps([str(calibration_end), delivery_version(con, "transactions"), event_filter, value_expr,
                       float(time_unit_days)])


def keep_summary(con: duckdb.DuckDBPyConnection, summary: pd.DataFrame, key: str) -> None:
    """The calibration columns of `summary` into features.clv_summary, labelled with `key`."""
    with transaction(con, {"_clv_summary": summary[list(CALIBRATION)]}):
        con.execute(f"CREATE OR REPLACE TABLE {KEPT} AS SELECT * FROM _clv_summary ORDER BY customer_id")
        con.execute(f"COMMENT ON TABLE {KEPT} IS {sql_str(key)}")


def kept_summary(con: duckdb.DuckDBPyConnection, key: str) -> pd.DataFrame | None:
    """The summary clv_summary would return for `key` without a holdout, when one was kept for it; else None."""
    row = con.execute("SELECT comment FROM duckdb_tables() WHERE schema_name = 'features' "
                      "AND table_name = 'clv_summary'").fetchone()
    if row is None or row[0] != key:
        return None
    return con.execute(f"SELECT * FROM {KEPT} ORDER BY customer_id").df()
