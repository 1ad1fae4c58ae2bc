"""Load landing files into `raw.<table>`, rejected rows into `quarantine.<table>`, and keep a file ledger.

Per file, in one DuckDB transaction: stage as text -> map onto the contract (renames, value maps, derived
columns, joins) -> type -> give every bad row its reasons ("column: problem") -> replace that file's earlier
rows. Counts reconcile exactly: rows read = rows loaded + rows quarantined.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from warehouse import failpoints
from warehouse.contract import BOOL, DATE, INT, LINEAGE, NUM, TABLES, TEXT, TS, Table
from warehouse.db import has_rows
from warehouse.readers import (
    ROW,
    FileRejected,
    file_format,
    open_direct_csv,
    scan_file,
    skip_table,
    skipped_lines,
    stage_file,
    take_rejects,
)
from warehouse.schema import ensure_raw_table
from warehouse.sources import Feed, SourceConfig

# Extra columns named like identifiers stay text even when their values look numeric.
ID_LIKE = re.compile(r"(^|_)(id|ids|key|code|number|no|nr|zip|postcode|account|iban|phone)$")
HUMAN = {INT: "whole number", NUM: "number", DATE: "date", TS: "date-time", BOOL: "yes/no value", TEXT: "text"}


@dataclass
class FileReport:
    path: str  # relative to the landing folder
    status: str  # loaded | unchanged | rejected
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    error: str | None = None


@dataclass
class TableReport:
    table: str
    files: list[FileReport] = field(default_factory=list)
    rows_in_table: int = 0
    rows_in_quarantine: int = 0

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.files if f.error]

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)


def sql_str(v: object) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    return s if s and not s[0].isdigit() else f"c_{s}"


def ingest_table(
    con: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    table: str,
    landing: Path,
    run_id: str = "",
    now: datetime | None = None,
    log=print,
) -> TableReport:
    """Ingest every file of every feed of `table`; a rejected file is reported, not raised."""
    now = now or datetime.now()
    contract = TABLES[table]
    ensure_raw_table(con, contract)
    report = TableReport(table)
    for feed in source.feeds.get(table, ()):
        files = sorted(p for p in landing.glob(feed.read.path) if p.is_file())
        if not files:
            report.files.append(FileReport(feed.read.path, "rejected", error=(
                f"{landing / feed.read.path}: no file matches (tables.{table}.path in {source.origin.name})")))
            continue
        try:
            inputs_fp = _stage_inputs(con, source, feed, landing)
        except FileRejected as e:  # a lookup file is missing or unreadable: this feed cannot be mapped
            report.files.extend(FileReport(p.relative_to(landing).as_posix(), "rejected", error=str(e)) for p in files)
            continue
        for path in files:
            rel = path.relative_to(landing).as_posix()
            try:
                fr = _ingest_file(con, contract, feed, path, rel, inputs_fp, run_id, now, log)
            except FileRejected as e:
                fr = FileReport(rel, "rejected", error=str(e))
            report.files.append(fr)
    for t in ("raw", "quarantine"):
        n = con.execute(f"SELECT count(*) FROM {t}.{table}").fetchone()[0]
        setattr(report, "rows_in_table" if t == "raw" else "rows_in_quarantine", n)
    return report


def _stage_inputs(con, source: SourceConfig, feed: Feed, landing: Path) -> str:
    """Stage the lookup files a feed's joins/derivations name; their state is part of the fingerprint."""
    text = " ".join(feed.joins) + " " + " ".join(feed.derive.values())
    parts = [feed.fingerprint()]
    for name, spec in source.inputs.items():
        if not re.search(rf"\b{re.escape(name)}\b", text):
            continue
        matches = sorted(landing.glob(spec.path))
        if len(matches) != 1:
            raise FileRejected(landing / spec.path, f"input {name!r} must match exactly one file, found {len(matches)}")
        staged = stage_file(con, matches[0], spec, f"_in_{name}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {ident(staged.table)}")
        st = matches[0].stat()
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _direct_candidate(feed: Feed, path: Path) -> bool:
    """CSV feeds without joins are read in the mapping query itself (no staging copy). Joins stay on the
    staged path, where the one-row-per-source-row rule can be checked."""
    return (file_format(path, feed.read) == "csv" and feed.read.sep != "whitespace" and not feed.joins
            and ROW not in " ".join(feed.derive.values()))


