"""DDL for the warehouse schemas: raw tables from the contract, quarantine tables and the ingest ledger."""

from __future__ import annotations

import duckdb

from warehouse.contract import LINEAGE, TABLES, TEXT, Table

SCHEMAS = ("raw", "quarantine", "features", "ml", "scores", "monitoring")

QUARANTINE_COLUMNS = (
    ("_source_file", "VARCHAR", "File the row came from (relative to the landing folder)."),
    ("_source_row", "BIGINT", "Row number in that file as an editor or Excel shows it (header is row 1)."),
    ("reason", "VARCHAR", "Every problem found, as 'column: problem; column: problem'."),
    ("columns", "VARCHAR[]", "The columns named in reason."),
    ("record", "VARCHAR", "The original row as JSON, exactly as read."),
    ("_ingested_at", "TIMESTAMP", "When it was rejected."),
    ("run_id", "VARCHAR", "Dagster run that read it."),
)


def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
    for s in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    con.execute(
        """CREATE TABLE IF NOT EXISTS raw.ingest_ledger (
            table_name VARCHAR, source_file VARCHAR, resolved_path VARCHAR, size BIGINT, mtime_ns BIGINT,
            checksum VARCHAR, fingerprint VARCHAR, rows_read BIGINT, rows_loaded BIGINT,
            rows_quarantined BIGINT, ingested_at TIMESTAMP, PRIMARY KEY (table_name, source_file))"""
    )


def ensure_raw_table(con: duckdb.DuckDBPyConnection, contract: Table, extras: dict[str, str] | None = None) -> None:
    """Create raw.<table> and quarantine.<table>; add extra columns a new file brings."""
    ensure_schemas(con)
    cols = ", ".join(f'"{c.name}" {c.type}' for c in (*contract.columns, *LINEAGE))
    con.execute(f"CREATE TABLE IF NOT EXISTS raw.{contract.name} ({cols})")
    qcols = ", ".join(f"{n} {t}" for n, t, _ in QUARANTINE_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS quarantine.{contract.name} ({qcols})")
    if not extras:
        return
    existing = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' "
            "AND table_name = ?", [contract.name]
        ).fetchall()
    )
    for name, kind in extras.items():
        if name not in existing:
            con.execute(f'ALTER TABLE raw.{contract.name} ADD COLUMN "{name}" {kind}')
        elif existing[name] != kind and existing[name] != TEXT:
            # One file says number, another says text: text holds both without loss.
            con.execute(f'ALTER TABLE raw.{contract.name} ALTER "{name}" TYPE {TEXT}')


def ensure_all_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    for t in TABLES.values():
        ensure_raw_table(con, t)
