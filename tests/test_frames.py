"""warehouse.frames.frame gives what DuckDB's .df() gives, one block per column."""

from __future__ import annotations

import duckdb
import pandas as pd

from warehouse.frames import frame

EVERY_TYPE = """SELECT * FROM (VALUES
    (1, 1::SMALLINT, 2::BIGINT, 1.5::DOUBLE, 1.5::FLOAT, 'a', true, DATE '2026-01-01', TIMESTAMP '2026-01-01 10:00',
     1.25::DECIMAL(10, 2), 1::UBIGINT),
    (NULL, NULL, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 3, 4, 3.5, 3.5, 'c', false, DATE '2026-01-03', TIMESTAMP '2026-01-03 10:00', 2.5, 3))
    t(i, i16, big, d, f, s, b, dt, ts, dec, ub)"""


def test_the_same_columns_types_and_values_as_df_nulls_included():
    with duckdb.connect() as con:
        for sql in (EVERY_TYPE, f"SELECT * FROM ({EVERY_TYPE}) WHERE i = 1", f"SELECT * FROM ({EVERY_TYPE}) WHERE false"):
            expected, got = con.execute(sql).df(), frame(con.execute(sql))
            pd.testing.assert_frame_equal(got, expected)
        got = frame(con.execute(EVERY_TYPE))
    assert str(got["i"].dtype) == "Int32" and got["i"].isna().tolist() == [False, True, False]
    assert got["s"].tolist() == ["a", None, "c"] and got._mgr.nblocks == got.shape[1]  # nothing consolidated
