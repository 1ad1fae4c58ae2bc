"""The home folder and DuckDB connections.

DuckDB allows one writing process per file, so the pipeline opens the working database briefly, inside
`with`, and Dagster runs at most one writer at a time (pool `warehouse`, limit 1).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

DEFAULT_HOME = ".scorehouse"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Home:
        return cls(Path(home or os.environ.get("SCOREHOUSE_HOME") or DEFAULT_HOME).expanduser().resolve())

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


def has_rows(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table` (schema-qualified) holds at least one row, without counting them all."""
    return con.execute(f"SELECT count(*) > 0 FROM (SELECT 1 FROM {table} LIMIT 1)").fetchone()[0]


@contextmanager
def connect(path: str | Path, read_only: bool = False, memory_limit: str | None = None, threads: int | None = None):
    """A short-lived connection; spills to <home>/tmp so big loads stay within the memory limit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"preserve_insertion_order": "true"}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = str(threads)
    if not read_only:
        tmp = path.parent / "tmp"
        tmp.mkdir(exist_ok=True)
        config["temp_directory"] = str(tmp)
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, frames: dict | None = None):
    """One transaction with DataFrames registered as views by name: committed if the body returns, rolled
    back if it raises (readers see all of it or none), the views dropped either way."""
    frames = frames or {}
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        con.execute("BEGIN TRANSACTION")
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in frames:
            con.unregister(name)
