"""DDL for the warehouse schemas: raw tables from the contract (by delivery mode), quarantine, the ledger.

An `events` table is `raw.<table>` itself. A `snapshot` table keeps every version of its rows in
`raw.<table>_history` and `raw.<table>` is a view of the current ones, so features can read the state as it
was at any date (warehouse/features.py) while everything else reads the current state by its usual name.
Rows held back only because their customer was not delivered yet wait, typed, in
`quarantine.<table>_parked` until it arrives.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from warehouse import deliveries
from warehouse.contract import HISTORY, LINEAGE, TABLES, TEXT, Table

SCHEMAS = ("raw", "quarantine", "features", "ml", "scores", "monitoring")

QUARANTINE_COLUMNS = (
    ("_source_file", "VARCHAR", "File the row came from (relative to the landing folder)."),
    ("_source_row", "BIGINT", "Row number in that file as an editor or Excel shows it (header is row 1)."),
    ("reason", "VARCHAR", "Every problem found, as 'column: problem; column: problem'."),
    ("columns", "VARCHAR[]", "The columns named in reason."),
    ("record", "VARCHAR", "The original row as JSON, exactly as read."),
    ("_ingested_at", "TIMESTAMP", "When it was rejected."),
    ("run_id", "VARCHAR", "Dagster run that read it."),
    ("kind", "VARCHAR", "invalid | summary | truncated | duplicate | orphan | correction."),
    ("delivery_id", "VARCHAR", "The delivery it came in (raw.deliveries)."),
    ("released_at", "TIMESTAMP", "An orphan whose customer arrived later: when it was released into raw."),
    ("released_run_id", "VARCHAR", "The run that released it."),
)


class ModeChanged(RuntimeError):
    """A table loaded in one delivery mode that a source config now declares in the other."""


def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
    # Every step connects; the catalog of a file this process already set up is not queried again.
    # fetchall: an unfinished result would block the caller's next register()
    (path,), = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    ident = (path, Path(path).stat().st_ino) if path and Path(path).exists() else None
    if ident in _ENSURED:
        return
    if _old_layout(con):
        # A home written before deliveries (one ledger row per file, no history): its raw and quarantine
        # tables are rebuilt from the landing files by the next ingest, which reads every file as new.
        con.execute("DROP SCHEMA IF EXISTS raw CASCADE; DROP SCHEMA IF EXISTS quarantine CASCADE")
    for s in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    deliveries.ensure(con)
    if ident:
        _ENSURED.add(ident)


_ENSURED: set[tuple[str, int]] = set()


def _old_layout(con) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                       "AND table_name = 'ingest_ledger'").fetchone()[0] > 0


def storage(contract: Table, mode: str) -> str:
    """The table that holds the rows: raw.<table> for events, raw.<table>_history for snapshots."""
    return f"raw.{contract.name}_history" if mode == "snapshot" else f"raw.{contract.name}"


def _kind(con, schema: str, name: str) -> str | None:
    row = con.execute("SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                      [schema, name]).fetchone()
    return row[0] if row else None


def _columns(con, table: str) -> dict[str, str]:
    schema, name = table.split(".")
    return dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
                            "AND table_name = ? ORDER BY ordinal_position", [schema, name]).fetchall())


def table_mode(con, table: str) -> str | None:
    """How raw.<table> is stored now: snapshot (a view of its history), events (a table), or None."""
    kind = _kind(con, "raw", table)
    return None if kind is None else "snapshot" if kind == "VIEW" else "events"


def ensure_raw_table(con: duckdb.DuckDBPyConnection, contract: Table, extras: dict[str, str] | None = None,
                     mode: str | None = None) -> str:
    """Create the storage of raw.<table> for `mode` (the contract's by default), quarantine.<table> and its
    parked rows; add extra columns a new file brings. Returns the storage table."""
    ensure_schemas(con)
    mode = mode or contract.mode
    name = contract.name
    have = table_mode(con, name)
    if have and have != mode:
        if con.execute(f"SELECT count(*) FROM {storage(contract, have)}").fetchone()[0]:
            raise ModeChanged(f"raw.{name} holds rows delivered as {have}, and the source config now says "
                              f"mode: {mode}; keep {have}, or start a new home to reload it as {mode}")
        _drop(con, contract)
    cols = [*contract.columns, *LINEAGE, *(HISTORY if mode == "snapshot" else ())]
    table = storage(contract, mode)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{_q(c.name)} {c.type}' for c in cols)})")
    parked = f"quarantine.{name}_parked"
    for t in (table, parked):  # a column a newer contract adds (transactions.fraud): NULL in the rows before it
        existing = _columns(con, t)
        for c in cols if existing else ():
            if c.name not in existing:
                con.execute(f"ALTER TABLE {t} ADD COLUMN {_q(c.name)} {c.type}")
    if mode == "snapshot" and _kind(con, "raw", name) is None:
        hidden = ", ".join(c.name for c in HISTORY)
        con.execute(f"CREATE VIEW raw.{name} AS SELECT * EXCLUDE ({hidden}) FROM {table} WHERE _valid_to IS NULL")
    qcols = ", ".join(f"{n} {t}" for n, t, _ in QUARANTINE_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS quarantine.{name} ({qcols})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {parked} AS SELECT * FROM {table} LIMIT 0")
    if extras:
        for t in (table, parked):
            existing = _columns(con, t)
            for col, kind in extras.items():
                if col not in existing:
                    con.execute(f"ALTER TABLE {t} ADD COLUMN {_q(col)} {kind}")
                elif existing[col] != kind and existing[col] != TEXT:
                    # One file says number, another says text: text holds both without loss.
                    con.execute(f"ALTER TABLE {t} ALTER {_q(col)} TYPE {TEXT}")
    return table


def _drop(con, contract: Table) -> None:
    name = contract.name
    con.execute(f"DROP {'VIEW' if _kind(con, 'raw', name) == 'VIEW' else 'TABLE'} IF EXISTS raw.{name}")
    con.execute(f"DROP TABLE IF EXISTS raw.{name}_history")
    con.execute(f"DROP TABLE IF EXISTS quarantine.{name}_parked")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_all_raw_tables(con: duckdb.DuckDBPyConnection, modes: dict[str, str] | None = None) -> None:
    for t in TABLES.values():
        ensure_raw_table(con, t, mode=(modes or {}).get(t.name))
