"""Load landing files as deliveries: `raw.<table>` (and its history), `quarantine.<table>`, `raw.deliveries`.

Per table, every file its feeds match in the landing folder is a delivery once it is settled (warehouse/landing.py).
Per delivery, in one DuckDB transaction: stage as text -> map onto the contract (renames, value maps, derived
columns, joins) -> type -> give every bad row its reasons -> merge by the feed's mode (warehouse/merge.py):

  snapshot  the file is the complete current state of its feed: changed rows get a new version, rows it no
            longer holds are closed, nothing is deleted; the volume guard holds back a delivery that would
            shrink the state by more than `max_shrink`, or a same-name re-send shorter than what it replaces;
  events    append-only facts merged by key: an exact re-send loads nothing, the same key with other values
            is a correction handled by `on_conflict`.

Rows whose customer has not been delivered yet wait in quarantine and are released when it arrives. Counts
reconcile per delivery: rows read = loaded + skipped + quarantined (docs/deliveries.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import duckdb

from warehouse import deliveries
from warehouse import merge as M
from warehouse.contract import LINEAGE, TABLES, Table
from warehouse.landing import OUTSIDE, LandingFile, matches, readiness
from warehouse.mapping import (
    flag_summary_rows,
    ident,
    mapping_sql,
    read_types,
    snake,
    sql_str,
    type_extras,
)
from warehouse.messages import first_line
from warehouse.readers import (
    ROW,
    FileRejected,
    file_format,
    open_direct_csv,
    prepare,
    row_map,
    scan_file,
    stage_file,
    take_rejects,
)
from warehouse.schema import ensure_raw_table
from warehouse.sources import Feed, SourceConfig

# The mapped, typed rows of the file being loaded, with their reasons. A table in the warehouse file, not a
# temp table: at 60M rows it is written compressed once instead of spilling, and dropped after the load.
LOAD = "raw._load"
WORK = {ROW, "_reason", "_kind", "_record", "_merge"}  # columns of the load table that are not the row's data


@dataclass
class FileReport:
    path: str  # relative to the landing folder
    status: str  # loaded | unchanged | rejected | held | waiting | changed | superseded
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_skipped: int = 0
    rows_released: int = 0
    error: str | None = None
    note: str | None = None
    delivery_id: str | None = None

    @classmethod
    def of(cls, d: deliveries.Delivery, status: str | None = None) -> FileReport:
        return cls(d.source_file, status or d.state, d.rows_read, d.rows_loaded, d.rows_quarantined, d.rows_skipped,
                   d.rows_released, d.note if d.state == "rejected" else None, d.note, d.delivery_id)

    @property
    def reconciles(self) -> bool:
        return self.status in ("held", "waiting", "changed", "rejected") or \
            self.rows_read == self.rows_loaded + self.rows_skipped + self.rows_quarantined


@dataclass
class TableReport:
    table: str
    files: list[FileReport] = field(default_factory=list)
    rows_in_table: int = 0
    rows_in_quarantine: int = 0
    released: int = 0
    archived: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.files if f.error]

    @property
    def held(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "held"]

    @property
    def waiting(self) -> list[FileReport]:
        return [f for f in self.files if f.status in ("waiting", "changed")]

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files if f.status in ("loaded", "superseded"))


def ingest_table(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    table: str,
    landing: Path | None,
    run_id: str = "",
    now: datetime | None = None,
    log=print,
    warn=None,
) -> TableReport:
    """Ingest every settled file of every feed of `table`; a rejected file is reported, not raised."""
    now = now or datetime.now()
    warn = warn or log
    contract = TABLES[table]
    feeds = source.feeds.get(table, ())
    mode = feeds[0].mode if feeds else contract.mode
    store = ensure_raw_table(con, contract, mode=mode)
    report = TableReport(table)
    present: set[str] = set()
    parent_check = bool(contract.references_customers and source.feeds.get("customers"))
    for feed in feeds if landing is not None else ():
        files, outside = matches(landing, feed.read.path, feed.ready_marker)
        report.files += [FileReport(p.relative_to(landing).as_posix(), "rejected", error=f"{p}: {OUTSIDE}")
                         for p in outside]
        present |= {p.relative_to(landing).as_posix() for p in files}
        if not files and not any(d.feed == feed.read.path for d in deliveries.of_table(con, table)):
            report.files.append(FileReport(feed.read.path, "rejected", error=(
                f"{landing / feed.read.path}: no file matches, and none ever did (tables.{table}.path in "
                f"{source.origin.name})")))
            continue
        try:
            inputs_fp = _stage_inputs(con, source, feed, landing)
        except FileRejected as e:  # a lookup file is missing or unreadable: this feed cannot be mapped
            report.files.extend(FileReport(p.relative_to(landing).as_posix(), "rejected", error=str(e)) for p in files)
            continue
        todo = []
        for path in files:
            lf = LandingFile.at(landing, path)
            prev = deliveries.latest(con, table, lf.rel)
            if prev and prev.fingerprint == inputs_fp and (prev.size, prev.mtime_ns) == (lf.size, lf.mtime_ns) \
                    and prev.state != "accepted":
                report.files.append(FileReport.of(prev, "unchanged" if prev.state != "held" else "held"))
                continue
            why = readiness(landing, path, feed.settle_seconds, feed.ready_marker, now.timestamp())
            if why:
                warn(f"{table}: {lf.rel} not read this run: {why}")
                report.files.append(FileReport(lf.rel, "waiting", note=why))
                continue
            todo.append((lf, prev))
        for lf, prev in sorted(todo, key=lambda x: (x[0].mtime_ns, x[0].rel)):
            try:
                fr = _deliver(con, contract, feed, store, lf, prev, inputs_fp, parent_check, run_id, now, log)
            except FileRejected as e:
                fr = _rejected(con, contract, feed, lf, inputs_fp, str(e), run_id, now)
            if fr.status == "changed":
                warn(f"{table}: {lf.rel} changed while it was read: skipped this run, read again once settled")
            report.files.append(fr)
    if parent_check:
        report.released = M.release_orphans(con, contract, mode, run_id, now)
        if report.released:
            log(f"{table}: {report.released:,} rows released from quarantine: their customer has arrived")
    if landing is not None:
        report.archived = deliveries.archive_missing(con, table, present, now)
    report.rows_in_table = con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
    report.rows_in_quarantine = con.execute(f"SELECT count(*) FROM quarantine.{table} WHERE released_at IS NULL"
                                            ).fetchone()[0]
    return report


def _stage_inputs(con, source: SourceConfig, feed: Feed, landing: Path) -> str:
    """Stage the lookup files a feed's joins/derivations name; their state is part of the fingerprint."""
    text = " ".join(feed.joins) + " " + " ".join(feed.derive.values())
    parts = [feed.fingerprint()]
    for name, spec in source.inputs.items():
        if not re.search(rf"\b{re.escape(name)}\b", text):
            continue
        found, outside = matches(landing, spec.path)
        if outside:
            raise FileRejected(outside[0], OUTSIDE)
        if len(found) != 1:
            raise FileRejected(landing / spec.path, f"input {name!r} must match exactly one file, found {len(found)}")
        staged = stage_file(con, found[0], spec, f"_in_{name}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {ident(staged.table)}")
        st = found[0].stat()
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _rejected(con, contract: Table, feed: Feed, lf: LandingFile, fingerprint: str, error: str, run_id: str,
              now: datetime) -> FileReport:
    """Record an unreadable file (nothing of it loaded), so the ledger shows it until it is replaced."""
    con.execute(f"DROP TABLE IF EXISTS {LOAD}")
    d = deliveries.Delivery(deliveries.delivery_id(contract.name, lf.rel, f"{lf.size}:{lf.mtime_ns}", fingerprint),
                            contract.name, feed.read.path, feed.mode, lf.rel, str(lf.path.resolve()), lf.size,
                            lf.mtime_ns, None, fingerprint, _delivered(lf), now, run_id, "rejected", error)
    deliveries.save(con, d)
    return FileReport(lf.rel, "rejected", error=error, delivery_id=d.delivery_id)


