"""The SQL that maps a file's rows onto a contract table: renames, derived columns, value maps, typing, and the
reasons a row is refused (required values, types, bounds, allowed values, plausibility, summary lines).

Reasons name the column and the kind of problem. They quote a value only when it is a typed number or date
(it parsed, so it cannot be a name): a value that failed to type may be anything — in a column-shifted file, a
customer's name — and stays in `quarantine.<table>.record` only.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import duckdb

from warehouse.contract import BOOL, DATE, INT, MIN_DATE, NUM, TEXT, TS, Column, Table
from warehouse.messages import first_line, looks_like_data
from warehouse.readers import ROW, FileRejected
from warehouse.sources import Feed

# Extra columns named like identifiers stay text even when their values look numeric.
ID_LIKE = re.compile(r"(^|_)(id|ids|key|code|number|no|nr|zip|postcode|account|iban|phone)$")
HUMAN = {INT: "whole number", NUM: "number", DATE: "date", TS: "date-time", BOOL: "yes/no value", TEXT: "text"}
# A report's total or footer line exported with the data: in the key, or in the first field when the key is empty.
SUMMARY = (r"^\W*((grand|sub)?\s*totals?|sum|summe|total general)\b|\bend of (the )?(report|file|data|export)\b"
           r"|^\W*\d+\s+(records?|rows?|lines?)\b|^\W*(records?|rows?|count)\s*[:=]?\s*\d|^\s*[*=#-]{3,}")


def sql_str(v: object) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    return s if s and not s[0].isdigit() else f"c_{s}"


def key_expr(contract: Table, alias: str = "") -> str:
    """One text value per row for the table's key (several key columns joined by '|')."""
    p = f"{alias}." if alias else ""
    if len(contract.key) == 1:
        return f"{p}{ident(contract.key[0])}::VARCHAR"
    return " || '|' || ".join(f"coalesce({p}{ident(k)}::VARCHAR, '')" for k in contract.key)


def read_types(contract: Table, feed: Feed, columns: list[str]) -> dict[str, str]:
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


def typed_expr(t: str, kind: str, feed: Feed, col: str, from_file: bool = True) -> str:
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


def _rules(c: Column, t: str, v: str, feed: Feed, now: datetime, delivered: date | None) -> list[str]:
    """CASE expressions, one per rule, each the reason text when the rule is broken (else NULL)."""
    out = []
    if c.required:
        out.append(f"CASE WHEN {t} IS NULL THEN '{c.name}: missing' END")
    out.append(f"CASE WHEN {t} IS NOT NULL AND {v} IS NULL THEN '{c.name}: not a {HUMAN[c.type]}' END")
    if c.type == NUM:
        out.append(f"CASE WHEN NOT isfinite({v}) THEN '{c.name}: not a finite number' END")
    if c.min is not None:
        out.append(f"CASE WHEN {v} < {c.min} THEN '{c.name}: ' || {v} || ' is below the minimum {c.min:g}' END")
    if c.max is not None:
        out.append(f"CASE WHEN {v} > {c.max} THEN '{c.name}: ' || {v} || ' is above the maximum {c.max:g}' END")
    if c.allowed:
        allowed = ", ".join(sql_str(a) for a in c.allowed)
        out.append(f"CASE WHEN {v} NOT IN ({allowed}) THEN '{c.name}: not one of {'/'.join(c.allowed)}' END")
    if c.not_future:
        out.append(f"CASE WHEN {v} > TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}' THEN '{c.name}: ' || {v} || ' is in the future' END")
    # Plausibility: the contract's bounds, each overridable in the source config (`plausibility:`).
    rules = {"max_abs": c.max_abs, "min_date": MIN_DATE if c.type in (DATE, TS) else None,
             **feed.plausibility.get(c.name, {})}
    where = f"plausibility.{c.name}"
    if c.type == NUM and rules.get("max_abs") is not None:
        out.append(f"CASE WHEN abs({v}) > {float(rules['max_abs'])!r} THEN '{c.name}: implausible, beyond ±"
                   f"{float(rules['max_abs']):g} ({where}.max_abs)' END")
    if c.type in (DATE, TS) and rules.get("min_date"):
        out.append(f"CASE WHEN {v} < DATE '{rules['min_date']}' THEN '{c.name}: ' || {v}::DATE || ' is before "
                   f"{rules['min_date']}, a placeholder rather than a date ({where}.min_date)' END")
    for k, op in (("min", "<"), ("max", ">")):
        bound = feed.plausibility.get(c.name, {}).get(k)
        if bound is not None and c.type in (NUM, INT):
            word = "below the minimum" if k == "min" else "above the maximum"
            out.append(f"CASE WHEN {v} {op} {float(bound)!r} THEN '{c.name}: ' || {v} || ' is {word} "
                       f"{float(bound):g} ({where}.{k})' END")
    if c.age_of and delivered is not None:
        b = ident(c.age_of)
        # the age stated when the file was exported, against the birth date: more than a year apart is a
        # shifted or mistyped value
        out.append(f"CASE WHEN {v} IS NOT NULL AND {b} IS NOT NULL AND abs({v} - date_diff('year', {b}, "
                   f"DATE '{delivered}')) > 1 THEN '{c.name}: does not match {c.age_of}' END")
    return out


