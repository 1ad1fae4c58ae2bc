"""Helpers of the iceberg backend's tests: a lake of the test's own, and feature tables compared row for row."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from tests.postgres import bindir
from warehouse.lake import LakeLocation

KEYS = {"labels": ["customer_id", "label"]}


def new_lake(postgres_url: str, name: str, folder: Path) -> LakeLocation:
    """A catalog database of its own on the session's server, and a warehouse folder."""
    subprocess.run([bindir() / "psql", postgres_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    return LakeLocation(postgres_url.rsplit("/", 1)[0] + f"/{name}", str(folder))


def frame(con, table: str) -> pd.DataFrame:
    keys = KEYS.get(table, ["customer_id"])
    return con.execute(f"SELECT * FROM features.{table}").df().sort_values(keys).reset_index(drop=True)


def assert_same(embedded: pd.DataFrame, lake: pd.DataFrame, table: str) -> None:
    """Equal rows (floats to 1e-9) in the same column order: models see their inputs in that order."""
    assert list(lake.columns) == list(embedded.columns), table
    assert len(lake) == len(embedded) > 0, table
    for c in embedded.columns:
        a, b = embedded[c], lake[c]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            assert np.allclose(a.astype(float), b.astype(float), rtol=1e-9, atol=1e-9, equal_nan=True), (table, c)
        else:
            assert [None if pd.isna(v) else v for v in a] == [None if pd.isna(v) else v for v in b], (table, c)
