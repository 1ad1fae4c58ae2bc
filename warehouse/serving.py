"""The serving file BI opens: `<home>/serving.duckdb`, built beside the working database and swapped in by rename.

DuckDB lets one process write a file and no other process read it meanwhile, so BI never opens
`warehouse.duckdb`. Publishing copies the scored tables (only their shareable columns), a few dimensions, the
registry and drift summaries and the views BI needs into a new file under `<home>/serving/`, checkpoints and
fsyncs it, then makes `serving.duckdb` point at it with one `rename` (a hard link to the version file). A reader
that opened the old file keeps reading the old file; a reader that opens after the rename sees the new one whole.
The table `manifest` says what each published table holds. Earlier versions stay for `rollback`.

What the file holds follows the models (their ScoredTables, passed in): each scored table and the last
`history_snapshots` snapshots of its history, the columns each gives `bi.customer_scores` under the same names,
and a comment on every table, view and column (warehouse/columns.py).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from warehouse import failpoints
from warehouse.columns import (
    BANK_EXTRA,
    CUSTOMER_SCORES,
    DIMENSION_RENAMES,
    DRIFT,
    DRIFT_SUMMARY,
    MODEL_RUNS,
    MODEL_SUMMARY,
    MODEL_VERSION,
    REGISTRY,
    SCORE_TREND,
    TABLE_DOCS,
    ScoredTable,
    describe,
)
from warehouse.columns import MANIFEST as MANIFEST_DOCS
from warehouse.db import Home
from warehouse.mapping import sql_str

MANIFEST = "manifest"
# What BI reads besides scores.*: (name in the serving file, source table, columns or None for the shareable ones)
REGISTRY_COLUMNS = ["model", "version", "alias", "trained_at", "snapshot_date", "metrics", "note"]
MODEL_RUN_COLUMNS = ["run_id", "model", "training", "training_note", "challenger_version", "champion_version",
                     "scoring", "rows_scored", "outcome", "updated_at"]
DRIFT_COLUMNS = ["run_id", "model", "model_version", "feature", "kind", "psi", "ks", "band", "reference_mean",
                 "current_mean", "snapshot_date", "measured_at"]
DIMENSIONS = {"bi.customers": "raw.customers", "bi.agencies": "raw.agencies", "bi.products": "raw.products"}


class ServingError(RuntimeError):
    pass


@dataclass
class Published:
    version: Path  # the version file serving.duckdb now points at
    tables: list[tuple[str, str, int]]  # (table_name, kind, row_count), as in the manifest
    exports: list[Path]
    pruned: list[Path]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(con: duckdb.DuckDBPyConnection, catalog: str, schema: str) -> list[str]:
    """Tables and views (raw.<table> of a snapshot table is a view of its current rows)."""
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
        "ORDER BY table_name", [catalog, schema]).fetchall()]


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> list[str]:
    schema, name = table.split(".")
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = ? ORDER BY ordinal_position", [catalog, schema, name]).fetchall()]


def shareable_columns(table: str, columns: list[str], shareable: dict) -> list[str]:
    """The columns of `table` that settings `serving.shareable` allow out of the warehouse: `all`, or a list
    (in the table's order). A table not named there is not published at all."""
    rule = next((v for k, v in shareable.items() if fnmatch.fnmatchcase(table, k)), None)
    if rule is None:
        return []
    if rule == "all":
        return list(columns)
    allowed = set(rule)
    return [c for c in columns if c in allowed]


def _customer_scores_sql(present: dict[str, list[str]], models: list[ScoredTable]) -> tuple[str, dict] | None:
    """One row per scored customer: the shareable customer attributes, the agency, each model's
    `customer_scores` columns under their own names and the champion version that scored them; with what each
    column means."""
    scored = [m for m in models if "customer_id" in present.get(m.table, [])]
    if not scored:
        return None
    docs = dict(CUSTOMER_SCORES)
    # the customers a per-customer model scored (the population); a transaction-grain model (fraud) also scores
    # customers who joined after the snapshot: its roll-up joins, its customers count only when it alone scored
    by_customer = [m for m in scored if m.grain == "customer"] or scored
    base = " UNION ".join(f"SELECT customer_id FROM {m.table}" for m in by_customer)
    select, joins = ["ids.customer_id"], []
    dims = present.get("bi.customers", [])
    if "customer_id" in dims:
        select += [f"cu.{_q(c)}" for c in dims if c != "customer_id"]
        docs.update({c: _dimension_doc("bi.customers", c) for c in dims if c != "customer_id"})
        joins.append("LEFT JOIN bi.customers cu ON cu.customer_id = ids.customer_id")
        agencies = present.get("bi.agencies", [])
        if "agency_id" in dims and "agency_id" in agencies and "agency_name" in agencies:
            select.append("ag.agency_name")
            joins.append("LEFT JOIN bi.agencies ag ON ag.agency_id = cu.agency_id")
    snapshots = []

    def null(c) -> str:
        return f"NULL::{c.type} AS {_q(c.name)}"

    # Every model's columns are there whatever scored: one not scored yet (or not trained for this bank), or a
    # column its table lacks, is NULL, so a dashboard or a docs/bi.md recipe naming them keeps working.
    for i, m in enumerate(models):
        docs.update({c.name: c.doc for c in (*m.customer_scores(), *m.derived)})
        docs[f"{m.model}_model_version"] = MODEL_VERSION.format(model=m.model)
        if m not in scored:
            select += [null(c) for c in (*m.customer_scores(), *m.derived)]
            select.append(f"NULL::INTEGER AS {_q(m.model + '_model_version')}")
            continue
        have, alias = present[m.table], f"m{i}"
        derived = [d for d in m.derived if set(d.needs) <= set(have)]
        if m.grain == "customer":
            select += [f"{alias}.{_q(c.name)}" if c.name in have else null(c) for c in m.customer_scores()]
            source = m.table
            if derived:  # a per-customer table with a column made from several rows: not a case yet
                raise ValueError(f"{m.table}: derived bi.customer_scores columns need a table of several rows "
                                 "per customer")
        else:  # several rows per customer: only aggregates join the one-row-per-customer table
            aggregates = [f"{d.sql} AS {_q(d.name)}" for d in derived]
            aggregates += ["any_value(model_version) AS model_version", "max(snapshot_date) AS snapshot_date"]
            source = f"(SELECT customer_id, {', '.join(aggregates)} FROM {m.table} GROUP BY customer_id)"
        select += [f"{alias}.{_q(d.name)}" if d in derived else null(d) for d in m.derived]
        select.append(f"{alias}.model_version AS {_q(m.model + '_model_version')}")
        snapshots.append(f"{alias}.snapshot_date")
        joins.append(f"LEFT JOIN {source} {alias} ON {alias}.customer_id = ids.customer_id")
    select.append(f"greatest({', '.join(snapshots)}) AS snapshot_date")
    return f"SELECT {', '.join(select)} FROM ({base}) ids\n" + "\n".join(joins), docs


def _dimension_doc(target: str, column: str) -> str:
    """A dimension column's meaning from the data contract (under its raw name), else a bank's extra column."""
    raw = {v: k for k, v in DIMENSION_RENAMES.get(target, {}).items()}.get(column, column)
    return describe(DIMENSIONS[target], raw) or BANK_EXTRA


VIEWS = {
    "bi.model_summary": ("""
        SELECT model, version, alias, trained_at, snapshot_date, metrics, note
        FROM ml.model_registry WHERE alias = 'champion'""", MODEL_SUMMARY),
    "bi.drift_summary": ("""
        SELECT d.model, d.model_version, d.feature, d.kind, d.psi, d.ks, d.band, d.snapshot_date, d.measured_at
        FROM monitoring.drift d
        JOIN (SELECT model, arg_max(run_id, measured_at) AS run_id FROM monitoring.drift GROUP BY model) last
          USING (model, run_id)""", DRIFT_SUMMARY),
}
NUMERIC = ("DOUBLE", "FLOAT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "DECIMAL")


def _score_trend_sql(con: duckdb.DuckDBPyConnection, present: dict[str, list[str]],
                     models: list[ScoredTable]) -> str | None:
    """bi.score_trend: per model, snapshot and watched column, the counts and shares of a category or the mean
    of a number, over the snapshots the serving file keeps."""
    parts = []
    for m in models:
        history = f"{m.table}_history"
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE srv.{history})").fetchall()) \
            if history in present else {}
        for col in (c for c in m.trend if c in types):
            head = f"SELECT '{m.model}' AS model, snapshot_date, any_value(model_version) AS model_version, " \
                   f"'{col}' AS column_name"
            if types[col].startswith(NUMERIC):
                parts.append(f"{head}, NULL::VARCHAR AS category, count({_q(col)}) AS customers, "
                             f"count({_q(col)}) / count(*) AS share, avg({_q(col)})::DOUBLE AS mean_value "
                             f"FROM {history} GROUP BY snapshot_date")
            else:
                parts.append(f"{head}, {_q(col)}::VARCHAR AS category, count(*) AS customers, "
                             "count(*) / sum(count(*)) OVER (PARTITION BY snapshot_date) AS share, "
                             f"NULL::DOUBLE AS mean_value FROM {history} GROUP BY snapshot_date, {_q(col)}")
    return "\nUNION ALL ".join(parts) if parts else None


def _build(con: duckdb.DuckDBPyConnection, src: str, shareable: dict, run_id: str, now: datetime,
           models: list[ScoredTable], history_snapshots: int) -> list[tuple[str, str, int]]:
    """Fill the attached, empty catalog `srv` from the working catalog `src`; return the manifest rows."""
    present: dict[str, list[str]] = {}
    docs: dict[str, dict[str, str]] = {}  # table -> column -> meaning: the comments
    by_table = {m.table: m for m in models}

    def copy(target: str, source: str, columns: list[str], last: str = "", renames: dict | None = None) -> None:
        if not columns:
            return
        renames = renames or {}
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {src}.{source})").fetchall())
        # one numeric type per kind of figure: a float32 column of an older history is DOUBLE here
        cols = [(f"{_q(c)}::DOUBLE" if types.get(c) == "FLOAT" else _q(c)) + f" AS {_q(renames.get(c, c))}"
                for c in columns]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS srv.{target.split('.')[0]}")
        con.execute(f"CREATE TABLE srv.{target} AS SELECT {', '.join(cols)} FROM {src}.{source} {last}")
        present[target] = [renames.get(c, c) for c in columns]

    for name in _tables(con, src, "scores"):
        if name.endswith("_history"):
            continue
        table = f"scores.{name}"
        copy(table, table, shareable_columns(table, _columns(con, src, table), shareable))
        spec = by_table.get(table)
        if spec:
            docs[table] = spec.docs()
        history = f"{table}_history"
        if f"{name}_history" in _tables(con, src, "scores") and table in present:
            # the last N snapshots, each with the version that scored it last: a trend, not every rerun
            have = _columns(con, src, history)
            key = spec.columns[0].name if spec else present[table][0]  # customer_id; a manager-grain table's own
            copy(history, history, [c for c in present[table] if c in have], f"""
                 WHERE (snapshot_date, model_version) IN (
                     SELECT (snapshot_date, arg_max(model_version, scored_at)) FROM {src}.{history}
                     GROUP BY snapshot_date ORDER BY snapshot_date DESC LIMIT {int(history_snapshots)})
                 ORDER BY snapshot_date, {_q(key)}""")
            if spec:
                docs[history] = spec.docs()
    for target, source in DIMENSIONS.items():
        if source.split(".")[1] in _tables(con, src, "raw"):
            copy(target, source, shareable_columns(source, _columns(con, src, source), shareable),
                 renames=DIMENSION_RENAMES.get(target))
            if target in present:
                docs[target] = {c: _dimension_doc(target, c) for c in present[target]}
    if "model_registry" in _tables(con, src, "ml"):
        copy("ml.model_registry", "ml.model_registry", REGISTRY_COLUMNS)
    if "drift" in _tables(con, src, "monitoring"):
        copy("monitoring.drift", "monitoring.drift", DRIFT_COLUMNS)
    if "model_runs" in _tables(con, src, "ml"):  # what became of each model in its last run
        copy("ml.model_runs", "ml.model_runs", MODEL_RUN_COLUMNS,
             "QUALIFY row_number() OVER (PARTITION BY model ORDER BY updated_at DESC) = 1")
    docs.update({"ml.model_registry": REGISTRY, "monitoring.drift": DRIFT, "ml.model_runs": MODEL_RUNS})

    outcomes = dict(con.execute("SELECT model, outcome FROM srv.ml.model_runs").fetchall()) \
        if "ml.model_runs" in present else {}
    versions = {}
    if "ml.model_registry" in present:
        versions = dict(con.execute(
            "SELECT model, max(version) FROM srv.ml.model_registry WHERE alias = 'champion' GROUP BY model").fetchall())
    views, joined = {}, {}
    customer_scores = _customer_scores_sql(present, models)
    if customer_scores:
        # Stored, not a view: at 1M customers the join over five tables costs ~1.7 s per query, and every
        # dashboard tile would pay it; the file is written once per run and read all day.
        joined["bi.customer_scores"], docs["bi.customer_scores"] = customer_scores
    if "ml.model_registry" in present:
        views["bi.model_summary"], docs["bi.model_summary"] = VIEWS["bi.model_summary"]
    if "monitoring.drift" in present:
        views["bi.drift_summary"], docs["bi.drift_summary"] = VIEWS["bi.drift_summary"]
    trend = _score_trend_sql(con, present, models)
    if trend:
        views["bi.score_trend"], docs["bi.score_trend"] = trend, SCORE_TREND
    # Views are bound inside the serving catalog, so their names resolve there when BI opens the file alone.
    con.execute("USE srv")
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS bi")
        for name, sql in joined.items():
            con.execute(f"CREATE TABLE {name} AS {sql}")
        for name, sql in views.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")
        rows = []
        tables = [*present, *joined]
        held = {t: con.execute(f"SELECT max(model_version) FROM {t}").fetchone()[0]
                for t in present if t.startswith("scores.") and "model_version" in present[t]}
        for name, kind in [*((t, "table") for t in tables), *((v, "view") for v in views)]:
            n = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            model = name.split(".")[1].removesuffix("_history") if name.startswith("scores.") else None
            if name == "bi.customer_scores":  # the versions whose scores it joins, as the rows say
                mv = {m.model: held[m.table] for m in models if held.get(m.table)}
            elif name.startswith("scores.") and not name.endswith("_history"):
                mv = {model: held[name]} if held.get(name) else {}
            elif model:  # a history: the champion now (its rows name the versions that scored them)
                mv = {model: versions[model]} if model in versions else {}
            else:  # the registry, runs, drift and their views: about every model's champion
                mv = versions if kind == "view" or name.split(".")[0] in ("ml", "monitoring") else {}
            rows.append((name, kind, n, now, run_id, json.dumps(mv, sort_keys=True), outcomes.get(model)))
        con.execute(f"""CREATE TABLE main.{MANIFEST} (table_name VARCHAR, kind VARCHAR, row_count BIGINT,
                        published_at TIMESTAMP, run_id VARCHAR, model_versions JSON, outcome VARCHAR)""")
        con.executemany(f"INSERT INTO main.{MANIFEST} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        docs[MANIFEST] = MANIFEST_DOCS
        _comment(con, docs, {**{t: "TABLE" for t in [*tables, MANIFEST]}, **{v: "VIEW" for v in views}}, by_table)
    finally:
        con.execute(f"USE {_q(src)}")
    return [(r[0], r[1], r[2]) for r in rows]


def _comment(con: duckdb.DuckDBPyConnection, docs: dict[str, dict[str, str]], kinds: dict[str, str],
             models: dict[str, ScoredTable]) -> None:
    """COMMENT ON every table, view and column of the serving file that has a meaning written down: BI tools
    show them beside the names (DBeaver, DataGrip, Superset's dataset editor; `scorehouse sql` with DESCRIBE)."""
    for name, kind in kinds.items():
        spec = models.get(name.removesuffix("_history"))
        about = TABLE_DOCS.get(name) or (f"{spec.summary}, one row per {spec.grain}" + (
            "; the last snapshots (`serving.history_snapshots`)" if name.endswith("_history") else "") if spec else None)
        if about:
            con.execute(f"COMMENT ON {kind} {name} IS {sql_str(about)}")
        meanings = docs.get(name, {})
        for (column,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'srv' AND "
                                     "(schema_name || '.' || table_name = ? OR (schema_name = 'main' AND "
                                     "table_name = ?))", [name, name]).fetchall():
            if meanings.get(column):
                con.execute(f"COMMENT ON COLUMN {name}.{_q(column)} IS {sql_str(meanings[column])}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point_serving_at(home: Home, version: Path) -> None:
    """serving.duckdb becomes `version` in one rename: readers see the old file or the new one, never a mix."""
    tmp = home.serving.with_name(home.serving.name + ".swap")
    tmp.unlink(missing_ok=True)
    try:
        os.link(version, tmp)  # the same file under a second name: no copy
    except OSError:
        shutil.copyfile(version, tmp)  # a file system without hard links
    os.replace(tmp, home.serving)
    _fsync(home.root)


def versions(home: Home) -> list[Path]:
    """Complete serving versions, oldest first (names start with the publish time)."""
    return sorted(home.serving_versions.glob("*.duckdb")) if home.serving_versions.is_dir() else []


def current_version(home: Home) -> Path | None:
    if not home.serving.exists():
        return None
    st = home.serving.stat()
    return next((v for v in versions(home) if v.stat().st_ino == st.st_ino and v.stat().st_dev == st.st_dev), None)


def publish(con: duckdb.DuckDBPyConnection, home: Home, *, run_id: str, shareable: dict, models: list[ScoredTable],
            keep_previous: int = 3, exports: bool = True, history_snapshots: int = 12,
            now: datetime | None = None) -> Published:
    """Publish what the working database `con` holds now; see the module docstring. `models`: what each model's
    scored table holds and gives bi.customer_scores (assets/models.py SPECS), in the order of its columns."""
    now = now or datetime.now()
    folder = home.serving_versions
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.tmp*"):  # a publish killed half way
        stale.unlink()
    src = con.execute("SELECT current_database()").fetchone()[0]
    name = f"{now:%Y%m%dT%H%M%S%f}-{run_id[:8] or 'manual'}.duckdb"
    tmp = folder / (name + ".tmp")
    con.execute(f"ATTACH {sql_str(str(tmp))} AS srv")
    try:
        rows = _build(con, src, shareable, run_id, now, list(models), history_snapshots)
        con.execute("CHECKPOINT srv")
    finally:
        con.execute("DETACH srv")
    written = _export_parquet(con, src, home, shareable) if exports else []
    _fsync(tmp)
    os.chmod(tmp, 0o444)  # BI opens it read-only; a tool that tries to write gets an error, not a lock
    failpoints.reached("publish")
    final = folder / name
    os.replace(tmp, final)
    _point_serving_at(home, final)
    return Published(final, rows, written, prune(home, keep_previous))


def prune(home: Home, keep_previous: int) -> list[Path]:
    """Delete versions older than the newest `keep_previous` + 1, never the one being served."""
    current = current_version(home)
    old = [v for v in versions(home)[: -(keep_previous + 1)] if v != current]
    for v in old:
        v.unlink()  # a reader that still has it open keeps reading it until it closes
    return old


def rollback(home: Home, to: str | None = None) -> Path:
    """Serve the version before the current one (or the one named `to`)."""
    have = versions(home)
    current = current_version(home)
    if to:
        target = next((v for v in have if v.name == to or v.stem == to), None)
        if target is None:
            raise ServingError(f"no serving version {to!r} in {home.serving_versions}; kept: "
                               f"{', '.join(v.name for v in have) or 'none'}")
    else:
        older = [v for v in have if current is None or v.name < current.name]
        if not older:
            raise ServingError(f"no earlier serving version to roll back to in {home.serving_versions} (kept: "
                               f"{', '.join(v.name for v in have) or 'none'}; serving.keep_previous sets how many)")
        target = older[-1]
    _point_serving_at(home, target)
    return target


def read_manifest(path: Path) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT table_name, kind, row_count, published_at, run_id, model_versions "
                           f"FROM {MANIFEST} ORDER BY table_name").fetchall()


def published_at(path: Path, run_id: str) -> datetime | None:
    """When run `run_id` published the serving file at `path`; None when it did not (or another run has since)."""
    rows = read_manifest(path) if path.exists() else []
    return rows[0][3] if rows and rows[0][4] == run_id else None


def _export_parquet(con: duckdb.DuckDBPyConnection, src: str, home: Home, shareable: dict) -> list[Path]:
    """Each scored table's shareable columns as `<home>/exports/<model>/snapshot_date=<date>/scores.parquet`
    (Hive layout: the date is in the path, not in the file); each file written aside and renamed in."""
    written = []
    for name in _tables(con, src, "scores"):
        if name.endswith("_history"):
            continue
        table = f"scores.{name}"
        cols = [c for c in shareable_columns(table, _columns(con, src, table), shareable) if c != "snapshot_date"]
        if not cols or "snapshot_date" not in _columns(con, src, table):
            continue
        for (snapshot,) in con.execute(f"SELECT DISTINCT snapshot_date FROM {src}.{table} "
                                       "WHERE snapshot_date IS NOT NULL").fetchall():
            folder = home.exports / name / f"snapshot_date={snapshot}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "scores.parquet"
            tmp = folder / "scores.parquet.tmp"
            con.execute(f"COPY (SELECT {', '.join(_q(c) for c in cols)} FROM {src}.{table} "
                        f"WHERE snapshot_date = DATE '{snapshot}') TO {sql_str(str(tmp))} (FORMAT parquet)")
            _fsync(tmp)
            os.replace(tmp, path)
            written.append(path)
    return written