def _needs_generated_key(contract: Table, feed: Feed, columns: list[str]) -> bool:
    key = contract.generated_key
    return bool(key) and key not in feed.derive and key not in feed.rename.values() and \
        key.lower() not in {c.lower() for c in columns}


def _read_types(contract: Table, feed: Feed, columns: list[str]) -> dict[str, str]:
    """Source columns DuckDB's reader can type itself: mapped straight onto a number or date column, with
    no value map, no date format and no derivation reading them. Everything else is read as text."""
    refs = " ".join(feed.derive.values())
    by_lower = {c.lower(): c for c in columns}
    renamed = {v: k for k, v in feed.rename.items()}
    types = {}
    for c in contract.columns:
        s = renamed.get(c.name) or (by_lower.get(c.name.lower()) if c.name not in feed.derive else None)
        if (s is None or c.name in feed.derive or c.name in feed.value_maps or c.name in feed.dates
                or re.search(rf"\b{re.escape(s)}\b", refs)):
            continue
        if c.type in (NUM, INT) and not feed.read.thousands:
            types[s] = "DOUBLE"
        elif c.type in (DATE, TS):
            types[s] = "TIMESTAMP"
    return types


def _ingest_file(con, contract: Table, feed: Feed, path: Path, rel: str, fingerprint: str,
                 run_id: str, now: datetime, log) -> FileReport:
    st = path.stat()
    prev = con.execute(
        "SELECT size, mtime_ns, checksum, fingerprint, rows_read, rows_loaded, rows_quarantined "
        "FROM raw.ingest_ledger WHERE table_name = ? AND source_file = ?", [contract.name, rel],
    ).fetchone()
    if prev and prev[3] == fingerprint and (prev[0], prev[1]) == (st.st_size, st.st_mtime_ns):
        return FileReport(rel, "unchanged", prev[4], prev[5], prev[6])
    checksum, lines = scan_file(path)
    if prev and prev[3] == fingerprint and prev[2] == checksum:  # touched, not changed
        con.execute("UPDATE raw.ingest_ledger SET mtime_ns = ? WHERE table_name = ? AND source_file = ?",
                    [st.st_mtime_ns, contract.name, rel])
        return FileReport(rel, "unchanged", prev[4], prev[5], prev[6])
    log(f"{contract.name}: reading {rel}")
    csv = open_direct_csv(con, path, feed.read) if _direct_candidate(feed, path) else None
    if csv is not None and _needs_generated_key(contract, feed, csv.columns):
        csv.close()  # the key is made from the row number, which only the staged path has up front
        csv = None
    try:
        if csv is not None:
            malformed, derived, row = _type_direct(con, contract, feed, csv, path, rel, now, lines)
        else:
            staged = stage_file(con, path, feed.read, "_stage", lines=lines, sheet_hint=contract.name)
            malformed = staged.malformed
            try:
                sel, _, derived = _mapping(con, contract, feed, staged.relation(), staged.columns, {},
                                           f"src.{ROW}", path, rel, now)
            except FileRejected as e:
                raise FileRejected(path, f"{e.problem}; {staged.note}" if staged.note else e.problem) from e
            _create_typed(con, sel, contract, path)
            row = _stored_row
            n_mapped = con.execute(f"SELECT count(*) FROM {LOAD}").fetchone()[0]
            if n_mapped != staged.rows:
                raise FileRejected(path, f"joins of tables.{contract.name} give {n_mapped} rows for {staged.rows} "
                                   "source rows; each join must match at most one row")
        _type_extras(con, contract, feed, derived)
        # rows of this table loaded from other files: checked against for duplicates, and when there are
        # none the load table can become the raw table itself (see _write)
        others = con.execute(f"SELECT count(*) FROM raw.{contract.name} WHERE _source_file <> ?", [rel]).fetchone()[0]
        _flag_duplicates(con, contract, rel, row, others)
        _flag_orphans(con, contract)
        return _write(con, contract, path, rel, st, checksum, fingerprint, malformed, row, others, run_id, now,
                      log)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {LOAD}; DROP TABLE IF EXISTS _stage; DROP VIEW IF EXISTS _mapped")


# The mapped, typed rows of the file being loaded, with their reasons. A table in the warehouse file, not a
# temp table: at 60M rows it is written compressed once instead of spilling, and dropped after the load.
LOAD = "raw._load"