def _delivered(lf: LandingFile) -> datetime:
    return datetime.fromtimestamp(lf.mtime_ns / 1e9)


def _direct_candidate(feed: Feed, path: Path) -> bool:
    """CSV feeds without joins are read in the mapping query itself (no staging copy). Joins stay on the
    staged path, where the one-row-per-source-row rule can be checked."""
    return (file_format(path, feed.read) == "csv" and feed.read.sep != "whitespace" and not feed.joins
            and ROW not in " ".join(feed.derive.values()))


def _deliver(con, contract: Table, feed: Feed, store: str, lf: LandingFile, prev: deliveries.Delivery | None,
             fingerprint: str, parent_check: bool, run_id: str, now: datetime, log) -> FileReport:
    """Read one delivery into the load table, check it, and merge it by the feed's mode."""
    scan = scan_file(lf.path)
    same_content = prev is not None and prev.checksum == scan.checksum
    if same_content and prev.fingerprint == fingerprint and prev.state != "accepted":  # touched, not changed
        con.execute("UPDATE raw.deliveries SET mtime_ns = ?, size = ? WHERE delivery_id = ?",
                    [lf.mtime_ns, lf.size, prev.delivery_id])
        return FileReport.of(prev, "unchanged")
    delivery = deliveries.Delivery(
        deliveries.delivery_id(contract.name, lf.rel, scan.checksum, fingerprint), contract.name, feed.read.path,
        feed.mode, lf.rel, str(lf.path.resolve()), lf.size, lf.mtime_ns, scan.checksum, fingerprint,
        _delivered(lf), now, run_id)
    accepted = prev is not None and prev.state == "accepted" and same_content
    # A re-read of the same content (the mapping changed) or a same-name re-send replace the file's earlier
    # rows for events without a key of their own, which have no other identity.
    log(f"{contract.name}: reading {lf.rel}")
    try:
        parsed = _parse(con, contract, feed, lf, scan, now, delivery)
        # Any write since the file was found moves its mtime (and an append its size), so the stat is
        # enough: hashing the whole file again would read it a third time.
        if not lf.unchanged():
            return FileReport(lf.rel, "changed")
        ensure_raw_table(con, contract, _extras(con, contract), mode=feed.mode)
        M.flag_duplicates(con, LOAD, contract, parsed.row)
        ctx = M.Context(con, LOAD, contract, feed, store, delivery, parsed.row, parsed.malformed, run_id, now,
                        prev=prev if prev and prev.state != "rejected" else None, accepted=accepted,
                        parent_check=parent_check, keyless=parsed.keyless, mapped=parsed.mapped)
        result = M.merge_snapshot(ctx) if feed.mode == "snapshot" else M.merge_events(ctx)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {LOAD}; DROP TABLE IF EXISTS _stage; DROP VIEW IF EXISTS _mapped")
    if result.state == "held":
        log(f"{contract.name}: {lf.rel} held back: {result.note}")
    else:
        log(f"{contract.name}: {lf.rel}: {result.rows_read:,} read = {result.rows_loaded:,} loaded + "
            f"{result.rows_skipped:,} already held + {result.rows_quarantined:,} quarantined")
    return FileReport.of(result, "held" if result.state == "held" else result.state)


