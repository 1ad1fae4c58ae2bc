"""`monitoring.drift`: PSI and KS of every scoring run against the champion's reference, kept as history."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd

from warehouse.db import transaction

DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.drift (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    model_version INTEGER NOT NULL,
    feature VARCHAR NOT NULL,        -- a model input, or a score column (kind = 'score')
    kind VARCHAR NOT NULL,           -- feature | score
    psi DOUBLE NOT NULL,
    ks DOUBLE,                       -- numeric columns only
    band VARCHAR NOT NULL,           -- stable | warn | alert (monitoring.drift bands) | skipped (not counted)
    reference_mean DOUBLE,
    current_mean DOUBLE,
    snapshot_date DATE,
    measured_at TIMESTAMP NOT NULL,
    weight DOUBLE,                   -- an input's share of the model's importance (null for scores)
    note VARCHAR,                    -- why a skipped column is not counted
    reference_rows BIGINT,           -- rows of the reference population (training) ...
    current_rows BIGINT              -- ... and of this run's scores
);
-- tables made before these columns existed get them (older rows: null)
ALTER TABLE monitoring.drift ADD COLUMN IF NOT EXISTS weight DOUBLE;
ALTER TABLE monitoring.drift ADD COLUMN IF NOT EXISTS note VARCHAR;
ALTER TABLE monitoring.drift ADD COLUMN IF NOT EXISTS reference_rows BIGINT;
ALTER TABLE monitoring.drift ADD COLUMN IF NOT EXISTS current_rows BIGINT"""

COLUMNS = ["run_id", "model", "model_version", "feature", "kind", "psi", "ks", "band", "reference_mean",
           "current_mean", "snapshot_date", "measured_at", "weight", "note", "reference_rows", "current_rows"]


def write_drift(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame, *, run_id: str, model: str, version: int,
                snapshot_date: date | None) -> None:
    """Append one scoring run's drift rows (columns of quality.drift.measure, plus reference_rows and
    current_rows). A rerun of the same run (e.g. after a crash) replaces its rows instead of doubling them."""
    con.execute(DDL)
    frame = rows.assign(run_id=run_id, model=model, model_version=int(version), snapshot_date=snapshot_date,
                        measured_at=datetime.now()).reindex(columns=COLUMNS)
    with transaction(con, {"_drift": frame}):
        con.execute("DELETE FROM monitoring.drift WHERE run_id = ? AND model = ?", [run_id, model])
        con.execute("INSERT INTO monitoring.drift BY NAME SELECT * FROM _drift")


def run_drift(con: duckdb.DuckDBPyConnection, model: str, run_id: str) -> pd.DataFrame:
    """The model's rows of one scoring run, worst first."""
    con.execute(DDL)
    return con.execute("SELECT * FROM monitoring.drift WHERE model = ? AND run_id = ? ORDER BY psi DESC",
                       [model, run_id]).df()