def _stored_row(alias: str) -> str:
    return f"{alias}.{ROW}"


def _create_typed(con, sel: str, contract: Table, path: Path) -> None:
    try:
        con.execute(f"CREATE OR REPLACE TABLE {LOAD} AS {sel}")
    except duckdb.Error as e:  # a derive expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) fails on this file: "
                           f"{str(e).splitlines()[0]}") from e


def _type_direct(con, contract: Table, feed: Feed, csv, path: Path, rel: str, now: datetime,
                 lines: int) -> tuple[list[tuple[int, str, str]], set[str], Callable[[str], str]]:
    """Read, map and type a CSV in one query; rows the reader rejects become quarantine rows."""
    try:
        types = _read_types(contract, feed, csv.columns)
        sel, source_of, derived = _mapping(con, contract, feed, csv.relation(types), csv.columns, types, None,
                                           path, rel, now)
        # Lineage columns in place already (constants cost nothing to store), should the load table become
        # raw.<table> itself (see _write); _source_row is filled in then.
        # Same column order as ensure_raw_table: contract, lineage, then the file's extra columns.
        sel = (f"SELECT COLUMNS(lambda c: c IN ({', '.join(sql_str(c.name) for c in contract.columns)})), "
               f"{sql_str(rel)} AS _source_file, NULL::BIGINT AS _source_row, "
               f"TIMESTAMP '{now.isoformat(' ')}' AS _ingested_at, "
               f"COLUMNS(lambda c: c NOT IN ({', '.join(sql_str(c.name) for c in contract.columns)})) FROM ({sel})")
        _create_typed(con, sel, contract, path)
        rejects = take_rejects(con)
    finally:
        csv.close()
    n_good = con.execute(f"SELECT count(*) FROM {LOAD}").fetchone()[0]
    if any("UNICODE" in f"{r[2]} {r[3]}".upper() for r in rejects):
        line = next(r[0] for r in rejects if "UNICODE" in f"{r[2]} {r[3]}".upper())
        raise FileRejected(path, f"is not valid {feed.read.encoding} text (line {line}); set `encoding:` in the "
                           "source config")
    if rejects and n_good == 0:
        raise FileRejected(path, f"no line could be parsed with sep={feed.read.sep!r}: {rejects[0][3].splitlines()[0]}")
    if not rejects and n_good == 0:
        raise FileRejected(path, "has a header but no data rows")
    # Physical row of the k-th row read: k + header + skipped lines + rejected or blank lines before it.
    offset = feed.read.skip_rows + (1 if feed.read.header else 0)
    skipped = skipped_lines(path, lines, offset, n_good, rejects)
    if skipped:  # rare: store each row's number, shifted past the skipped lines before it
        # (the load table's _source_row column, NULL so far, holds them)
        con.execute('CREATE OR REPLACE TEMP TABLE "_rej" (j BIGINT, g BIGINT)')
        con.executemany('INSERT INTO "_rej" VALUES (?, ?)', skip_table(skipped, offset))
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
        by_line.setdefault(int(line), [_line_record(raw or "", csv.columns, feed)]).append(
            _reject_reason(column, etype, msg, source_of))
    return [(line, "; ".join(dict.fromkeys(v[1:])), v[0]) for line, v in by_line.items()], derived, row


def _line_record(raw: str, columns: list[str], feed: Feed) -> str:
    """A rejected line as a JSON object of its fields, like other quarantine records; the raw line when its
    fields do not match the header."""
    import csv
    import json

    try:
        fields = next(csv.reader([raw.rstrip("\r\n")], delimiter=feed.read.sep, quotechar=feed.read.quote or '"'), [])
    except csv.Error:
        return raw
    if len(fields) != len(columns):
        return raw
    return json.dumps(dict(zip(columns, fields, strict=True)), separators=(",", ":"), ensure_ascii=False)


def _reason_columns(reason: str) -> list[str]:
    if reason.startswith("malformed line"):
        return ["(line)"]
    return list(dict.fromkeys(re.findall(r"(?:^|; )([A-Za-z0-9_]+):", reason)))


def _reject_reason(column: str | None, etype: str, msg: str, source_of: dict[str, str]) -> str:
    m = re.search(r'Could not convert string "(.*)" to \'(\w+)', msg or "")
    if etype == "CAST" and m:
        target = source_of.get(column, snake(column or ""))
        kind = TABLES_HUMAN.get(m.group(2), m.group(2).lower())
        return f"{target}: '{m.group(1)[:60]}' is not a {kind}"
    return f"malformed line: {(msg or etype).splitlines()[0]}"


