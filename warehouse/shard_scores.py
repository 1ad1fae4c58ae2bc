"""Scores written shard by shard on the iceberg backend (docs/scale-out.md), by the pipeline's own models.

A scoring step gets a DuckDB file of its own holding one shard's raw and feature tables as the embedded
warehouse has them (`shard_warehouse`): the models score it unchanged, and each model's rows go to the lake
as the shard's part of scores.<model> for the snapshot date (`write_scores`). What one shard cannot decide
alone (a rank over every transaction, a tier by share of customers) is computed again over a narrow read of
all shards' rows afterwards (`population_columns`) and written into each shard's part by a step of its own
(`apply_population`), so the lake's tables equal, row for row, what the embedded warehouse scores.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from warehouse import failpoints
from warehouse.db import Home, connect
from warehouse.lake import SHARD, Lake
from warehouse.mapping import ident, sql_str
from warehouse.serving import Published, publish
from warehouse.shard_features import load_features, load_raw


def table(model: str) -> str:
    return f"scores.{model}"


def shard_warehouse(path: Path, lake: Lake, shard: int, snap: date, pins: dict[str, int | None] | None = None
                    ) -> None:
    """A DuckDB file at `path` with shard `shard`'s raw tables and its feature tables as of `snap` (the
    population's columns joined in): what a model's scoring reads."""
    with connect(path) as con:
        load_raw(con, lake, shard, pins=pins)
        load_features(con, lake, shard, snap, pins)


def write_scores(lake: Lake, model: str, scored: pd.DataFrame, *, shard: int, snap: date, scored_date: date,
                 version: int, run_id: str, scored_at: datetime) -> int:
    """One shard's scores of `model` as its part of scores.<model> for the snapshot date `snap`, with the columns
    the embedded scores.<model> has after the model's own (snapshot_date: the date the model says it scored as
    of, `scored_date`). Returns the rows written."""
    rows = scored.assign(model_name=model, model_version=int(version), snapshot_date=scored_date,
                         scored_at=scored_at, run_id=run_id)
    arrow = pa.Table.from_pandas(rows, preserve_index=False)
    if not len(rows):  # no rows, no types: the table's own (an empty read); no table yet, nothing to empty
        if not lake.exists(table(model)):
            return 0
        arrow = lake.read(table(model), shards=[-1])
    lake.write_part(table(model), arrow, shard=shard, snapshot=snap)
    failpoints.reached("lake_score")
    return len(rows)


def population_columns(lake: Lake, model: str, snap: date, *, key: tuple[str, ...], order: tuple[str, ...],
                       inputs: tuple[str, ...], columns: tuple[str, ...],
                       compute: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame | None:
    """The columns of scores.<model> that only every shard's rows together decide, for the snapshot date: `compute`
    over a narrow read of `key`, `order` and `inputs` sorted by `order`. Returns `key`, `columns` and the shard
    each row belongs to (`_shard`: `apply_population` takes its own); None when the table is not in the lake."""
    name = table(model)
    if not lake.exists(name):
        return None
    narrow = list(dict.fromkeys((*key, *order, *inputs)))
    rows = lake.read(name, snapshot=snap, columns=narrow, with_shard=True).to_pandas()
    rows = rows.sort_values(list(order), kind="stable").reset_index(drop=True)
    return pd.concat([rows[[*key, SHARD]], compute(rows)[list(columns)]], axis=1)


def apply_population(lake: Lake, model: str, shard: int, snap: date, fixed: pd.DataFrame,
                     key: tuple[str, ...]) -> int:
    """Shard `shard`'s part of scores.<model> rewritten with the columns `fixed` holds for its rows (its slice of
    `population_columns`). Returns the rows."""
    name = table(model)
    part = lake.read(name, shards=[shard], snapshot=snap).to_pandas()
    if not len(part):
        return 0
    columns = [c for c in fixed.columns if c not in key and c != SHARD]
    merged = part.drop(columns=columns).merge(fixed[[*key, *columns]], on=list(key), how="left",
                                              validate="one_to_one")
    lake.write_part(name, pa.Table.from_pandas(merged[part.columns], preserve_index=False), shard=shard, snapshot=snap)
    return len(part)


def read_scores(lake: Lake, model: str, snap: date, at: int | None = None) -> pd.DataFrame:
    """scores.<model> for the snapshot date from every shard (as of lake snapshot `at`)."""
    return lake.read(table(model), snapshot=snap, at=at).to_pandas()


# What a lake publish copies from the DuckDB file as it is: the registry and runs, drift, the dimensions BI joins
# (warehouse/serving.py DIMENSIONS), and the scores of the models not scored by shard (manager, agency).
FROM_FILE = ("ml.model_registry", "ml.model_runs", "monitoring.drift", "raw.customers", "raw.agencies",
             "raw.products")


def publish_from_lake(con: duckdb.DuckDBPyConnection, home: Home, lake: Lake, lake_models: list[str],
                      pins: dict[str, int | None], run_id: str, **publishing) -> tuple[Published, dict[str, int],
                                                                                       dict[str, date]]:
    """serving.duckdb published (warehouse/serving.py `publish`, with `publishing`'s arguments) from a staging
    file beside the working one (`con`), filled by `stage_publish` with `lake_models`' scores from the lake; the
    staging file is removed afterwards.
    Returns what was published, the rows read from the lake per table and each model's snapshot date served."""
    staging = home.root / "tmp" / f"lake-publish-{run_id}.duckdb"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.unlink(missing_ok=True)
    working = con.execute("SELECT current_database()").fetchone()[0]
    con.execute(f"ATTACH {sql_str(staging)} AS lake_publish")
    try:
        counts, dates = stage_publish(con, "lake_publish", lake, lake_models, pins)
        con.execute("USE lake_publish")
        return publish(con, home, run_id=run_id, **publishing), counts, dates
    finally:
        con.execute(f"USE {ident(working)}")
        con.execute("DETACH lake_publish")
        staging.unlink(missing_ok=True)


def stage_publish(con: duckdb.DuckDBPyConnection, catalog: str, lake: Lake, models: list[str],
                  pins: dict[str, int | None]) -> tuple[dict[str, int], dict[str, date]]:
    """Fill the attached, empty DuckDB catalog `catalog` with what warehouse/serving.py publishes, from the lake
    at the pinned snapshot ids for `models` (scores.<model>: the newest snapshot date the table holds, so a
    backfilled past date never replaces the current scores; scores.<model>_history: every snapshot date) and
    from `con`'s own catalog for the rest. Returns rows per lake table and each model's snapshot date served."""
    home = con.execute("SELECT current_database()").fetchone()[0]
    have = {f"{s}.{t}" for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = ?", [home]).fetchall()}
    for schema in ("ml", "monitoring", "raw", "scores"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}")
    own = [t for t in have if t.startswith("scores.") and t.removesuffix("_history").split(".")[1] not in models]
    for name in [*(t for t in FROM_FILE if t in have), *sorted(own)]:
        con.execute(f"CREATE TABLE {catalog}.{name} AS SELECT * FROM {home}.{name}")
    counts, dates = {}, {}
    for model in models:
        at = pins.get(table(model))
        if at is None:
            continue
        dates[model] = lake.latest_snapshot(table(model), at)
        for name, rows in ((table(model), lake.read(table(model), snapshot=dates[model], at=at)),
                           (f"{table(model)}_history", lake.read(table(model), at=at))):
            con.register("_rows", rows)
            con.execute(f"CREATE TABLE {catalog}.{name} AS SELECT * FROM _rows")
            con.unregister("_rows")
            counts[name] = rows.num_rows
    return counts, dates