@dataclass
class Parsed:
    malformed: list[tuple[int, str, str]]
    row: Callable[[str], str]
    keyless: bool
    mapped: set[str]  # the columns the file fills (others are NULL because it does not carry them)


def _parse(con, contract: Table, feed: Feed, lf: LandingFile, scan, now: datetime,
           delivery: deliveries.Delivery) -> Parsed:
    """The load table: mapped, typed rows with their reasons, lineage in place, the key filled."""
    path, rel = lf.path, lf.rel
    if lf.size == 0:
        raise FileRejected(path, "file is empty (0 bytes)")
    read = prepare(path, feed.read) if file_format(path, feed.read) == "csv" else feed.read
    feed = replace(feed, read=read)
    delivered = delivery.delivered_at.date() if delivery.delivered_at else None
    csvf = open_direct_csv(con, path, read) if _direct_candidate(feed, path) else None
    if csvf is not None:
        columns = csvf.columns
        malformed, derived, row, source_of = _type_direct(con, contract, feed, csvf, path, rel, now, scan.lines,
                                                          delivered, delivery.delivery_id)
    else:
        staged = stage_file(con, path, read, "_stage", lines=scan.lines, sheet_hint=contract.name)
        malformed, columns = staged.malformed, staged.columns
        try:
            sel, source_of, derived = mapping_sql(con, contract, feed, staged.relation(), staged.columns, {},
                                          f"src.{ROW}", path, now, delivered)
        except FileRejected as e:
            raise FileRejected(path, f"{e.problem}; {staged.note}" if staged.note else e.problem) from e
        _create_typed(con, _with_lineage(sel, contract, rel, now, delivery.delivery_id, staged_rows=True), contract,
                      path)
        row = _stored_row
        n_mapped = con.execute(f"SELECT count(*) FROM {LOAD}").fetchone()[0]
        if n_mapped != staged.rows:
            raise FileRejected(path, f"joins of tables.{contract.name} give {n_mapped} rows for {staged.rows} "
                               "source rows; each join must match at most one row")
    type_extras(con, LOAD, contract, feed, derived, WORK | {c.name for c in LINEAGE})
    keyless = _needs_generated_key(contract, feed, columns)
    flag_summary_rows(con, LOAD, contract, row, columns[0] if columns else None, keyed=not keyless)
    if keyless:
        _fill_generated_key(con, contract, row)
    mapped = set(source_of.values()) | ({contract.generated_key} if keyless else set())
    if not scan.terminated and feed.last_line == "quarantine" and file_format(path, read) == "csv":
        _flag_truncated(con, row, malformed)
    return Parsed(malformed, row, keyless, mapped)


