"""Merge one delivery's load table into the stored state of its table, by the feed's mode (docs/deliveries.md).

Written once for every storage backend: the statements read and write the tables by name (`raw.<table>`,
`raw.<table>_history`, `quarantine.*`, `raw.deliveries`, `raw.corrections`) in one DuckDB connection, inside one
transaction per delivery; a storage backend that keeps the tables elsewhere (issue 14) only has to give the step
those names, in a local DuckDB, and write back what changed.
The longer statements live in warehouse/sql/, identifiers filled in here, values bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from warehouse import deliveries, failpoints
from warehouse.contract import HISTORY, LINEAGE, TABLES, Table
from warehouse.db import sql
from warehouse.mapping import ident, key_expr, sql_str
from warehouse.schema import storage, table_mode
from warehouse.sources import Feed

WORK = ("_source_row", "_reason", "_kind", "_record", "_merge")


@dataclass
class Context:
    con: object
    load: str
    contract: Table
    feed: Feed
    store: str
    delivery: deliveries.Delivery
    row: Callable[[str], str]
    malformed: list[tuple[int, str, str]]
    run_id: str
    now: datetime
    prev: deliveries.Delivery | None = None  # the file's previous version (same name), if any
    accepted: bool = False  # released from the volume guard by a person
    parent_check: bool = False  # customer_id must name a delivered customer
    keyless: bool = False  # the key was made from the row's content
    mapped: set[str] | None = None  # the columns the file fills: only they can differ from the held row

    def columns(self, table: str) -> list[str]:
        schema, name = table.split(".")
        return [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", [schema, name]).fetchall()]

    def data_columns(self) -> list[str]:
        """The row's own values in the load table: contract and extra columns, no lineage, no bookkeeping."""
        skip = {c.name for c in (*LINEAGE, *HISTORY)} | set(WORK)
        return [c for c in self.columns(self.load) if c not in skip]


def flag_duplicates(con, load: str, contract: Table, row: Callable[[str], str]) -> None:
    """A key repeated within the file: the first row stands, the others are quarantined naming it."""
    if not contract.key:
        return
    key = key_expr(contract)
    dupes = con.execute(f"SELECT count(*) - count(DISTINCT {key}) FROM {load} WHERE _reason IS NULL").fetchone()[0]
    if dupes:
        con.execute(f"""
            UPDATE {load} AS u SET _reason = 'duplicate key ({", ".join(contract.key)}): first at row ' || d.first_row,
                   _kind = 'duplicate'
            FROM (SELECT {row('t')} AS r, min({row('t')}) OVER (PARTITION BY {key}) AS first_row
                  FROM {load} t WHERE t._reason IS NULL) d
            WHERE {row('u')} = d.r AND d.r <> d.first_row""")


def _customers(con) -> str | None:
    mode = table_mode(con, "customers")
    return storage(TABLES["customers"], mode) if mode else None


def _flag_orphans(ctx: Context, where: str) -> None:
    """Rows whose customer has never been delivered wait in quarantine (kind orphan) until it is."""
    customers = _customers(ctx.con)
    if not ctx.parent_check or customers is None:
        return
    ctx.con.execute(f"""
        UPDATE {ctx.load} AS u SET _reason = 'customer_id: not in customers (yet): released when its customer is '
               || 'delivered', _kind = 'orphan'
        WHERE u._reason IS NULL AND {where}
          AND NOT EXISTS (SELECT 1 FROM {customers} c WHERE c.customer_id = u.customer_id)""")


def _match(ctx: Context, current: str) -> None:
    """`_match`: the load table's good rows whose key is already held in `current`, with the columns whose
    values differ (none: the same row again)."""
    have = set(ctx.columns(ctx.store))
    compare = [c for c in ctx.data_columns() if c in have and c not in ctx.contract.key
               and (ctx.mapped is None or c in ctx.mapped)]
    changed = ", ".join(f"CASE WHEN l.{ident(c)} IS DISTINCT FROM r.{ident(c)} THEN {sql_str(c)} END"
                        for c in compare) or "NULL"
    lkey, rkey = key_expr(ctx.contract, "l"), key_expr(ctx.contract, "r")
    # Whether any key is held at all, reading the keys alone: a day's new events usually match none, and the
    # match itself reads every column of the held rows (all 60M of them at 1M customers) to compare them.
    held = ctx.con.execute(f"SELECT EXISTS (SELECT 1 FROM {ctx.load} l JOIN {current} r ON {lkey} = {rkey} "
                           "WHERE l._reason IS NULL)").fetchone()[0]
    ctx.con.execute(sql("match").format(load=ctx.load, current=current, row=ctx.row("l"), changed=changed,
                                        lkey=lkey, rkey=rkey, none="" if held else " AND false"))


