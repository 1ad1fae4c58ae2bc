"""Scored tables: `scores.<model>` holds the latest scores (replaced in one transaction), and
`scores.<model>_history` keeps every scoring run for comparisons over time."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd

from warehouse.db import transaction


def write_scores(con: duckdb.DuckDBPyConnection, model: str, scored: pd.DataFrame, *, version: int,
                 snapshot_date: date, run_id: str, scored_at: datetime | None = None,
                 order_by: str = "customer_id", renamed: dict[str, str] | None = None) -> int:
    """Replace scores.<model> with `scored` (+ model, version, snapshot, scored_at, run id) and put the same
    rows in scores.<model>_history in place of any earlier ones of the same snapshot and version. Readers see
    the old tables or the new ones, never half of them. `renamed` (old name -> name): columns a history made
    before a rename still has under the old name take the new one, so the history stays one series."""
    scored_at = scored_at or datetime.now()
    # Scores usually arrive in order already (the features are read sorted by customer): sorting millions of
    # rows again would only cost the memory of a second copy.
    order = "" if sorted_by(scored, [c.strip() for c in order_by.split(",")]) else f"ORDER BY {order_by}"
    with transaction(con, {"_scored": scored}):
        con.execute(f"""
            CREATE OR REPLACE TABLE scores.{model} AS
            SELECT s.*, '{model}' AS model_name, {int(version)} AS model_version, ?::DATE AS snapshot_date,
                   ?::TIMESTAMP AS scored_at, ? AS run_id
            FROM _scored s {order}""", [snapshot_date, scored_at, run_id])
        con.execute(f"CREATE TABLE IF NOT EXISTS scores.{model}_history AS SELECT * FROM scores.{model} LIMIT 0")
        # a column a newer version of the model adds (credit_risk's model_kind) joins the history, NULL in the
        # rows scored before it
        have = {r[0]: r[1] for r in con.execute(f"DESCRIBE scores.{model}_history").fetchall()}
        for old, new in (renamed or {}).items():
            if old in have and new not in have:
                con.execute(f'ALTER TABLE scores.{model}_history RENAME COLUMN "{old}" TO "{new}"')
                have[new] = have.pop(old)
        for name, kind, *_ in con.execute(f"DESCRIBE scores.{model}").fetchall():
            if name not in have:
                con.execute(f'ALTER TABLE scores.{model}_history ADD COLUMN "{name}" {kind}')
            elif have[name] == "FLOAT" and kind == "DOUBLE":  # scored as float32 before: one type for the series
                con.execute(f'ALTER TABLE scores.{model}_history ALTER COLUMN "{name}" TYPE DOUBLE')
        # One set of rows per snapshot and model version: a rerun (after a crash, or twice a day on the same
        # data) replaces its earlier rows instead of doubling them.
        con.execute(f"DELETE FROM scores.{model}_history WHERE snapshot_date IS NOT DISTINCT FROM ?::DATE "
                    "AND model_version = ?", [snapshot_date, int(version)])
        con.execute(f"INSERT INTO scores.{model}_history BY NAME SELECT * FROM scores.{model}")
    return len(scored)


def sorted_by(frame: pd.DataFrame, columns: list[str]) -> bool:
    """Whether `frame`'s rows are already in ascending order of `columns` as DuckDB would sort them (strings
    by code point, which is UTF-8 byte order). False when unsure: NULLs, a column it does not hold, mixed types."""
    if len(frame) < 2:
        return True
    if any(c not in frame.columns or frame[c].isna().any() for c in columns):
        return False
    ties = np.ones(len(frame) - 1, dtype=bool)  # pairs of neighbours equal on every column so far
    try:
        for c in columns:
            a = frame[c].to_numpy()
            before, after = a[:-1], a[1:]
            if (ties & (after < before)).any():
                return False
            ties &= after == before
            if not ties.any():
                break
    except TypeError:
        return False
    return True