def mapping_sql(con, contract: Table, feed: Feed, relation: str, src_cols: list[str], src_types: dict[str, str],
                row_sql: str | None, path: Path, now: datetime, delivered: date | None = None
                ) -> tuple[str, dict[str, str], set[str]]:
    """The SELECT that maps a source relation onto the contract: typed columns, extra columns (as text),
    `_reason` ('column: problem; ...' or NULL), `_kind` (why, in one word) and `_record` (the source row as
    JSON, for bad rows only). Summary lines are found afterwards (flag_summary_rows). Also returns which target column each source column feeds (to word the reader's
    rejects; its values are every column the file fills) and which targets are derived numbers (the file's
    number format does not apply to them).
    A generated key column is left NULL here: the caller fills it from the row's content."""
    by_lower = {c.lower(): c for c in src_cols}
    renamed = {v: k for k, v in feed.rename.items()}
    shown_cols = "" if looks_like_data(src_cols) else f" (the file has {src_cols})"
    missing_renames = [k for k in feed.rename if k not in src_cols]
    if missing_renames:
        raise FileRejected(path, f"columns {missing_renames} named in `rename` are not in the file"
                           f"{shown_cols or _data_header_hint()}{sep_hint(src_cols, feed)}")
    used: dict[str, str] = {}  # source column -> target column it feeds directly
    exprs: dict[str, str] = {}  # contract column -> text (or reader-typed) expression
    for c in contract.columns:
        if c.name in feed.derive:
            exprs[c.name] = _text(feed.derive[c.name], feed, c.name)
            used[f"(derive {c.name})"] = c.name
            continue
        same = by_lower.get(c.name.lower())
        s = renamed.get(c.name) or (same if same not in feed.rename else None)
        if s is not None:
            used[s] = c.name
            exprs[c.name] = f"src.{ident(s)}" if s in src_types else _text(f"src.{ident(s)}", feed, c.name)
        elif c.name == contract.generated_key:
            continue  # made from the row's content once the rows are typed (ingest.py)
        elif c.required:
            raise FileRejected(path, f"required column {c.name!r} of {contract.name} is missing: not in the file"
                               f"{shown_cols or _data_header_hint()} and not mapped by rename/derive"
                               + sep_hint(src_cols, feed))
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
                used[f"(derive {name})"] = snake(name)
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
                               f"{first_line(e, src_cols)}") from e
        derived = {(snake(n) if n not in contract_names else n) for n, t, *_ in types if t != "VARCHAR"}
    row = f"{row_sql} AS {ROW}, " if row_sql else ""
    m_cols = ", ".join(f"{e} AS {ident('t_' + n)}" for n, e in {**exprs, **extras}.items())
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _mapped AS SELECT {row}{m_cols}, src AS _src "
                    f"FROM {relation} AS src {joins}")
    except duckdb.Error as e:  # a derive/joins expression that does not fit this file
        raise FileRejected(path, f"the mapping of tables.{contract.name} (derive/joins) does not fit this file: "
                           f"{first_line(e, src_cols)}") from e

    reader_typed = {c for s, c in used.items() if s in src_types}
    typed, reasons = [], []
    for c in contract.columns:
        if c.name not in exprs:
            typed.append(f"NULL::{c.type} AS {ident(c.name)}")
            continue
        t = ident("t_" + c.name)
        conv = (_from_typed(t, c.type) if c.name in reader_typed
                else typed_expr(t, c.type, feed, c.name, from_file=c.name not in derived))
        typed.append(f"{conv} AS {ident(c.name)}")
        # reasons read the typed value computed once in the inner projection
        reasons += _rules(c, t, ident(c.name), feed, now, delivered)
    for name in extras:  # as text; type_extras makes the all-numeric ones DOUBLE afterwards
        typed.append(f"{ident('t_' + name)} AS {ident(name)}")
    reason = f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "NULL::VARCHAR"
    out_cols = ", ".join([ident(c.name) for c in contract.columns] + [ident(n) for n in extras])
    row_out = f"{ROW}, " if row_sql else ""
    sql = (f"SELECT {row_out}{out_cols}, _reason, "
           f"CASE WHEN _reason IS NOT NULL THEN 'invalid' END AS _kind, "
           f"CASE WHEN _reason IS NOT NULL THEN to_json(_src)::VARCHAR END AS _record "
           f"FROM (SELECT *, {reason} AS _reason FROM (SELECT *, {', '.join(typed)} FROM _mapped))")
    return sql, used, derived