def _apply_conflicts(ctx: Context) -> None:
    """Mark each matched row: the same again (skipped) or a correction. A correction of a row that came from an
    earlier version of this very file is that file re-issued: the new version wins. Any other correction is
    handled as `on_conflict` says."""
    policy = ctx.feed.on_conflict
    merge = {"latest_wins": "'replace'", "keep_first": "'kept_first'", "quarantine": "NULL"}[policy]
    quarantine = "m.previous_file <> $file" if policy == "quarantine" else "false"
    key = ", ".join(ctx.contract.key)
    ctx.con.execute(f"""
        UPDATE {ctx.load} AS u SET
            _merge = CASE WHEN len(m.changed) = 0 THEN 'same' WHEN m.previous_file = $file THEN 'replace'
                          ELSE {merge} END,
            _reason = CASE WHEN len(m.changed) > 0 AND {quarantine} THEN
                'correction: {key} already loaded from ' || m.previous_file || ' row ' || m.previous_row
                || ' with other values in ' || array_to_string(m.changed, ', ')
                || ' (on_conflict: quarantine keeps the loaded row)' END,
            _kind = CASE WHEN len(m.changed) > 0 AND {quarantine} THEN 'correction' END
        FROM _match m WHERE {ctx.row('u')} = m._row""", {"file": ctx.delivery.source_file})


def _audit(ctx: Context) -> None:
    """One row per correction in raw.corrections: which key, what was done, where it came from and where the
    row it corrects was."""
    action = {"latest_wins": "replaced", "keep_first": "kept_first", "quarantine": "quarantined"}[ctx.feed.on_conflict]
    ctx.con.execute("""
        INSERT INTO raw.corrections
        SELECT $table, _key, CASE WHEN previous_file = $file THEN 'replaced' ELSE $action END, $delivery, $file, _row,
               previous_file, previous_row, changed, $run, $now
        FROM _match WHERE len(changed) > 0""",
                    {"table": ctx.contract.name, "action": action, "delivery": ctx.delivery.delivery_id,
                     "file": ctx.delivery.source_file, "run": ctx.run_id, "now": ctx.now})


def _insert(ctx: Context, target: str, where: str, extra: str = "", params: list | None = None) -> None:
    """Rows of the load table into a stored table (raw, its history, or the parked rows), with their lineage
    (and, for a snapshot's history, `extra`: the feed and the version's start)."""
    cols = [c for c in ctx.data_columns() if c in set(ctx.columns(target))]
    ctx.con.execute(
        f"INSERT INTO {target} BY NAME SELECT {', '.join(f't.{ident(c)}' for c in cols)}, t._source_file, "
        f"{ctx.row('t')} AS _source_row, t._ingested_at, t._delivery_id{extra} FROM {ctx.load} t WHERE {where}",
        params or [])


def _quarantine(ctx: Context) -> None:
    """Every refused row (and every line the reader could not split) into quarantine.<table>; rows waiting for
    their customer also into the parked rows, typed, to be released later."""
    d, name = ctx.delivery, ctx.contract.name
    cols = ctx.data_columns()
    as_struct = ", ".join(f"{sql_str(c)}: t.{ident(c)}" for c in cols)
    key_list = "[" + ", ".join(sql_str(k) for k in ctx.contract.key) + "]::VARCHAR[]"
    ctx.con.execute(sql("quarantine").format(
        table=name, row=ctx.row("t"), load=ctx.load, key_list=key_list, as_struct=as_struct), [ctx.now, ctx.run_id])
    if ctx.malformed:
        ctx.con.executemany(
            f"INSERT INTO quarantine.{name} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            [(d.source_file, row, reason, _reason_columns(reason), raw, ctx.now, ctx.run_id,
              _line_kind(reason), d.delivery_id)
             for row, reason, raw in ctx.malformed])


def _line_kind(reason: str) -> str:
    return "summary" if reason.startswith("summary row") else "truncated" \
        if reason.startswith("possibly truncated") else "invalid"