TABLES_HUMAN = {"DOUBLE": "number", "TIMESTAMP": "date-time", "BIGINT": "whole number", "DATE": "date"}


def _type_extras(con, contract: Table, feed: Feed, derived: set[str]) -> None:
    """Extra columns arrive as text; those whose every value is a number become DOUBLE (ids stay text)."""
    names = {c.name for c in (*contract.columns, *LINEAGE)} | {ROW, "_reason", "_record"}
    extras = [c for c, t in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {LOAD})").fetchall()
              if c not in names and t == "VARCHAR" and not ID_LIKE.search(c)]
    if not extras:
        return
    number = {n: _typed(ident(n), NUM, feed, n, from_file=n not in derived) for n in extras}
    checks = ", ".join(
        f"count({ident(n)}) = count({number[n]}) AND count({ident(n)}) > 0"
        f" AND NOT bool_or(regexp_matches({ident(n)}, '^0[0-9]'))"  # leading zeros: an identifier
        for n in extras
    )
    flags = con.execute(f"SELECT {checks} FROM {LOAD}").fetchone()
    for n, numeric in zip(extras, flags, strict=True):
        if numeric:
            con.execute(f"ALTER TABLE {LOAD} ALTER {ident(n)} TYPE DOUBLE USING {number[n]}")


def _write(con, contract: Table, path: Path, rel: str, st, checksum: str, fingerprint: str,
           malformed: list[tuple[int, str, str]], row: Callable[[str], str], others: int, run_id: str,
           now: datetime, log) -> FileReport:
    """Replace this file's rows in raw and quarantine, and its ledger row, in one transaction."""
    lineage = {c.name for c in LINEAGE}
    load_cols = [r[0] for r in con.execute(f"DESCRIBE {LOAD}").fetchall()]
    cols = [c for c in load_cols if c not in ("_reason", "_record", ROW) and c not in lineage]
    # The only file of its table, read directly (the big-file case): the load table itself becomes
    # raw.<table> instead of copying every row once more (60M rows: a 33 s copy vs ~4 s to number the rows
    # and rename).
    swap = lineage <= set(load_cols) and not others
    con.execute("BEGIN TRANSACTION")
    try:
        if not swap:
            ensure_raw_table(con, contract, {c: t for c, t in con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE {LOAD})").fetchall() if c in cols})
            con.execute(f"DELETE FROM raw.{contract.name} WHERE _source_file = ?", [rel])
            col_list = ", ".join(ident(c) for c in cols)
            # Row order in raw does not matter (each row carries _source_row): let DuckDB write in parallel.
            con.execute("SET preserve_insertion_order = false")
            con.execute(
                f"INSERT INTO raw.{contract.name} BY NAME SELECT {col_list}, {sql_str(rel)} AS _source_file, "
                f"{row('t')} AS _source_row, ?::TIMESTAMP AS _ingested_at FROM {LOAD} t WHERE t._reason IS NULL",
                [now])
            con.execute("SET preserve_insertion_order = true")
        con.execute(f"DELETE FROM quarantine.{contract.name} WHERE _source_file = ?", [rel])
        key_list = "[" + ", ".join(sql_str(k) for k in contract.key) + "]::VARCHAR[]"
        as_struct = ", ".join(f"{sql_str(c)}: t.{ident(c)}" for c in cols)  # rows flagged after mapping
        con.execute(
            f"""INSERT INTO quarantine.{contract.name}
            SELECT {sql_str(rel)}, {row('t')}, t._reason,
                   CASE WHEN t._reason LIKE 'duplicate key%' THEN {key_list}
                        ELSE list_distinct(regexp_extract_all(t._reason, '(?:^|; )([A-Za-z0-9_]+):', 1)) END,
                   coalesce(t._record, to_json({{{as_struct}}})::VARCHAR), ?::TIMESTAMP, ?
            FROM {LOAD} t WHERE t._reason IS NOT NULL ORDER BY 2""",
            [now, run_id],
        )
        if malformed:
            con.executemany(
                f"INSERT INTO quarantine.{contract.name} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(rel, row, reason, _reason_columns(reason), raw, now, run_id) for row, reason, raw in malformed],
            )
        loaded, quarantined = con.execute(
            f"SELECT count(*) FILTER (WHERE _reason IS NULL), count(*) FILTER (WHERE _reason IS NOT NULL) FROM {LOAD}"
        ).fetchone()
        quarantined += len(malformed)
        read = loaded + quarantined
        if swap:
            _swap_into_raw(con, contract, rel, row, now)
        con.execute("DELETE FROM raw.ingest_ledger WHERE table_name = ? AND source_file = ?", [contract.name, rel])
        con.execute(
            "INSERT INTO raw.ingest_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [contract.name, rel, str(path.resolve()), st.st_size, st.st_mtime_ns, checksum, fingerprint,
             read, loaded, quarantined, now],
        )
        failpoints.reached("ingest")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    log(f"{contract.name}: {rel}: {read:,} read = {loaded:,} loaded + {quarantined:,} quarantined")
    return FileReport(rel, "loaded", read, loaded, quarantined)


