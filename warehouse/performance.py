"""Relationship managers' and agencies' books month by month, in DuckDB SQL (sql/book_performance.sql), and the
objectives a bank delivers for them (raw.targets): what features.book_performance is built from."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from warehouse.db import optimizers_off, sql
from warehouse.schema import table_mode

TABLE = "book_performance"
BOOK_DOCS = {
    "level": "`manager` or `agency`.",
    "entity_id": "The manager_id or agency_id.",
    "agency_id": "The agency (a manager's own; an agency's id again).",
    "period": "The month (its first day).",
    "clients": "Customers with a product held at the month's end.",
    "products_held": "Products held at the month's end.",
    "products_active": "Of those, used in the month (a transaction `features.book.activity_filter` counts).",
    "new_products": "Products opened in the month.",
    "closed_products": "Products closed in the month.",
    "active_clients": "Clients with a counted transaction in the month.",
    "churned_clients": "Clients with a `churned` outcome dated in the month.",
    "transactions": "Counted transactions in the month.",
    "net_flow": "Their sum: money in (+) minus money out (-).",
    "score_source": "`objectives` (raw.targets: achievement) or `book composite` (features.book.score).",
    "next_score": "The next month's score (empty for the latest): what the models learn to predict.",
    "next_period": "The next month.",
}
# the inputs of the performance models (ml/performance.py), also columns of the table
FEATURE_DOCS = {
    "score": "This month's performance score (0-100): achievement of its objectives (raw.targets) where the bank "
             "delivers them, else the book composite (`features.book.score`) on the T-score scale within the network "
             "(50: the average book that month; 10 points: one standard deviation).",
    "score_lag_1": "Last period's score.",
    "score_lag_2": "The score two periods ago.",
    "score_mean_3": "The mean score of this and the two periods before.",
    "score_mean_all": "The mean score of every period up to this one (the book's lasting level).",
    "score_trend": "This period's score minus the score two periods ago.",
    "activity": "Share of the products held used, over the last `features.book.score.window_periods` months (3).",
    "growth": "Products opened minus closed per product held, over the same months.",
    "retention": "1 - products closed per product held, over the same months.",
    "activity_mean_3": "Mean activity over this and the two periods before.",
    "growth_mean_3": "Mean growth over this and the two periods before.",
    "clients": "Customers with a product held at the period's end.",
    "products_per_client": "Products held per client.",
    "active_client_share": "Share of clients with a counted transaction in the period.",
    "churned_client_share": "Clients who left in the period (a `churned` outcome dated in it) per client.",
    "transactions_per_client": "Counted transactions per client in the period.",
    "flow_per_client": "Net money in (+) or out (-) per client in the period.",
    "clients_change": "Clients now over clients last period, minus 1.",
}


def periods(con: duckdb.DuckDBPyConnection, count: int) -> tuple[date, date] | None:
    """(first, last) month of the book history: the last month whose transactions are complete (the latest
    transaction is on its last day, else the month before) and the `count` - 1 before it. None without
    transactions."""
    (last,), = con.execute("""
        SELECT (date_trunc('month', max(transaction_date) + INTERVAL 1 DAY) - INTERVAL 1 MONTH)::DATE
        FROM raw.transactions""").fetchall()
    if last is None:
        return None
    first = (pd.Timestamp(last) - pd.DateOffset(months=count - 1)).date()
    return first, last


def book(con: duckdb.DuckDBPyConnection, first: date, last: date, activity: str) -> pd.DataFrame:
    """One row per manager or agency (`level`, `entity_id`, the agency) and month from `first` to `last`: clients,
    products held, used, opened and closed, active and departed clients, transactions and net flow. `activity`:
    which transactions count as using a product (an expression validated by the settings)."""
    # DuckDB would pre-aggregate the money flows per customer and month below the join with the books (11.9M
    # groups of decimal sums at 1M customers) where the join first leaves a few thousand (manager, month) groups:
    # the same rows in two thirds of the time and memory (benchmarks/RESULTS.md, 2026-12-03 12:05)
    with optimizers_off(con, "partial_aggregate_pushdown"):
        return con.execute(sql("book_performance").replace("{activity}", activity), [first, last]).df()


def targets(con: duckdb.DuckDBPyConnection, first: date, last: date) -> pd.DataFrame:
    """The objectives of the months from `first` to `last` (each month's first day; an objective dated within a
    month counts for that month). Empty in a home made before the contract had them (its next ingest creates
    raw.targets)."""
    if table_mode(con, "targets") is None:
        return pd.DataFrame(columns=["level", "entity_id", "period", "objective", "target", "achieved"])
    return con.execute("""
        SELECT level, entity_id, date_trunc('month', period)::DATE AS period, objective, target, achieved
        FROM raw.targets WHERE period >= ?::DATE AND period < ?::DATE + INTERVAL 1 MONTH""", [first, last]).df()