def _with_lineage(sel: str, contract: Table, rel: str, now: datetime, delivery_id: str,
                  staged_rows: bool = False) -> str:
    """The mapping's rows with the lineage columns in place, in the column order of the raw tables (contract,
    lineage, the file's extra columns), so that the load table can become raw.<table> itself (merge.py)."""
    names = ", ".join(sql_str(c.name) for c in contract.columns)
    row = ROW if staged_rows else "NULL::BIGINT"
    return (f"SELECT COLUMNS(lambda c: c IN ({names})), {sql_str(rel)} AS _source_file, {row} AS _source_row, "
            f"TIMESTAMP '{now.isoformat(' ')}' AS _ingested_at, {sql_str(delivery_id)} AS _delivery_id, "
            f"COLUMNS(lambda c: c NOT IN ({names}, '{ROW}')), NULL::VARCHAR AS _merge FROM ({sel})")


def _stored_row(alias: str) -> str:
    return f"{alias}.{ROW}"


def _create_typed(con, sel: str, contract: Table, path: Path) -> None:
    try:
        con.execute(f"CREATE OR REPLACE TABLE {LOAD} AS {sel}")
    except duckdb.Error as e:  # a derive expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) fails on this file: "
                           f"{first_line(e)}") from e


def _type_direct(con, contract: Table, feed: Feed, csvf, path: Path, rel: str, now: datetime,
                 lines: int, delivered: date | None, delivery_id: str
                 ) -> tuple[list[tuple[int, str, str]], set[str], Callable[[str], str], dict[str, str]]:
    """Read, map and type a CSV in one query; rows the reader rejects become quarantine rows."""
    try:
        types = read_types(contract, feed, csvf.columns)
        sel, source_of, derived = mapping_sql(con, contract, feed, csvf.relation(types), csvf.columns, types, None,
                                              path, now, delivered)
        _create_typed(con, _with_lineage(sel, contract, rel, now, delivery_id), contract, path)
        rejects = take_rejects(con)
    finally:
        csvf.close()
    n_good = con.execute(f"SELECT count(*) FROM {LOAD}").fetchone()[0]
    if any("UNICODE" in f"{r[2]} {r[3]}".upper() for r in rejects):
        line = next(r[0] for r in rejects if "UNICODE" in f"{r[2]} {r[3]}".upper())
        raise FileRejected(path, f"is not valid {feed.read.encoding} text (line {line}); set `encoding:` in the "
                           "source config")
    if rejects and n_good == 0:
        raise FileRejected(path, f"no line could be parsed with sep={feed.read.sep!r}: {first_line(rejects[0][3])}")
    if not rejects and n_good == 0:
        raise FileRejected(path, "has a header but no data rows")
    # Physical row of the k-th row read: k + header + skipped lines + rejected or blank lines before it.
    offset = feed.read.skip_rows + (1 if feed.read.header else 0)
    rows = row_map(path, feed.read, lines, offset, n_good, rejects)
    if rows.pairs:  # rare: store each row's number, shifted past the skipped lines before it
        # (the load table's _source_row column, NULL so far, holds them)
        con.execute('CREATE OR REPLACE TEMP TABLE "_rej" (j BIGINT, g BIGINT)')
        con.executemany('INSERT INTO "_rej" VALUES (?, ?)', rows.pairs)
        con.execute(f"""UPDATE {LOAD} AS u SET {ROW} = m.r FROM (
            SELECT t.rowid AS id, t.rowid + 1 + {offset} + coalesce(r.j, 0) AS r
            FROM {LOAD} t ASOF LEFT JOIN "_rej" r ON t.rowid + 1 > r.g) m WHERE u.rowid = m.id""")
        con.execute('DROP TABLE "_rej"')
        row = _stored_row
    else:  # the common case: the row number follows from the table's own row order, nothing to store
        def row(alias: str) -> str:
            return f"({alias}.rowid + {1 + offset})"
    by_line: dict[int, list] = {}
    for line, column, etype, msg, raw in rejects:
        by_line.setdefault(rows.physical(int(line)), [_line_record(raw or "", csvf.columns, feed)]).append(
            _reject_reason(column, etype, msg, source_of, raw or ""))
    return [(line, "; ".join(dict.fromkeys(v[1:])), v[0]) for line, v in by_line.items()], derived, row, source_of