def _swap_into_raw(con, contract: Table, rel: str, row: Callable[[str], str], now: datetime) -> None:
    """Turn the load table (its rejected rows already copied to quarantine) into raw.<table>: its columns
    are already in the order ensure_raw_table gives them (contract, lineage, extras) plus _reason/_record."""
    if row is not _stored_row:  # before the delete below: rowids are file order
        con.execute(f"UPDATE {LOAD} SET _source_row = {row(LOAD)}")
    con.execute(f"DELETE FROM {LOAD} WHERE _reason IS NOT NULL")
    con.execute(f"ALTER TABLE {LOAD} DROP COLUMN _reason")
    con.execute(f"ALTER TABLE {LOAD} DROP COLUMN _record")
    con.execute(f"DROP TABLE raw.{contract.name}")
    con.execute(f"ALTER TABLE {LOAD} RENAME TO {contract.name}")


def _text(expr: str, feed: Feed, col: str) -> str:
    """Source expression -> trimmed text with the feed's NA values and value map applied."""
    t = f"nullif(trim(CAST(({expr}) AS VARCHAR)), '')"
    others = [v for v in feed.read.na_values if v != ""]
    if others:
        t = f"CASE WHEN {t} IN ({', '.join(sql_str(v) for v in others)}) THEN NULL ELSE {t} END"
    vmap = feed.value_maps.get(col)
    if vmap:
        whens = " ".join(f"WHEN {sql_str(k)} THEN {'NULL' if v is None else sql_str(v)}" for k, v in vmap.items())
        t = f"(CASE ({t}) {whens} ELSE ({t}) END)"
    return t


def _typed(t: str, kind: str, feed: Feed, col: str, from_file: bool = True) -> str:
    """Text -> the contract type. The file's number format applies only to values read from the file:
    a derived expression already yields plain numbers."""
    num = t
    if from_file and feed.read.thousands:
        num = f"replace({num}, {sql_str(feed.read.thousands)}, '')"
    if from_file and feed.read.decimal != ".":
        num = f"replace({num}, {sql_str(feed.read.decimal)}, '.')"
    fmts = feed.dates.get(col)
    if kind == NUM:
        return f"TRY_CAST({num} AS DOUBLE)"
    if kind == INT:
        return f"(CASE WHEN TRY_CAST({num} AS DOUBLE) = floor(TRY_CAST({num} AS DOUBLE)) THEN TRY_CAST({num} AS DOUBLE)::BIGINT END)"
    if kind in (DATE, TS):
        if fmts:
            fl = "[" + ", ".join(sql_str(f) for f in fmts) + "]"
            v = f"try_strptime({t}, {fl})"
        else:
            v = f"coalesce(TRY_CAST({t} AS TIMESTAMP), TRY_CAST(TRY_CAST({t} AS DATE) AS TIMESTAMP))"
        return f"CAST({v} AS {kind})"
    if kind == BOOL:
        return (f"(CASE WHEN lower({t}) IN ('1', 'true', 't', 'yes', 'y') THEN true "
                f"WHEN lower({t}) IN ('0', 'false', 'f', 'no', 'n') THEN false END)")
    return t


def _from_typed(t: str, kind: str) -> str:
    """A value DuckDB's reader already parsed (DOUBLE or TIMESTAMP) -> the contract type."""
    if kind == INT:
        return f"(CASE WHEN {t} = floor({t}) THEN {t}::BIGINT END)"
    return f"CAST({t} AS {kind})"


