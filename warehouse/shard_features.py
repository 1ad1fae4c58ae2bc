"""Feature tables built shard by shard on the iceberg backend (docs/scale-out.md), with the pipeline's own SQL.

Each step opens a DuckDB of its own in memory, reads its part of the lake into the same tables the embedded
warehouse has (raw.<table>, raw.<table>_history, features.<table>), runs warehouse/features.py's builders, and
writes its results back as one part each (`Lake.write_part`). What a shard cannot know alone is decided for the
whole bank: the pivot columns and the customer attributes before the shards (`plan`), the columns computed
over the whole population (quintiles, percentiles, group shares) after them (`population_step`), from a
narrow projection of every shard's rows. The tables a shard reads back (`load_features`) then equal, row for
row, the tables the embedded warehouse builds from the same deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa

from warehouse import failpoints
from warehouse import features as F
from warehouse.contract import HISTORY, LINEAGE, TABLES, Table
from warehouse.db import content_version
from warehouse.lake import CHUNK_ROWS, Lake
from warehouse.schema import ensure_raw_table, ensure_schemas, storage, table_mode
from warehouse.shards import check, shard_sql

FEATURE_TABLES = ("population", "rfm", "balances", "holdings", "labels", "customer_features")
SCORES = "features.population_scores"
# Each snapshot's columns of each feature table, in order: a lake table's schema is the union of every snapshot's
# (pivot columns differ between dates), a reader of one snapshot takes that snapshot's own.
COLUMNS = "features.columns"


def _arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """A query's rows as Arrow without a copy (the relation API), once the warehouse functions' last execute()
    is run to its end (they read single rows with fetchone, which leaves it open)."""
    con.complete()
    return con.sql(query).to_arrow_table()


def _per_customer(contract: Table) -> bool:
    return any(c.name == "customer_id" for c in contract.columns)


@dataclass(frozen=True)
class Plan:
    """What every shard builds with, decided once for the bank."""

    snapshot: date
    pivots: dict[str, list[str]]
    extras: list[tuple[str, str]]


def plan(con: duckdb.DuckDBPyConnection, snap: date) -> Plan:
    """The pivot lists (recorded in features.pivots, as the embedded build does) and the customer attributes
    used as features, chosen over the whole bank's raw tables in `con`."""
    return Plan(snap, F.pivot_values(con, snap), F.customer_extra_columns(con))


@dataclass(frozen=True)
class RawExport:
    """What the shard steps export of the per-customer raw tables: each lake table's fingerprint of its rows in
    the control file (what a part is stamped with when written from them)."""

    shards: int
    sources: dict[str, str]


def export_shared(con: duckdb.DuckDBPyConnection, lake: Lake, shards: int
                  ) -> tuple[RawExport, dict[str, tuple[int, bool]]]:
    """The raw tables that are not per customer (products, managers, agencies, targets) into the lake whole, in
    shard 0, unless the lake holds them as written from the same rows; the per-customer tables' fingerprints for
    `export_shard`, and their parts of shards >= `shards` dropped (a bank re-sharded to fewer shards keeps no
    stale part). Returns the export's plan, and (rows, exported) per shared table."""
    check(shards)
    sources, written = {}, {}
    for contract in TABLES.values():
        mode = table_mode(con, contract.name)
        if mode is None:
            continue
        table = storage(contract, mode)
        source = f"{content_version(con, table, exact=True)}/{shards} shards"
        if _per_customer(contract):
            sources[table] = source
            lake.drop_shards_from(table, shards)
            continue
        (rows,), = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        new = not lake.part_stamped(table, 0, source)
        if new:
            lake.write_part(table, _arrow(con, f"SELECT * FROM {table}"), shard=0, stamp=source)
        written[table] = (rows, new)
    return RawExport(shards, sources), written


def export_shard(con: duckdb.DuckDBPyConnection, lake: Lake, shard: int, raw: RawExport) -> dict[str, int]:
    """Shard `shard`'s rows of every per-customer raw table into the lake, read from `con` (the control file;
    read-only is enough, so the shards' steps read it side by side), except the parts the lake holds as written
    from the same rows (a re-run, or a backfill of another date). Returns the rows written per table."""
    written = {}
    for table, source in raw.sources.items():
        if lake.part_stamped(table, shard, source):
            continue
        con.complete()
        query = f"SELECT * FROM {table} WHERE {shard_sql('customer_id', raw.shards)} = {shard}"
        lake.write_part(table, con.sql(query).to_arrow_reader(CHUNK_ROWS), shard=shard, stamp=source)
        written[table] = lake.count(table, shard=shard)
    return written


def export_raw(con: duckdb.DuckDBPyConnection, lake: Lake, shards: int) -> dict[str, tuple[int, bool]]:
    """Every raw table into the lake, the shards one after the other in this process (job `lake` exports each
    shard in its own step). Returns (rows, exported) per lake table."""
    raw, written = export_shared(con, lake, shards)
    exported = {t for k in range(shards) for t in export_shard(con, lake, k, raw)}
    for table in raw.sources:
        (rows,), = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        written[table] = (rows, table in exported)
    return written


