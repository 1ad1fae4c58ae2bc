"""Fraud features, built in DuckDB: one row per transaction booked in a window, each measured against its own
customer's earlier transactions (how far above the usual amount, how many in the last hour and day, a channel
never used before, the gap since the last one). The statement: warehouse/sql/transaction_features.sql.

Scoring reads the transactions of the last `score_days` days delivered (features.transaction_features);
training reads the `train_days` before them, sampled by customer when they are more than a cap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pandas as pd

from warehouse.contract import personal
from warehouse.db import sql

TABLE = "features.transaction_features"

# What each column of features.transaction_features means (docs, the UI's column schema); a source's extra
# columns follow them as delivered.
FEATURE_DOCS = {
    "transaction_id": "Transaction key (`raw.transactions`).",
    "customer_id": "The customer the transaction belongs to.",
    "booked_at": "When it happened (`raw.transactions.transaction_date`).",
    "amount": "Its amount, unsigned.",
    "is_debit": "1 for money out of the account, 0 for money in.",
    "hour": "Hour of the day it happened (0-23).",
    "day_of_week": "ISO day of the week (1 Monday .. 7 Sunday).",
    "channel": "Channel as delivered (branch, atm, online, mobile, pos, ...).",
    "category": "Category as delivered.",
    "amount_vs_usual": "The amount over the customer's average amount before it (within `history_days`); null for "
                       "a customer's first transaction.",
    "txn_before": "The customer's transactions before it (within `history_days`).",
    "txn_last_hour": "The customer's other transactions in the hour up to it (velocity).",
    "txn_last_day": "The customer's other transactions in the day up to it.",
    "amount_last_day": "The amount of the customer's other transactions in the day up to it.",
    "seconds_since_last": "Seconds since the customer's previous transaction; null for the first.",
    "new_channel": "1 when the customer never used this channel before (within `history_days`).",
    "new_counterparty": "1 when the customer never dealt with this counterparty before (within `history_days`); "
                        "null when the source gives no counterparty.",
    "sample_weight": "1 / the chance its customer was read: 1 when every customer is read (scoring).",
    "fraud": "The fraud label as delivered (`raw.transactions.fraud`): what the model learns from, never an input.",
}


@dataclass(frozen=True)
class Window:
    """The booking times a model reads: scored = [score_from, end]; training = [train_from, score_from)."""

    end: datetime
    score_from: datetime
    train_from: datetime


def window(con: duckdb.DuckDBPyConnection, score_days: int, train_days: int) -> Window | None:
    """The last `score_days` calendar days delivered are scored; the `train_days` before them train. None without
    transactions."""
    (end,), = con.execute("SELECT max(transaction_date) FROM raw.transactions").fetchall()
    if end is None:
        return None
    score_from = datetime.combine(end.date() - timedelta(days=score_days - 1), datetime.min.time())
    return Window(end, score_from, score_from - timedelta(days=train_days))


def _query(con, since: datetime, history_days: int, until: datetime | None, share: float):
    return con.execute(sql("transaction_features"), [since, history_days, until, share])


def build_transaction_features(con: duckdb.DuckDBPyConnection, since: datetime, history_days: int = 90) -> int:
    """features.transaction_features for the transactions booked at or after `since`, reading each customer's
    transactions of the `history_days` before it as history. Returns the rows built."""
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    con.execute(f"CREATE OR REPLACE TABLE {TABLE} AS {sql('transaction_features')}", [since, history_days, None, 1.0])
    return con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


def rows_between(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime) -> int:
    return con.execute("SELECT count(*) FROM raw.transactions WHERE transaction_date >= ? AND transaction_date < ?",
                       [since, until]).fetchone()[0]


def training_frame(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime, history_days: int,
                   max_rows: int) -> tuple[pd.DataFrame, float]:
    """Features of the transactions booked in [since, until): all of them when they are at most `max_rows`, else
    a hash sample of customers reading about that many (every customer with a labelled fraud kept, weighted 1;
    the others weighted 1 / the share read). Returns the frame and the share of customers read. A source's extra
    column holding a person's name or free text (contract.personal) is never an input."""
    n = rows_between(con, since, until)
    share = 1.0 if n <= max_rows else max_rows / n
    frame = _query(con, since, history_days, until, share).df()
    return frame.drop(columns=[c for c in frame.columns if c not in FEATURE_DOCS and personal(c)]), share
