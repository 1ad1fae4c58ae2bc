"""The delivery ledger `raw.deliveries`: every file version that reached a table, what became of it and its counts.

One row per delivery: a file's content (its checksum) read with one mapping (the feed's fingerprint). States:

  loaded      its rows are in raw (a snapshot: the current state of its feed)
  held        the volume guard kept it out whole (nothing replaced); `scorehouse deliveries accept` releases it
  accepted    released by a person; the next run loads it without the guard
  superseded  a newer snapshot of its feed replaced it, or a newer version of the same file arrived
  rejected    unreadable: nothing loaded (the error is in `note`)

`archived_at` is set when the file has left the landing folder: its rows stay, nothing is lost.
Counts reconcile per delivery: rows_read = rows_loaded + rows_skipped + rows_quarantined, where rows_skipped
are rows raw already held (an exact re-send, an unchanged snapshot row, a correction the policy did not apply)
and rows_released counts quarantined rows later released into raw (their parent arrived).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS raw.deliveries (
    delivery_id VARCHAR PRIMARY KEY,
    table_name VARCHAR NOT NULL,
    feed VARCHAR NOT NULL,               -- the feed's path glob in the source config
    mode VARCHAR NOT NULL,               -- snapshot | events
    source_file VARCHAR NOT NULL,        -- relative to the landing folder
    resolved_path VARCHAR,
    size BIGINT,
    mtime_ns BIGINT,
    checksum VARCHAR,
    fingerprint VARCHAR,
    delivered_at TIMESTAMP,              -- the file's modification time: when the bank delivered it
    processed_at TIMESTAMP,
    run_id VARCHAR,
    state VARCHAR NOT NULL,
    note VARCHAR,
    rows_read BIGINT DEFAULT 0,
    rows_loaded BIGINT DEFAULT 0,
    rows_skipped BIGINT DEFAULT 0,
    rows_quarantined BIGINT DEFAULT 0,
    rows_released BIGINT DEFAULT 0,
    rows_closed BIGINT DEFAULT 0,        -- snapshot rows no longer delivered: their version was closed
    rows_before BIGINT,                  -- snapshot: the feed's current rows before this delivery
    rows_after BIGINT,                   -- ... and after it (or what it would have left, when held)
    archived_at TIMESTAMP
)"""

CORRECTIONS_DDL = """
CREATE TABLE IF NOT EXISTS raw.corrections (
    table_name VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    action VARCHAR NOT NULL,             -- replaced | kept_first | quarantined
    delivery_id VARCHAR NOT NULL,
    source_file VARCHAR, source_row BIGINT,
    previous_file VARCHAR, previous_row BIGINT,
    changed_columns VARCHAR[],
    run_id VARCHAR,
    corrected_at TIMESTAMP
)"""

LIVE = ("loaded", "held", "accepted")


@dataclass
class Delivery:
    delivery_id: str
    table_name: str
    feed: str
    mode: str
    source_file: str
    resolved_path: str | None
    size: int
    mtime_ns: int
    checksum: str | None
    fingerprint: str
    delivered_at: datetime | None
    processed_at: datetime | None = None
    run_id: str | None = None
    state: str = "loaded"
    note: str | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_skipped: int = 0
    rows_quarantined: int = 0
    rows_released: int = 0
    rows_closed: int = 0
    rows_before: int | None = None
    rows_after: int | None = None
    archived_at: datetime | None = None


COLUMNS = [f.name for f in fields(Delivery)]


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute(DDL)
    con.execute(CORRECTIONS_DDL)


def delivery_id(table: str, rel: str, checksum: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{table}\x1f{rel}\x1f{checksum}\x1f{fingerprint}".encode()).hexdigest()[:20]


def _rows(con, where: str, args: list) -> list[Delivery]:
    return [Delivery(*r) for r in con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM raw.deliveries WHERE {where} ORDER BY processed_at, delivered_at",
        args).fetchall()]


def latest(con, table: str, rel: str) -> Delivery | None:
    """The newest delivery of this file (by name) to this table."""
    rows = _rows(con, "table_name = ? AND source_file = ?", [table, rel])
    return rows[-1] if rows else None


def of_table(con, table: str) -> list[Delivery]:
    return _rows(con, "table_name = ?", [table])


def current(con, table: str, feed: str) -> Delivery | None:
    """The loaded delivery of a snapshot feed: the state it holds now."""
    rows = _rows(con, "table_name = ? AND feed = ? AND state = 'loaded'", [table, feed])
    return rows[-1] if rows else None


def save(con, d: Delivery) -> None:
    con.execute("DELETE FROM raw.deliveries WHERE delivery_id = ?", [d.delivery_id])
    con.execute(f"INSERT INTO raw.deliveries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [getattr(d, c) for c in COLUMNS])


def set_state(con, ids: list[str], state: str, note: str | None = None) -> None:
    if ids:
        con.execute(f"UPDATE raw.deliveries SET state = ?, note = coalesce(?, note) "
                    f"WHERE delivery_id IN ({', '.join('?' * len(ids))})", [state, note, *ids])


def archive_missing(con, table: str, present: set[str], now: datetime) -> list[str]:
    """Mark archived the deliveries whose file has left the landing folder; their rows stay."""
    gone = [r[0] for r in con.execute(
        "SELECT delivery_id, source_file FROM raw.deliveries WHERE table_name = ? AND archived_at IS NULL "
        "AND state <> 'rejected'", [table]).fetchall() if r[1] not in present]
    if gone:
        con.execute(f"UPDATE raw.deliveries SET archived_at = ? WHERE delivery_id IN ({', '.join('?' * len(gone))})",
                    [now, *gone])
    # a file that came back (copied in again) is not archived any more
    con.execute("UPDATE raw.deliveries SET archived_at = NULL WHERE table_name = ? AND archived_at IS NOT NULL "
                "AND source_file IN (SELECT unnest(?::VARCHAR[]))", [table, sorted(present)])
    return gone


def listing(con, table: str | None = None) -> list[Delivery]:
    ensure(con)
    return _rows(con, "table_name = ?" if table else "true", [table] if table else [])


class NotHeld(ValueError):
    pass


def accept(con, file: str, table: str | None = None) -> list[Delivery]:
    """Release held deliveries of `file` (a name as `deliveries list` shows it): the next run loads them
    without the volume guard."""
    ensure(con)
    held = [d for d in _rows(con, "source_file = ? AND state = 'held'" + (" AND table_name = ?" if table else ""),
                             [file, table] if table else [file])]
    if not held:
        known = sorted({r[0] for r in con.execute("SELECT source_file FROM raw.deliveries WHERE state = 'held'")
                       .fetchall()})
        raise NotHeld(f"no held delivery of {file!r}" + (f" in table {table}" if table else "")
                      + (f"; held now: {', '.join(known)}" if known else "; nothing is held"))
    set_state(con, [d.delivery_id for d in held], "accepted", "accepted by a person: loaded by the next run "
              "without the volume guard")
    return held
