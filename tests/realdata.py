"""What the model tests share: the real data sets (checked against MD5SUMS.txt, skipped when absent) and a
warehouse built the way the pipeline builds it (ingest every table of a source, then every feature table)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from warehouse import features as F
from warehouse.db import connect
from warehouse.ingest import ingest_table
from warehouse.schema import ensure_all_raw_tables
from warehouse.sources import load_source

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


def verify_md5(path: Path) -> Path:
    """`path` (a file under DATA) after checking it against MD5SUMS.txt; skips the test when it is absent."""
    if not path.is_file() or not (DATA / "MD5SUMS.txt").is_file():
        pytest.skip(f"real data set absent: {path.resolve()}")
    sums = {name.strip(): digest for digest, name in
            (line.split(maxsplit=1) for line in (DATA / "MD5SUMS.txt").read_text().splitlines() if line.strip())}
    rel = "./" + path.resolve().relative_to(DATA.resolve()).as_posix()
    assert hashlib.md5(path.read_bytes()).hexdigest() == sums[rel], f"{rel}: MD5 differs from MD5SUMS.txt"
    return path


def build_warehouse(source: str, landing: Path, db: Path, features: bool = True) -> Path:
    """Ingest a source's files into `db` (and build the feature tables) with the pipeline's own functions."""
    src = load_source(source)
    with connect(db) as con:
        ensure_all_raw_tables(con)
        for table in src.feeds:
            ingest_table(con, src, table, landing, log=lambda m: None)
        if features:
            F.build_all(con, F.resolve_snapshot(con, src.snapshot_date, src.holdout_days))
    return db
