"""Dagster data versions of the warehouse's tables: a model is "stale" in the UI only when its data changed."""

from __future__ import annotations

import duckdb

from warehouse.db import content_version


def test_a_rebuild_that_differs_only_in_the_last_bits_of_a_sum_is_the_same_version():
    """DuckDB's parallel sums and averages may differ in the last bits between two builds of the same rows: after
    every daily run on unchanged data, every challenger showed as stale ("has a new data version")."""
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA f")
        rows = "SELECT 'C' || i AS customer_id, (i * 0.1)::DOUBLE AS monetary, i % 7 AS frequency FROM range(1000) r(i)"
        con.execute(f"CREATE TABLE f.a AS {rows}")
        # the same rows, each double one unit in the last place away, as another summation order gives
        con.execute(f"CREATE TABLE f.b AS SELECT customer_id, nextafter(monetary, 1e9) AS monetary, frequency "
                    f"FROM ({rows})")
        assert con.execute("SELECT count(*) FROM f.a JOIN f.b USING (customer_id) "
                           "WHERE a.monetary <> b.monetary").fetchall() == [(1000,)]
        assert content_version(con, "f.a") == content_version(con, "f.b")
        # a real change, in a double or elsewhere, is a new version
        con.execute("CREATE TABLE f.c AS SELECT * REPLACE (CASE WHEN customer_id = 'C5' THEN monetary * 1.001 "
                    "ELSE monetary END AS monetary) FROM f.a")
        con.execute("CREATE TABLE f.d AS SELECT * REPLACE (CASE WHEN customer_id = 'C5' THEN 3 ELSE frequency "
                    "END AS frequency) FROM f.a")
        assert len({content_version(con, f"f.{t}") for t in "acd"}) == 3
        # zero and NULL are different values
        con.execute("CREATE TABLE f.z AS SELECT 0.0::DOUBLE AS x")
        con.execute("CREATE TABLE f.n AS SELECT NULL::DOUBLE AS x")
        assert content_version(con, "f.z") != content_version(con, "f.n")
