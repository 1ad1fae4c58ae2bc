"""Load landing files into `raw.<table>`, rejected rows into `quarantine.<table>`, and keep a file ledger.

Per file, in one DuckDB transaction: stage as text -> map onto the contract (renames, value maps, derived
columns, joins) -> type -> give every bad row its reasons ("column: problem") -> replace that file's earlier
rows. Counts reconcile exactly: rows read = rows loaded + rows quarantined.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from warehouse.contract import BOOL, DATE, INT, NUM, TABLES, TEXT, TS, Table
from warehouse.readers import ROW, FileRejected, Staged, stage_file
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


def file_checksum(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


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


def _ingest_file(con, contract: Table, feed: Feed, path: Path, rel: str, fingerprint: str,
                 run_id: str, now: datetime, log) -> FileReport:
    st = path.stat()
    prev = con.execute(
        "SELECT size, mtime_ns, checksum, fingerprint, rows_read, rows_loaded, rows_quarantined "
        "FROM raw.ingest_ledger WHERE table_name = ? AND source_file = ?", [contract.name, rel],
    ).fetchone()
    checksum = None
    if prev and prev[3] == fingerprint:
        if (prev[0], prev[1]) == (st.st_size, st.st_mtime_ns) or prev[2] == (checksum := file_checksum(path)):
            return FileReport(rel, "unchanged", prev[4], prev[5], prev[6])
    checksum = checksum or file_checksum(path)
    log(f"{contract.name}: reading {rel}")
    staged = stage_file(con, path, feed.read, "_stage")
    sel = _mapping(con, contract, feed, staged, path, rel, now)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _typed AS {sel}")
    except duckdb.Error as e:  # a derive/joins expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) fails on this file: "
                           f"{str(e).splitlines()[0]}") from e
    n_mapped = con.execute("SELECT count(*) FROM _typed").fetchone()[0]
    if n_mapped != staged.rows:
        raise FileRejected(path, f"joins of tables.{contract.name} give {n_mapped} rows for {staged.rows} source "
                           "rows; each join must match at most one row")
    _flag_duplicates(con, contract, rel)
    _flag_orphans(con, contract)

    cols = [r[0] for r in con.execute("DESCRIBE _typed").fetchall() if r[0] not in ("_reason", ROW)]
    con.execute("BEGIN TRANSACTION")
    try:
        ensure_raw_table(con, contract, {c: t for c, t in con.execute("SELECT column_name, column_type FROM "
                         "(DESCRIBE _typed)").fetchall() if c in cols})
        con.execute(f"DELETE FROM raw.{contract.name} WHERE _source_file = ?", [rel])
        col_list = ", ".join(ident(c) for c in cols)
        con.execute(
            f"INSERT INTO raw.{contract.name} BY NAME SELECT {col_list}, {sql_str(rel)} AS _source_file, "
            f"{ROW} AS _source_row, ?::TIMESTAMP AS _ingested_at FROM _typed WHERE _reason IS NULL",
            [now],
        )
        con.execute(f"DELETE FROM quarantine.{contract.name} WHERE _source_file = ?", [rel])
        key_list = "[" + ", ".join(sql_str(k) for k in contract.key) + "]::VARCHAR[]"
        con.execute(
            f"""INSERT INTO quarantine.{contract.name}
            SELECT {sql_str(rel)}, t.{ROW}, t._reason,
                   CASE WHEN t._reason LIKE 'duplicate key%' THEN {key_list}
                        ELSE list_distinct(regexp_extract_all(t._reason, '(?:^|; )([A-Za-z0-9_]+):', 1)) END,
                   to_json(s)::VARCHAR, ?::TIMESTAMP, ?
            FROM (SELECT * FROM _typed WHERE _reason IS NOT NULL) t JOIN _stage s ON {staged.row_sql("s")} = t.{ROW}
            ORDER BY t.{ROW}""",
            [now, run_id],
        )
        if staged.malformed:
            con.executemany(
                f"INSERT INTO quarantine.{contract.name} VALUES (?, ?, ?, ['(line)'], ?, ?, ?)",
                [(rel, row, reason, raw, now, run_id) for row, reason, raw in staged.malformed],
            )
        loaded, quarantined = con.execute(
            "SELECT count(*) FILTER (WHERE _reason IS NULL), count(*) FILTER (WHERE _reason IS NOT NULL) FROM _typed"
        ).fetchone()
        quarantined += len(staged.malformed)
        read = staged.rows + len(staged.malformed)
        con.execute("DELETE FROM raw.ingest_ledger WHERE table_name = ? AND source_file = ?", [contract.name, rel])
        con.execute(
            "INSERT INTO raw.ingest_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [contract.name, rel, str(path.resolve()), st.st_size, st.st_mtime_ns, checksum, fingerprint,
             read, loaded, quarantined, now],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _typed; DROP TABLE IF EXISTS _stage")
    log(f"{contract.name}: {rel}: {read:,} read = {loaded:,} loaded + {quarantined:,} quarantined")
    return FileReport(rel, "loaded", read, loaded, quarantined)


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


def _mapping(con, contract: Table, feed: Feed, staged: Staged, path: Path, rel: str, now: datetime) -> str:
    src_cols = staged.columns
    by_lower = {c.lower(): c for c in src_cols}
    renamed = {v: k for k, v in feed.rename.items()}
    missing_renames = [k for k in feed.rename if k not in src_cols]
    if missing_renames:
        raise FileRejected(path, f"columns {missing_renames} named in `rename` are not in the file; "
                           f"the file has {src_cols}" + _sep_hint(src_cols, feed))
    used: set[str] = set()
    text_exprs: dict[str, str] = {}
    for c in contract.columns:
        if c.name in feed.derive:
            expr = feed.derive[c.name]
        elif c.name in renamed:
            expr = f"src.{ident(renamed[c.name])}"
            used.add(renamed[c.name])
        elif c.name.lower() in by_lower and by_lower[c.name.lower()] not in feed.rename:
            expr = f"src.{ident(by_lower[c.name.lower()])}"
            used.add(by_lower[c.name.lower()])
        elif c.name == contract.generated_key:
            expr = f"{sql_str(rel + ':')} || {staged.row_sql('src')}"
        else:
            if c.required:
                raise FileRejected(path, f"required column {c.name!r} of {contract.name} is missing: not in the "
                                   f"file (columns {src_cols}) and not mapped by rename/derive" + _sep_hint(src_cols, feed))
            continue
        text_exprs[c.name] = _text(expr, feed, c.name)
    contract_names = {c.name for c in contract.columns}
    extras: dict[str, str] = {}
    if feed.keep_extra:
        for s in src_cols:
            name = snake(feed.rename.get(s, s))
            if s in used or s in feed.drop or name in contract_names or name.startswith("_"):
                continue
            extras[name] = _text(f"src.{ident(s)}", feed, name)
        for name, expr in feed.derive.items():
            if name not in contract_names:
                extras[snake(name)] = _text(expr, feed, name)
    joins = " ".join(feed.joins)
    # A derived value that is already a number (SQL arithmetic) must not get the file's number format;
    # one that is text (e.g. `src.PAY`) is the file's text and does.
    derived = {snake(n) if n not in contract_names else n for n in feed.derive}
    if feed.derive:
        probe = ", ".join(f"({e}) AS {ident(n)}" for n, e in feed.derive.items())
        try:
            types = con.execute(f"DESCRIBE SELECT {probe} FROM {ident(staged.table)} AS src {joins}").fetchall()
        except duckdb.Error as e:
            raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) does not fit this file: "
                               f"{str(e).splitlines()[0]}") from e
        derived = {(snake(n) if n not in contract_names else n) for n, t, *_ in types if t != "VARCHAR"}
    m_cols = ", ".join(f"{e} AS {ident('t_' + n)}" for n, e in {**text_exprs, **extras}.items())
    base = f"SELECT {staged.row_sql('src')} AS {ROW}, {m_cols} FROM {ident(staged.table)} AS src {joins}"
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _mapped AS {base}")
    except duckdb.Error as e:  # a derive/joins expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) does not fit this file: "
                           f"{str(e).splitlines()[0]}") from e
    extra_types = _infer_extra_types(con, list(extras), feed, derived)

    typed, reasons = [], []
    for c in contract.columns:
        if c.name not in text_exprs:
            typed.append(f"NULL::{c.type} AS {ident(c.name)}")
            continue
        t = ident("t_" + c.name)
        typed.append(f"{_typed(t, c.type, feed, c.name, from_file=c.name not in derived)} AS {ident(c.name)}")
        v = ident(c.name)  # reasons read the typed value computed once in the inner projection
        shown = f"'''' || left({t}, 60) || ''''"
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
    for name, kind in extra_types.items():
        typed.append(f"{_typed(ident('t_' + name), kind, feed, name, from_file=name not in derived)} AS {ident(name)}")
    reason = f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "NULL::VARCHAR"
    out_cols = [ident(c.name) for c in contract.columns] + [ident(n) for n in extra_types]
    return (f"SELECT {ROW}, {', '.join(out_cols)}, {reason} AS _reason "
            f"FROM (SELECT *, {', '.join(typed)} FROM _mapped)")


def _infer_extra_types(con, extras: list[str], feed: Feed, derived: set[str]) -> dict[str, str]:
    """Extra columns become DOUBLE when every value is a number, else stay text."""
    if not extras:
        return {}
    numeric = [n for n in extras if not ID_LIKE.search(n)]
    if not numeric:
        return dict.fromkeys(extras, TEXT)
    checks = ", ".join(
        f"count({ident('t_' + n)}) = count({_typed(ident('t_' + n), NUM, feed, n, n not in derived)}) "
        f"AND count({ident('t_' + n)}) > 0"
        f" AND NOT bool_or(regexp_matches({ident('t_' + n)}, '^0[0-9]'))"  # leading zeros: an identifier
        for n in numeric
    )
    flags = dict(zip(numeric, con.execute(f"SELECT {checks} FROM _mapped").fetchone(), strict=True))
    return {n: (NUM if flags.get(n) else TEXT) for n in extras}


def _sep_hint(cols: list[str], feed: Feed) -> str:
    if len(cols) == 1:
        for sep in (",", ";", "\t", "|"):
            if sep != feed.read.sep and sep in cols[0]:
                return f" (the header holds {sep!r}: is the separator {sep!r} rather than {feed.read.sep!r}?)"
    return ""


def _key_expr(contract: Table, alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return " || '|' || ".join(f"coalesce({p}{ident(k)}::VARCHAR, '')" for k in contract.key)


def _flag_duplicates(con, contract: Table, rel: str) -> None:
    if not contract.key:
        return
    key = _key_expr(contract)
    dupes = con.execute(f"SELECT count(*) - count(DISTINCT {key}) FROM _typed WHERE _reason IS NULL").fetchone()[0]
    if dupes:
        shown = " || ', ' || ".join(f"'{k}=' || coalesce({ident(k)}::VARCHAR, '')" for k in contract.key)
        con.execute(f"""
            UPDATE _typed SET _reason = 'duplicate key (' || d.k || '): first at row ' || d.first_row
            FROM (SELECT {ROW} AS r, {shown} AS k,
                         min({ROW}) OVER (PARTITION BY {key}) AS first_row
                  FROM _typed WHERE _reason IS NULL) d
            WHERE _typed.{ROW} = d.r AND d.r <> d.first_row""")
    others = con.execute(
        f"SELECT count(*) FROM raw.{contract.name} WHERE _source_file <> ?", [rel]
    ).fetchone()[0]
    if others:
        con.execute(f"""
            UPDATE _typed SET _reason = 'duplicate key: already loaded from ' || o._source_file || ' row ' || o._source_row
            FROM (SELECT {_key_expr(contract)} AS k, _source_file, _source_row FROM raw.{contract.name}
                  WHERE _source_file <> {sql_str(rel)}) o
            WHERE _typed._reason IS NULL AND {_key_expr(contract, '_typed')} = o.k""")


def _flag_orphans(con, contract: Table) -> None:
    if not contract.references_customers:
        return
    has_customers = con.execute("SELECT count(*) > 0 FROM (SELECT 1 FROM raw.customers LIMIT 1)").fetchone()[0]
    if not has_customers:
        return  # a source without a customer file (e.g. a purchase log): customers come from the facts
    con.execute("""
        UPDATE _typed SET _reason = 'customer_id: ''' || customer_id || ''' is not in customers'
        WHERE _reason IS NULL AND NOT EXISTS (SELECT 1 FROM raw.customers c WHERE c.customer_id = _typed.customer_id)""")
