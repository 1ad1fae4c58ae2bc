"""The Great Expectations suite of each raw table, built from the data contract, and its summary.

Validation runs inside DuckDB through GX's SQL datasource (quality/gx_duckdb.py): no table is pulled into
pandas, so a 50M-row table validates in seconds. A one-column key is checked by GX's
proportion of unique values (one aggregate; 5.8 s on 60M rows, where a GROUP BY row query took 10.3 s because
GX runs it twice); a compound key by a GROUP BY query expectation that samples the duplicated keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from warehouse.contract import TABLES, Table
from warehouse.db import has_rows


def contract_specs(table: Table, check_customers: bool = True, empty: bool = False,
                   customers: str = "raw.customers") -> list[dict]:
    """GX expectation specs ({"type", "kwargs"}) for raw.<table>. `customers`: the table of every customer ever
    delivered (a snapshot's history: a customer who has left still owns their past transactions)."""
    specs: list[dict] = [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 0}}]
    for c in table.columns:
        specs.append({"type": "expect_column_to_exist", "kwargs": {"column": c.name}})
        specs.append({"type": "expect_column_values_to_be_of_type", "kwargs": {"column": c.name, "type_": c.type}})
        if c.required:
            specs.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c.name}})
        if c.min is not None or c.max is not None:
            specs.append({"type": "expect_column_values_to_be_between",
                          "kwargs": {"column": c.name, "min_value": c.min, "max_value": c.max}})
        if c.allowed:
            specs.append({"type": "expect_column_values_to_be_in_set",
                          "kwargs": {"column": c.name, "value_set": list(c.allowed)}})
    # One aggregate query for a one-column key (GX runs a row query twice: count, then sample); the
    # proportion of an empty table is undefined, and GX fails it, so that one gets the row query.
    if len(table.key) == 1 and not empty:
        specs.append({"type": "expect_column_proportion_of_unique_values_to_be_between",
                      "kwargs": {"column": table.key[0], "min_value": 1.0}})
    elif table.key:
        cols = ", ".join(f'b."{k}"' for k in table.key)
        specs.append({"type": "unexpected_rows_expectation", "kwargs": {
            "unexpected_rows_query": f"WITH b AS (SELECT * FROM {{batch}}) SELECT {cols}, count(*) AS n FROM b "
                                     f"GROUP BY ALL HAVING count(*) > 1",
            "description": f"key ({', '.join(table.key)}) is unique"}})
    if table.references_customers and check_customers:
        specs.append({"type": "foreign_key",
                      "kwargs": {"column": "customer_id", "ref_table": customers, "ref_column": "customer_id"}})
    return specs


@dataclass
class SuiteResult:
    table: str
    results: list[dict]
    rows: int | None = None  # rows validated

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    @property
    def passed(self) -> bool:
        return not self.failed

    def describe(self, r: dict) -> str:
        kw = r["kwargs"]
        what = r["type"].removeprefix("expect_").replace("_", " ")
        if r["type"] == "unexpected_rows_expectation":
            what = kw.get("description", "query")
        elif r["type"] == "expect_column_proportion_of_unique_values_to_be_between":
            return f"key ({kw['column']}) is unique"
        elif r["type"] == "foreign_key":
            what = f"{kw['column']} in {kw['ref_table']}"
        col = kw.get("column")
        return f"{col}: {what}" if col and r["type"] != "foreign_key" else what

    def _showable(self, column: str | None) -> bool:
        """Unexpected values are shown only for identifiers, numbers and dates of the contract: a text column's
        values may be a person's name (a column-shifted file), which never leaves the warehouse."""
        c = TABLES[self.table].column(column) if column and self.table in TABLES else None
        return c is not None and not c.sensitive and (c.type != "VARCHAR" or c.name.endswith("_id"))

    def markdown(self, limit: int = 40) -> str:
        rows = sorted(self.results, key=lambda r: r["success"])[:limit]
        lines = ["| expectation | ok | unexpected | % | sample / observed |", "|---|---|---:|---:|---|"]
        for r in rows:
            sample = r["exception"] or r["partial_unexpected_list"] or r["observed_value"]
            if r["partial_unexpected_list"] and not self._showable(r["kwargs"].get("column")):
                sample = "(values not shown: the column may hold names or free text)"
            sample = str(sample)[:80].replace("|", "\\|") if sample not in (None, [], "") else ""
            pct = "" if r["unexpected_percent"] is None else f"{r['unexpected_percent']:.3g}"
            n = "" if r["unexpected_count"] is None else f"{r['unexpected_count']:,}"
            lines.append(f"| {self.describe(r)} | {'✓' if r['success'] else '✗'} | {n} | {pct} | {sample} |")
        return "\n".join(lines)


def validate_table(con: duckdb.DuckDBPyConnection, table: str, deliveries: list[str] | None = None) -> SuiteResult:
    """Validate raw.<table> (committed data) with its contract suite. With `deliveries`, only the rows those
    deliveries loaded (an events table's new rows, a snapshot's new versions among its current rows): the rest
    was validated when it was loaded, and the merge keeps keys unique across deliveries."""
    from quality.gx_duckdb import validate_table as gx_validate  # GX import is slow: only when validating
    from warehouse.schema import storage, table_mode

    contract = TABLES[table]
    customers = storage(TABLES["customers"], table_mode(con, "customers") or "snapshot")
    name = table
    if deliveries is not None:
        name = f"_check_{table}"  # a view GX's own cursors can see; dropped below
        ids = ", ".join("'" + d.replace("'", "''") + "'" for d in deliveries) or "NULL"
        con.execute(f"CREATE OR REPLACE VIEW raw.{name} AS SELECT * FROM raw.{table} WHERE _delivery_id IN ({ids})")
    try:
        # the foreign key is checked once customers exist (a source may deliver none; agencies come first)
        check = contract.references_customers and table != "customers" and has_rows(con, customers)
        specs = contract_specs(contract, check_customers=check,
                               empty=not has_rows(con, f"raw.{name}"), customers=customers)
        rows = con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]
        return SuiteResult(table, gx_validate(con, name, specs, schema="raw"), rows)
    finally:
        if name != table:
            con.execute(f"DROP VIEW IF EXISTS raw.{name}")


def validate_frame(frame: pd.DataFrame, table: str, customers: pd.DataFrame | None = None) -> SuiteResult:
    """Validate a DataFrame as if it were raw.<table> (with optional customers for the foreign key)."""
    con = duckdb.connect()
    try:
        con.execute("CREATE SCHEMA raw")
        con.register("_frame", frame)
        con.execute(f"CREATE TABLE raw.{table} AS SELECT * FROM _frame")
        if table != "customers":
            con.register("_customers", customers if customers is not None else pd.DataFrame({"customer_id": []}))
            con.execute("CREATE TABLE raw.customers AS SELECT customer_id::VARCHAR AS customer_id FROM _customers")
        return validate_table(con, table)
    finally:
        con.close()
