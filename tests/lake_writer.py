"""A shard writer for tests/test_lake.py, run in-process or as its own process (`python -m tests.lake_writer
CATALOG WAREHOUSE SHARD FIRST LAST`): the rows of one shard of a 2,000-customer table, values depending on the round."""

from __future__ import annotations

import sys
from datetime import date

import duckdb

from warehouse.lake import Lake, LakeLocation
from warehouse.shards import shard_sql

TABLE, SNAP = "features.balances", date(2026, 10, 31)


def write_rounds(lake: Lake, shard: int, last: int, first: int = 1) -> None:
    for r in range(first, last + 1):
        rows = duckdb.sql(f"SELECT * FROM (SELECT 'C' || lpad(range::VARCHAR, 6, '0') AS customer_id, range * {r} "
                          f"+ 0.5 AS balance FROM range(2000)) WHERE {shard_sql('customer_id', 4)} = {shard}")
        lake.write_part(TABLE, rows.to_arrow_table(), shard=shard, snapshot=SNAP)


if __name__ == "__main__":
    catalog, warehouse, shard, first, last = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    write_rounds(Lake(LakeLocation(catalog, warehouse)), shard, last, first)
