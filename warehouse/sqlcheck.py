"""SQL that a config supplies is an expression or a join clause, never a statement.

Source configs (`derive`, `joins`) and settings (CLV `event_filter`, `value_expr`) hold SQL fragments that the
pipeline splices into its own queries on the read-write connection. Each fragment is parsed by DuckDB's own
parser, inside a query made for the purpose, and refused unless it is exactly one expression (or one chain of
joins to named inputs): no second statement, no subquery, no table function (`read_csv('/etc/passwd')`), no
function that reaches outside the data (settings, environment, files).
"""

from __future__ import annotations

import json
from functools import lru_cache

import duckdb

# Scalar functions that read the machine rather than the row.
FORBIDDEN_FUNCTIONS = {"getenv", "current_setting", "read_text", "read_blob", "glob", "system", "shell",
                       "query", "query_table", "load", "install"}


class UnsafeSql(ValueError):
    """A fragment that is not one plain expression (or join chain)."""


def _tree(sql: str) -> dict:
    with duckdb.connect() as con:  # parsing only: the fragment is never executed here
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as e:
            raise UnsafeSql(f"does not parse: {str(e).splitlines()[0]}") from e
        if len(statements) != 1:
            raise UnsafeSql(f"must be one expression, found {len(statements)} statements")
        out = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if out.get("error"):
        raise UnsafeSql(f"must be an expression ({out.get('error_message', 'not a SELECT')})")
    (statement,) = out["statements"]
    return statement["node"]


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _check_expressions(node) -> None:
    for n in _walk(node):
        if n.get("class") == "SUBQUERY" or n.get("type") in ("SUBQUERY", "TABLE_FUNCTION"):
            raise UnsafeSql("must not hold a subquery or a table function")
        name = str(n.get("function_name", "")).lower()
        if n.get("class") == "FUNCTION" and (name in FORBIDDEN_FUNCTIONS or name.startswith("read_")):
            raise UnsafeSql(f"must not call {n['function_name']}()")


def _plain_select(node: dict) -> None:
    if node.get("type") != "SELECT_NODE" or node.get("modifiers") or (node.get("cte_map") or {}).get("map"):
        raise UnsafeSql("must be an expression")
    for clause in ("where_clause", "having", "qualify", "sample"):
        if node.get(clause):
            raise UnsafeSql("must be an expression")
    if node.get("group_expressions"):
        raise UnsafeSql("must be an expression")


@lru_cache(maxsize=512)
def expression(text: str) -> str:
    """`text` if it is one SQL expression over the row (`src.col`, inputs, literals, functions); else UnsafeSql.
    Cached: a config's fragments are checked each time it is read, the answer never changes."""
    text = str(text).strip()
    if not text:
        raise UnsafeSql("is empty")
    node = _tree(f"SELECT ({text}) AS __x FROM __src")
    _plain_select(node)
    if len(node.get("select_list") or []) != 1:
        raise UnsafeSql("must be one expression")
    from_table = node.get("from_table") or {}
    if from_table.get("type") != "BASE_TABLE" or from_table.get("table_name") != "__src":
        raise UnsafeSql("must be one expression")  # e.g. `1) AS a FROM t, (SELECT ...`
    _check_expressions(node["select_list"])
    return text


def join_clause(text: str, tables: set[str] | frozenset[str]) -> str:
    return _join_clause(text, frozenset(tables))


@lru_cache(maxsize=512)
def _join_clause(text: str, tables: frozenset[str]) -> str:
    """`text` if it is one or more JOIN clauses to the named `tables` (a source config's inputs) with plain
    expressions as conditions; else UnsafeSql."""
    text = str(text).strip()
    node = _tree(f"SELECT 1 FROM __src {text}")
    _plain_select(node)
    root = node.get("from_table") or {}
    if root.get("type") != "JOIN":
        raise UnsafeSql("must be a JOIN clause, e.g. LEFT JOIN disp ON disp.account_id = src.account_id")
    stack = [root]
    while stack:
        n = stack.pop()
        if n.get("type") == "JOIN":
            stack += [n["left"], n["right"]]
            _check_expressions(n.get("condition"))
            if n.get("using_columns") is None and n.get("condition") is None and n.get("ref_type") != "CROSS":
                raise UnsafeSql("must join with ON or USING")
        elif n.get("type") == "BASE_TABLE":
            name = n.get("table_name")
            if name != "__src" and (name not in tables or n.get("schema_name") or n.get("catalog_name")):
                raise UnsafeSql(f"may only join the config's inputs ({', '.join(sorted(tables)) or 'none'}), "
                                f"not {name!r}")
        else:
            raise UnsafeSql("may only join the config's inputs: no subquery or table function")
    return text