def load_raw(con: duckdb.DuckDBPyConnection, lake: Lake, shard: int | None, only: tuple[str, ...] | None = None,
             pins: dict[str, int | None] | None = None) -> None:
    """raw.* in `con` as the ingest keeps them, holding shard `shard`'s customers (None: every shard) and every
    row of the tables that are not per customer; `pins` reads each table as of a pinned lake snapshot."""
    pins = pins or {}
    ensure_schemas(con)
    for contract in TABLES.values():
        if only is not None and contract.name not in only:
            continue
        history = f"raw.{contract.name}_history"
        mode = "snapshot" if lake.exists(history) else "events" if lake.exists(f"raw.{contract.name}") else None
        if mode is None:
            ensure_raw_table(con, contract)  # never delivered: empty, as in the embedded warehouse
            continue
        name = storage(contract, mode)
        rows = lake.read(name, shards=[shard] if shard is not None and _per_customer(contract) else None,
                         at=pins.get(name))
        known = {c.name for c in (*contract.columns, *LINEAGE, *HISTORY)}
        con.register("_rows", rows)
        con.complete()
        rel = con.table("_rows")
        extras = {n: str(t) for n, t in zip(rel.columns, rel.types, strict=True) if n not in known}
        table = ensure_raw_table(con, contract, extras=extras, mode=mode)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")


def build_shard(lake: Lake, shard: int, p: Plan) -> dict[str, int]:
    """One shard's feature tables, without the population's columns, written to the lake for (shard,
    snapshot). Returns rows per table."""
    with duckdb.connect() as con:
        load_raw(con, lake, shard)
        con.execute("CREATE SCHEMA IF NOT EXISTS features")
        snap = p.snapshot
        counts = {"population": F.build_population(con, snap),
                  "rfm": F.build_rfm(con, snap, p.pivots, scores=False),
                  "balances": F.build_balances(con, snap),
                  "holdings": F.build_holdings(con, snap, p.pivots),
                  "labels": F.build_labels(con, snap),
                  "customer_features": F.build_customer_features(con, snap, p.extras, population=False)}
        for t in FEATURE_TABLES:
            lake.write_part(f"features.{t}", _arrow(con, f"SELECT * FROM features.{t}"), shard=shard, snapshot=snap)
            failpoints.reached("lake_shard")
        lake.write_part(COLUMNS, _arrow(con, "SELECT table_name, column_name, ordinal_position FROM "
                                             "information_schema.columns WHERE table_schema = 'features' AND "
                                             f"table_name IN {FEATURE_TABLES}"), shard=shard, snapshot=snap)
    return counts


def population_step(lake: Lake, shards: int, snap: date) -> int:
    """features.population_scores for every customer of every shard, from the shards' narrow inputs, written
    back shard by shard. Returns the customers scored."""
    inputs = lake.read("features.customer_features", snapshot=snap, columns=F.POPULATION_INPUTS)
    with duckdb.connect() as con:
        load_raw(con, lake, None, only=("managers",))
        con.execute("CREATE SCHEMA IF NOT EXISTS features")
        con.register("_inputs", inputs)
        n = F.build_population_scores(con, "_inputs", snap)
        con.execute(f"CREATE TEMP TABLE _sharded AS SELECT *, {shard_sql('customer_id', shards)} AS _part "
                    f"FROM {SCORES}")
        for k in range(shards):
            lake.write_part(SCORES, _arrow(con, f"SELECT * EXCLUDE (_part) FROM _sharded WHERE _part = {k}"),
                            shard=k, snapshot=snap)
    return n


def load_features(con: duckdb.DuckDBPyConnection, lake: Lake, shard: int | None, snap: date,
                  pins: dict[str, int | None] | None = None) -> None:
    """features.* in `con` for one shard (None: every shard) as of the snapshot date, the population's columns
    joined in: the tables a model trains on or scores, equal to the embedded build's rows. `pins` reads each
    table as of a pinned lake snapshot (Lake.pin), so a reader never mixes two runs' parts."""
    shards = None if shard is None else [shard]
    pins = pins or {}
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    own = _columns(lake, shard, snap, pins.get(COLUMNS))
    for t in FEATURE_TABLES:
        rows = lake.read(f"features.{t}", shards=shards, snapshot=snap, at=pins.get(f"features.{t}"))
        con.register("_rows", rows.select(own[t]) if t in own else rows)
        order = "customer_id, label" if t == "labels" else "customer_id"  # as the embedded build stores them
        con.execute(f"CREATE OR REPLACE TABLE features.{t} AS SELECT * FROM _rows ORDER BY {order}")
    con.register("_rows", lake.read(SCORES, shards=shards, snapshot=snap, at=pins.get(SCORES)))
    F.add_population_scores(con, "_rows")
    con.unregister("_rows")


def _columns(lake: Lake, shard: int | None, snap: date, at: int | None) -> dict[str, list[str]]:
    """The columns each feature table was built with for the snapshot date, in order (every shard builds with
    the same plan: one list); empty for a lake written before the lists were kept."""
    if not lake.exists(COLUMNS):
        return {}
    listed = lake.read(COLUMNS, shards=None if shard is None else [shard], snapshot=snap, at=at).to_pandas()
    first = listed.drop_duplicates(["table_name", "column_name"]).sort_values(["table_name", "ordinal_position"])
    return {t: list(g["column_name"]) for t, g in first.groupby("table_name")}