def _reason_columns(reason: str) -> list[str]:
    import re

    if reason.startswith(("malformed line", "summary row", "possibly truncated")):
        return ["(line)"]
    return list(dict.fromkeys(re.findall(r"(?:^|; )([A-Za-z0-9_]+):", reason)))


def _counts(ctx: Context) -> dict:
    good, loaded, skipped, bad = ctx.con.execute(f"""
        SELECT count(*) FILTER (WHERE _reason IS NULL),
               count(*) FILTER (WHERE _reason IS NULL AND (_merge IS NULL OR _merge = 'replace')),
               count(*) FILTER (WHERE _reason IS NULL AND _merge IN ('same', 'kept_first')),
               count(*) FILTER (WHERE _reason IS NOT NULL) FROM {ctx.load}""").fetchone()
    n_bad = bad + len(ctx.malformed)
    return {"rows_read": good + n_bad, "rows_loaded": loaded, "rows_skipped": skipped, "rows_quarantined": n_bad}


def _shorter_resend(ctx: Context, rows_read: int) -> str | None:
    p = ctx.prev
    if p and p.state in ("loaded", "superseded") and p.checksum != ctx.delivery.checksum and rows_read < p.rows_read:
        return (f"a re-send of {p.source_file} with {rows_read:,} rows where the version it replaces had "
                f"{p.rows_read:,}: a cut-off copy?")
    return None


def _hold(ctx: Context, counts: dict, why: str, before: int | None = None, after: int | None = None
          ) -> deliveries.Delivery:
    d = replace(ctx.delivery, state="held", note=why + "; nothing of it was loaded. If it is right: "
                f"scorehouse deliveries accept {ctx.delivery.source_file}", rows_read=counts["rows_read"],
                rows_before=before, rows_after=after)
    deliveries.save(ctx.con, d)
    return d


def _supersede_same_file(ctx: Context) -> None:
    """The earlier versions of this file name are superseded by this one (their rows stay where they are)."""
    ctx.con.execute("""UPDATE raw.deliveries SET state = 'superseded', note = 'a newer version of the file arrived'
                       WHERE table_name = ? AND source_file = ? AND delivery_id <> ? AND state IN (?, ?, ?)""",
                    [ctx.contract.name, ctx.delivery.source_file, ctx.delivery.delivery_id, *deliveries.LIVE])


def _commit(ctx: Context, d: deliveries.Delivery) -> deliveries.Delivery:
    deliveries.save(ctx.con, d)
    failpoints.reached("ingest")
    ctx.con.execute("COMMIT")
    return d


# --------------------------------------------------------------------------------------------- events
def merge_events(ctx: Context) -> deliveries.Delivery:
    """Append-only facts: new keys load, the same row again is skipped, the same key with other values is a
    correction (`on_conflict`; a new version of the same file wins over its earlier one). Rows are never
    deleted, except that a file without keys of its own (or read again with a changed mapping) replaces its
    earlier rows: its content is its only identity."""
    con, store = ctx.con, ctx.store
    counts = _counts(ctx)
    why = None if ctx.accepted else _shorter_resend(ctx, counts["rows_read"])
    if why:
        return _hold(ctx, counts, why)
    replace_file = ctx.prev is not None and (ctx.keyless or ctx.prev.checksum == ctx.delivery.checksum)
    con.execute("BEGIN TRANSACTION")
    try:
        if replace_file:  # a re-read (the mapping changed) or a keyless re-send: the file's rows are replaced
            for t in (store, f"quarantine.{ctx.contract.name}", f"quarantine.{ctx.contract.name}_parked"):
                con.execute(f"DELETE FROM {t} WHERE _source_file = ?", [ctx.delivery.source_file])
        empty = not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {store} LIMIT 1)").fetchone()[0]
        if not empty:
            _match(ctx, store)
            _apply_conflicts(ctx)
            _audit(ctx)
        _flag_orphans(ctx, "u._merge IS NULL")
        counts = _counts(ctx)
        _quarantine(ctx)
        _insert(ctx, f"quarantine.{ctx.contract.name}_parked", "t._kind = 'orphan'")
        if empty:
            _swap_into_store(ctx)
        else:
            # the corrected rows replace the ones held (latest_wins, or a re-issued version of the same file)
            con.execute(f"DELETE FROM {store} WHERE {key_expr(ctx.contract)} IN "
                        f"(SELECT {key_expr(ctx.contract)} FROM {ctx.load} WHERE _merge = 'replace')")
            con.execute("SET preserve_insertion_order = false")  # row order in raw does not matter: write in parallel
            _insert(ctx, store, "t._reason IS NULL AND (t._merge IS NULL OR t._merge = 'replace')")
            con.execute("SET preserve_insertion_order = true")
        _supersede_same_file(ctx)
        return _commit(ctx, replace(ctx.delivery, state="loaded", note=None, **counts))
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _swap_into_store(ctx: Context) -> None:
    """The table's first delivery: the load table becomes raw.<table> itself instead of copying every row once
    more (60M rows: a 33 s copy vs ~4 s to number the rows and rename). Its columns are already in the order of
    the stored table (contract, lineage, extras) plus the bookkeeping columns dropped here."""
    con, load = ctx.con, ctx.load
    if ctx.row("x") != f"x.{WORK[0]}":  # before the delete below: rowids are file order
        con.execute(f"UPDATE {load} SET _source_row = {ctx.row(load)}")
    con.execute(f"DELETE FROM {load} WHERE _reason IS NOT NULL")
    for c in WORK[1:]:
        con.execute(f"ALTER TABLE {load} DROP COLUMN {c}")
    con.execute(f"DROP TABLE {ctx.store}")
    con.execute(f"ALTER TABLE {load} RENAME TO {ctx.store.split('.')[1]}")
    con.execute(f"CREATE OR REPLACE TABLE {load} AS SELECT 1 AS x")  # dropped by the caller, like a load table