def _mapping(con, contract: Table, feed: Feed, relation: str, src_cols: list[str], src_types: dict[str, str],
             row_sql: str | None, path: Path, rel: str, now: datetime) -> tuple[str, dict[str, str], set[str]]:
    """The SELECT that maps a source relation onto the contract: typed columns, extra columns (as text),
    `_reason` ('column: problem; ...' or NULL) and `_record` (the source row as JSON, for bad rows only).
    Also returns which target column each source column feeds (to word the reader's rejects) and which
    targets are derived numbers (the file's number format does not apply to them)."""
    by_lower = {c.lower(): c for c in src_cols}
    renamed = {v: k for k, v in feed.rename.items()}
    missing_renames = [k for k in feed.rename if k not in src_cols]
    if missing_renames:
        raise FileRejected(path, f"columns {missing_renames} named in `rename` are not in the file; "
                           f"the file has {src_cols}" + _sep_hint(src_cols, feed))
    used: dict[str, str] = {}  # source column -> target column it feeds directly
    exprs: dict[str, str] = {}  # contract column -> text (or reader-typed) expression
    for c in contract.columns:
        if c.name in feed.derive:
            exprs[c.name] = _text(feed.derive[c.name], feed, c.name)
            continue
        same = by_lower.get(c.name.lower())
        s = renamed.get(c.name) or (same if same not in feed.rename else None)
        if s is not None:
            used[s] = c.name
            exprs[c.name] = f"src.{ident(s)}" if s in src_types else _text(f"src.{ident(s)}", feed, c.name)
        elif c.name == contract.generated_key and row_sql:
            exprs[c.name] = f"{sql_str(rel + ':')} || {row_sql}"
        elif c.required:
            raise FileRejected(path, f"required column {c.name!r} of {contract.name} is missing: not in the "
                               f"file (columns {src_cols}) and not mapped by rename/derive" + _sep_hint(src_cols, feed))
    contract_names = {c.name for c in contract.columns}
    extras: dict[str, str] = {}
    if feed.keep_extra:
        for s in src_cols:
            name = snake(feed.rename.get(s, s))
            if s in used or s in feed.drop or name in contract_names or name.startswith("_"):
                continue
            extras[name] = _text(f"src.{ident(s)}", feed, name)
            used[s] = name
        for name, expr in feed.derive.items():
            if name not in contract_names:
                extras[snake(name)] = _text(expr, feed, name)
    joins = " ".join(feed.joins)
    # A derived value that is already a number (SQL arithmetic) must not get the file's number format;
    # one that is text (e.g. `src.PAY`) is the file's text and does.
    derived: set[str] = set()
    if feed.derive:
        probe = ", ".join(f"({e}) AS {ident(n)}" for n, e in feed.derive.items())
        try:
            types = con.execute(f"DESCRIBE SELECT {probe} FROM {relation} AS src {joins}").fetchall()
        except duckdb.Error as e:
            raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) does not fit this file: "
                               f"{str(e).splitlines()[0]}") from e
        derived = {(snake(n) if n not in contract_names else n) for n, t, *_ in types if t != "VARCHAR"}
    row = f"{row_sql} AS {ROW}, " if row_sql else ""
    m_cols = ", ".join(f"{e} AS {ident('t_' + n)}" for n, e in {**exprs, **extras}.items())
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _mapped AS SELECT {row}{m_cols}, src AS _src "
                    f"FROM {relation} AS src {joins}")
    except duckdb.Error as e:  # a derive/joins expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) does not fit this file: "
                           f"{str(e).splitlines()[0]}") from e

    reader_typed = {c for s, c in used.items() if s in src_types}
    typed, reasons = [], []
    for c in contract.columns:
        if c.name not in exprs:
            typed.append(f"NULL::{c.type} AS {ident(c.name)}")
            continue
        t = ident("t_" + c.name)
        conv = (_from_typed(t, c.type) if c.name in reader_typed
                else _typed(t, c.type, feed, c.name, from_file=c.name not in derived))
        typed.append(f"{conv} AS {ident(c.name)}")
        v = ident(c.name)  # reasons read the typed value computed once in the inner projection
        shown = f"'''' || left(CAST({t} AS VARCHAR), 60) || ''''"
        if c.required:
            reasons.append(f"CASE WHEN {t} IS NULL THEN '{c.name}: missing' END")
        reasons.append(f"CASE WHEN {t} IS NOT NULL AND {v} IS NULL THEN '{c.name}: ' || {shown} || ' is not a {HUMAN[c.type]}' END")
        if c.type == NUM:
            reasons.append(f"CASE WHEN NOT isfinite({v}) THEN '{c.name}: ' || {shown} || ' is not a finite number' END")
        if c.min is not None:
            reasons.append(f"CASE WHEN {v} < {c.min} THEN '{c.name}: ' || {v} || ' is below the minimum {c.min:g}' END")
        if c.max is not None:
            reasons.append(f"CASE WHEN {v} > {c.max} THEN '{c.name}: ' || {v} || ' is above the maximum {c.max:g}' END")
        if c.allowed:
            allowed = ", ".join(sql_str(a) for a in c.allowed)
            reasons.append(f"CASE WHEN {v} NOT IN ({allowed}) THEN '{c.name}: ' || {shown} || ' is not one of {'/'.join(c.allowed)}' END")
        if c.not_future:
            reasons.append(f"CASE WHEN {v} > TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}' THEN '{c.name}: ' || {v} || ' is in the future' END")
    for name in extras:  # as text; _type_extras makes the all-numeric ones DOUBLE afterwards
        typed.append(f"{ident('t_' + name)} AS {ident(name)}")
    reason = f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "NULL::VARCHAR"
    out_cols = ", ".join([ident(c.name) for c in contract.columns] + [ident(n) for n in extras])
    row_out = f"{ROW}, " if row_sql else ""
    sql = (f"SELECT {row_out}{out_cols}, _reason, "
           f"CASE WHEN _reason IS NOT NULL THEN to_json(_src)::VARCHAR END AS _record "
           f"FROM (SELECT *, {reason} AS _reason FROM (SELECT *, {', '.join(typed)} FROM _mapped))")
    return sql, used, derived