def _line_record(raw: str, columns: list[str], feed: Feed) -> str:
    """A rejected line as a JSON object of its fields, like other quarantine records; the raw line when its
    fields do not match the header."""
    try:
        fields = next(csv.reader([raw.rstrip("\r\n")], delimiter=feed.read.sep, quotechar=feed.read.quote or '"'), [])
    except csv.Error:
        return raw
    if len(fields) != len(columns):
        return raw
    return json.dumps(dict(zip(columns, fields, strict=True)), separators=(",", ":"), ensure_ascii=False)


TABLES_HUMAN = {"DOUBLE": "number", "TIMESTAMP": "date-time", "BIGINT": "whole number", "DATE": "date"}


def _reject_reason(column: str | None, etype: str, msg: str, source_of: dict[str, str], raw: str) -> str:
    """A line DuckDB's reader refused, in the words of the other reasons (never the value: see mapping.py)."""
    from warehouse.mapping import SUMMARY

    if re.search(SUMMARY, raw.strip(), re.IGNORECASE):
        return "summary row: a total or footer line of the export, not data"
    m = re.search(r"Could not convert string .* to '(\w+)'", msg or "")
    if etype == "CAST" and m:
        target = source_of.get(column, snake(column or ""))
        return f"{target}: not a {TABLES_HUMAN.get(m.group(1), m.group(1).lower())}"
    return f"malformed line: {first_line(msg or etype)}"


def _extras(con, contract: Table) -> dict[str, str]:
    names = {c.name for c in (*contract.columns, *LINEAGE)} | WORK
    return {c: t for c, t in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {LOAD})").fetchall()
            if c not in names}


def _needs_generated_key(contract: Table, feed: Feed, columns: list[str]) -> bool:
    key = contract.generated_key
    return bool(key) and key not in feed.derive and key not in feed.rename.values() and \
        key.lower() not in {c.lower() for c in columns}


def _fill_generated_key(con, contract: Table, row: Callable[[str], str]) -> None:
    """A source without its own key (a purchase log): the key is the row's content (a hash of every other
    value) and its occurrence among identical rows of the file, so the same file sent again under another name
    loads nothing twice."""
    key = contract.generated_key
    cols = [c for c, _ in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {LOAD})").fetchall()
            if c != key and c not in WORK and c not in {x.name for x in LINEAGE}]
    content = "concat_ws(chr(31), " + ", ".join(f"coalesce({ident(c)}::VARCHAR, chr(0))" for c in cols) + ")"
    con.execute(f"""
        UPDATE {LOAD} AS u SET {ident(key)} = g.k
        FROM (SELECT id, h || '-' || row_number() OVER (PARTITION BY h ORDER BY r) AS k
              FROM (SELECT t.rowid AS id, {row('t')} AS r, substr(md5({content}), 1, 16) AS h FROM {LOAD} t)) g
        WHERE u.rowid = g.id""")


def _flag_truncated(con, row: Callable[[str], str], malformed: list[tuple[int, str, str]]) -> None:
    """The file's last line has no line break: a copy cut off mid-row looks exactly like that, so its last
    record is kept out (`last_line: accept` in the source config takes it)."""
    why = "possibly truncated: the file ends without a line break after this row"
    last = con.execute(f"SELECT max({row('t')}) FROM {LOAD} t").fetchone()[0]
    tail = max(malformed, default=None)
    if tail is not None and (last is None or tail[0] > last):  # the cut line did not even split right
        malformed[malformed.index(tail)] = (tail[0], f"{why}; {tail[1]}", tail[2])
        return
    if last is not None:
        con.execute(f"""UPDATE {LOAD} AS t SET _reason = concat_ws('; ', ?, _reason), _kind = 'truncated'
                        WHERE {row('t')} = ?""", [why, last])
