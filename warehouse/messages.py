"""Messages that leave the warehouse (errors, logs, check metadata, alerts) name the file, row, column and the
kind of problem, never a customer's value.

Our own messages are written that way. DuckDB's are not: `Could not convert string "Dupont" to 'DOUBLE'` quotes
the value, which in a column-shifted file is a person's name. `scrub` blanks every quoted literal of a
library's message except the words that help (SQL type names, the column and file names we pass in).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

QUOTED = re.compile(r'"([^"\n]*)"|\'([^\'\n]*)\'')
SQL_TYPES = {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "INT", "INT8", "INT16", "INT32", "INT64", "HUGEINT", "SMALLINT",
             "TINYINT", "UBIGINT", "UINTEGER", "VARCHAR", "DATE", "TIMESTAMP", "TIME", "BOOLEAN", "DECIMAL",
             "INTERVAL", "BLOB", "UUID"}
HIDDEN = "…"


def scrub(text: str, keep: Iterable[str] = ()) -> str:
    """`text` with each quoted literal replaced by '…' unless it is a SQL type or one of `keep`."""
    allowed = {k.lower() for k in keep} | {t.lower() for t in SQL_TYPES}

    def repl(m: re.Match) -> str:
        inner = m.group(1) if m.group(1) is not None else m.group(2)
        if inner.strip().lower() in allowed:
            return m.group(0)
        q = m.group(0)[0]
        return f"{q}{HIDDEN}{q}"

    return QUOTED.sub(repl, text)


def first_line(e: object, keep: Iterable[str] = ()) -> str:
    """The first line of an exception's text, scrubbed."""
    text = str(e).strip()
    return scrub(text.splitlines()[0], keep) if text else type(e).__name__


NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")
DATE_LIKE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")


def looks_like_data(names: list[str]) -> bool:
    """A header line that holds values rather than column names (a headerless file read with `header: true`):
    then its fields must not be shown, they are a customer's row."""
    return any(NUMBER.match(n.strip()) or DATE_LIKE.match(n.strip()) or "@" in n for n in names if n)