def _sep_hint(cols: list[str], feed: Feed) -> str:
    if len(cols) == 1:
        for sep in (",", ";", "\t", "|"):
            if sep != feed.read.sep and sep in cols[0]:
                return f" (the header holds {sep!r}: is the separator {sep!r} rather than {feed.read.sep!r}?)"
    return ""


def _key_expr(contract: Table, alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return " || '|' || ".join(f"coalesce({p}{ident(k)}::VARCHAR, '')" for k in contract.key)


def _flag_duplicates(con, contract: Table, rel: str, row: Callable[[str], str], others: int) -> None:
    if not contract.key:
        return
    key = _key_expr(contract)
    distinct = ident(contract.key[0]) if len(contract.key) == 1 else key  # keys are required: never null here
    dupes = con.execute(f"SELECT count(*) - count(DISTINCT {distinct}) FROM {LOAD} WHERE _reason IS NULL").fetchone()[0]
    if dupes:
        shown = " || ', ' || ".join(f"'{k}=' || coalesce({ident(k)}::VARCHAR, '')" for k in contract.key)
        con.execute(f"""
            UPDATE {LOAD} AS u SET _reason = 'duplicate key (' || d.k || '): first at row ' || d.first_row
            FROM (SELECT {row('t')} AS r, {shown} AS k, min({row('t')}) OVER (PARTITION BY {key}) AS first_row
                  FROM {LOAD} t WHERE t._reason IS NULL) d
            WHERE {row('u')} = d.r AND d.r <> d.first_row""")
    if others:
        con.execute(f"""
            UPDATE {LOAD} AS u SET _reason = 'duplicate key: already loaded from ' || o._source_file || ' row ' || o._source_row
            FROM (SELECT {_key_expr(contract)} AS k, _source_file, _source_row FROM raw.{contract.name}
                  WHERE _source_file <> {sql_str(rel)}) o
            WHERE u._reason IS NULL AND {_key_expr(contract, 'u')} = o.k""")


def _flag_orphans(con, contract: Table) -> None:
    if not contract.references_customers:
        return
    if not has_rows(con, "raw.customers"):
        return  # a source without a customer file (e.g. a purchase log): customers come from the facts
    con.execute(f"""
        UPDATE {LOAD} AS u SET _reason = 'customer_id: ''' || u.customer_id || ''' is not in customers'
        WHERE u._reason IS NULL AND NOT EXISTS (SELECT 1 FROM raw.customers c WHERE c.customer_id = u.customer_id)""")