def flag_summary_rows(con, load: str, contract: Table, row, first_column: str | None, keyed: bool = True) -> None:
    """A report's total or footer line exported with the data (`TOTAL`, `*** END OF REPORT - 5 records ***`):
    quarantined as a summary row whatever else it breaks. Looked for where exports put them, in the first 3 and
    the last 50 rows of the file, and in rows without a key (`keyed`: the file maps one): a pattern match on
    every row of a 60M-row file costs seconds for lines that are not there."""
    key = key_expr(contract)
    first = f"json_extract_string(t._record, {sql_str('$.' + first_column)})" if first_column else "NULL"
    lo, hi = con.execute(f"SELECT min({row('t')}), max({row('t')}) FROM {load} t").fetchone()
    if lo is None:
        return
    con.execute(f"""
        UPDATE {load} AS t SET _reason = 'summary row: a total or footer line of the export, not data', _kind = 'summary'
        WHERE ({row('t')} <= ? OR {row('t')} >= ? OR ({key} IS NULL AND {str(keyed).lower()}))
          AND regexp_matches(coalesce({key}, {first}, ''), ?, 'i')""", [lo + 2, hi - 49, SUMMARY])


def _data_header_hint() -> str:
    return " (its first line looks like data, not a header: set `header: false` and `columns:`)"


def sep_hint(cols: list[str], feed: Feed, sample: str = "") -> str:
    """When a file splits on another separator than the config's: say which, and the decimal mark that usually
    comes with it (`;` files from European exports write 12,50)."""
    if len(cols) == 1:
        for sep in (",", ";", "\t", "|"):
            if sep != feed.read.sep and sep in cols[0]:
                hint = f" (the header holds {sep!r}: is the separator {sep!r} rather than {feed.read.sep!r}?"
                if sep == ";" and feed.read.decimal != ",":
                    hint += ' Set `sep: ";"` and, for numbers written like 12,50, `decimal: ","`'
                return hint + ")"
    return ""


def type_extras(con, load: str, contract: Table, feed: Feed, derived: set[str], reserved: set[str]) -> None:
    """Extra columns arrive as text; those whose every value is a number become DOUBLE (ids stay text)."""
    names = {c.name for c in contract.columns} | reserved
    extras = [c for c, t in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {load})").fetchall()
              if c not in names and t == "VARCHAR" and not ID_LIKE.search(c)]
    if not extras:
        return
    number = {n: typed_expr(ident(n), NUM, feed, n, from_file=n not in derived) for n in extras}
    checks = ", ".join(
        f"count({ident(n)}) = count({number[n]}) AND count({ident(n)}) > 0"
        f" AND NOT bool_or(regexp_matches({ident(n)}, '^0[0-9]'))"  # leading zeros: an identifier
        for n in extras
    )
    flags = con.execute(f"SELECT {checks} FROM {load}").fetchone()
    for n, numeric in zip(extras, flags, strict=True):
        if numeric:
            con.execute(f"ALTER TABLE {load} ALTER {ident(n)} TYPE DOUBLE USING {number[n]}")