# ------------------------------------------------------------------------------------------- snapshots
def merge_snapshot(ctx: Context) -> deliveries.Delivery:
    """The delivery is the complete current state of its feed: new rows and changed rows get a version from
    its time on, rows it no longer holds are closed; nothing is deleted. Held back whole when it would shrink
    the state by more than `max_shrink`, or re-sends a file shorter than before. The same file re-sent with other
    content on the day it was delivered is that delivery corrected: its versions are replaced, at its time."""
    con, store, feed, d = ctx.con, ctx.store, ctx.feed, ctx.delivery
    newest = deliveries.current(con, ctx.contract.name, feed.read.path)
    if newest and newest.delivered_at and d.delivered_at and newest.delivered_at > d.delivered_at \
            and newest.source_file != d.source_file:
        counts = _counts(ctx)
        note = f"older than the current snapshot {newest.source_file}: kept in the ledger, not applied"
        out = replace(d, state="superseded", note=note, rows_read=counts["rows_read"])
        deliveries.save(con, out)
        return out
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _current AS
                    SELECT * FROM {store} WHERE _feed = {sql_str(feed.read.path)} AND _valid_to IS NULL""")
    counts, before, missing, new = _diff(ctx)
    after = before - missing + new
    why = None
    if not ctx.accepted:
        why = _shorter_resend(ctx, counts["rows_read"])
        if why is None and before and after < before * (1 - feed.max_shrink):
            why = (f"it would shrink the current {ctx.contract.name} of this feed from {before:,} to {after:,} rows "
                   f"(-{1 - after / before:.1%}; max_shrink {feed.max_shrink:.0%})")
    if why:
        return _hold(ctx, counts, why, before, after)
    p = ctx.prev
    corrects = p if (p is not None and p.state == "loaded" and p.feed == feed.read.path and p.delivered_at
                     and d.delivered_at and p.delivered_at.date() == d.delivered_at.date()) else None
    con.execute("BEGIN TRANSACTION")
    try:
        at = d.delivered_at
        if corrects is not None:  # undo the delivery it corrects, then apply this one in its place and time
            at = corrects.delivered_at
            con.execute(f"DELETE FROM {store} WHERE _feed = ? AND _delivery_id = ?", [feed.read.path, corrects.delivery_id])
            con.execute(f"UPDATE {store} SET _valid_to = NULL WHERE _feed = ? AND _valid_to = ?",
                        [feed.read.path, at])
            con.execute(f"UPDATE {ctx.load} SET _merge = NULL, _reason = NULL, _kind = NULL "
                        "WHERE _kind = 'correction' OR _merge IS NOT NULL")
            counts, _, missing, new = _diff(ctx)
        first = not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {store} WHERE _feed = ? LIMIT 1)",
                                [feed.read.path]).fetchone()[0]
        since = None if first else at
        _audit(ctx)
        con.execute(sql("close_versions").format(store=store, key=key_expr(ctx.contract), load=ctx.load,
                                                 skey=key_expr(ctx.contract, "s")), [at, feed.read.path])
        _quarantine(ctx)
        history = f", {sql_str(feed.read.path)} AS _feed, ?::TIMESTAMP AS _valid_from, NULL::TIMESTAMP AS _valid_to"
        _insert(ctx, f"quarantine.{ctx.contract.name}_parked", "t._kind = 'orphan'", history, [since])
        _insert(ctx, store, "t._reason IS NULL AND (t._merge IS NULL OR t._merge = 'replace')", history, [since])
        older = [x.delivery_id for x in deliveries.of_table(con, ctx.contract.name)
                 if x.feed == feed.read.path and x.delivery_id != d.delivery_id and x.state in deliveries.LIVE]
        deliveries.set_state(con, older, "superseded", f"a newer snapshot arrived: {d.source_file}"
                             + (" (a corrected re-send of the same day)" if corrects else ""))
        if older:
            con.execute(f"DELETE FROM quarantine.{ctx.contract.name}_parked WHERE _delivery_id IN "
                        f"({', '.join('?' * len(older))})", older)
        return _commit(ctx, replace(d, state="loaded", note=None, rows_closed=missing, rows_before=before,
                                    rows_after=after, delivered_at=at, **counts))
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _diff(ctx: Context) -> tuple[dict, int, int, int]:
    """The delivery against the feed's current rows (view _current): matched rows marked, orphans flagged;
    returns the counts, the current rows before, the rows it no longer holds and its new rows."""
    con, load, key = ctx.con, ctx.load, key_expr(ctx.contract)
    _match(ctx, "_current")
    _apply_conflicts(ctx)
    _flag_orphans(ctx, "u._merge IS NULL")
    # Keys the delivery holds, good or not: a row refused today keeps its last good version open.
    before, missing, new = con.execute(f"""
        WITH present AS (SELECT DISTINCT {key} AS k FROM {load} WHERE coalesce(_kind, '') NOT IN ('summary', 'duplicate')
                         AND {key} IS NOT NULL)
        SELECT (SELECT count(*) FROM _current),
               (SELECT count(*) FROM _current c WHERE {key_expr(ctx.contract, 'c')} NOT IN (SELECT k FROM present)),
               (SELECT count(*) FROM {load} WHERE _reason IS NULL AND _merge IS NULL)""").fetchone()
    return _counts(ctx), before, missing, new


# ---------------------------------------------------------------------------------------- late arrivals
def release_orphans(con, contract: Table, mode: str, run_id: str, now: datetime) -> int:
    """Rows that waited for their customer go into raw once it has been delivered; their quarantine rows say
    when (released_at) and their delivery counts them (rows_released). Returns how many were released."""
    customers = _customers(con)
    if customers is None:
        return 0
    name, store = contract.name, storage(contract, mode)
    parked = f"quarantine.{name}_parked"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _release AS
        SELECT p.rowid AS id, p._delivery_id, p._source_file, p._source_row FROM {parked} p
        WHERE EXISTS (SELECT 1 FROM {customers} c WHERE c.customer_id = p.customer_id)""")
    n = con.execute("SELECT count(*) FROM _release").fetchone()[0]
    if not n:
        return 0
    con.execute("BEGIN TRANSACTION")
    try:
        key = key_expr(contract)
        absent = "" if mode == "snapshot" else \
            f" AND {key_expr(contract, 'p')} NOT IN (SELECT {key} FROM {store})"  # arrived meanwhile: kept
        con.execute(f"INSERT INTO {store} BY NAME SELECT p.* FROM {parked} p "
                    f"WHERE p.rowid IN (SELECT id FROM _release){absent}")
        con.execute(sql("release").format(table=name), [now, run_id])
        con.execute("""UPDATE raw.deliveries AS d SET rows_released = d.rows_released + r.n
                       FROM (SELECT _delivery_id, count(*) AS n FROM _release GROUP BY 1) r
                       WHERE d.delivery_id = r._delivery_id""")
        con.execute(f"DELETE FROM {parked} WHERE rowid IN (SELECT id FROM _release)")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n
