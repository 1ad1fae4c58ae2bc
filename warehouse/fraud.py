"""Fraud features, built in DuckDB: one row per transaction booked since a given time, each measured against its own
customer's earlier transactions (how far above the usual amount, how many in the last hour and day, a channel
never used before, the gap since the last one). The statement: warehouse/sql/transaction_features.sql."""

from __future__ import annotations

from datetime import datetime

import duckdb

from warehouse.db import sql

TABLE = "features.transaction_features"


def build_transaction_features(con: duckdb.DuckDBPyConnection, since: datetime, history_days: int = 90) -> int:
    """features.transaction_features for the transactions booked at or after `since`, reading each customer's
    transactions of the `history_days` before it as history. Returns the rows built."""
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    con.execute(sql("transaction_features"), [since, history_days])
    return con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
