"""The model registry: `ml.model_registry` in the warehouse DuckDB, artifacts under <home>/models/.

One row per trained version with what it was trained on, its holdout metrics and its alias: `challenger`
when registered, `champion` once promoted (the previous champion becomes `retired`), `rejected` when its
gate failed. XGBoost boosters are saved with `save_model` (JSON, portable across XGBoost versions); the
rest of a model (feature spec, calibrator, params) with joblib beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import joblib

if TYPE_CHECKING:
    import xgboost as xgb

DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.model_registry (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    trained_at TIMESTAMP NOT NULL,
    snapshot_date DATE,
    data_hash VARCHAR,
    features VARCHAR[],
    params JSON,
    metrics JSON,
    artifact_path VARCHAR,
    alias VARCHAR NOT NULL,          -- challenger | champion | retired | rejected | abandoned
    note VARCHAR,                    -- why it was promoted or rejected
    run_id VARCHAR,
    PRIMARY KEY (model, version)
)"""


@dataclass
class Entry:
    model: str
    version: int
    alias: str
    metrics: dict
    artifact_path: str
    snapshot_date: date | None = None
    features: list[str] | None = None
    trained_at: datetime | None = None


def ensure_registry(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def save_artifacts(models_dir: Path, model: str, version: int, booster: xgb.Booster, rest: object) -> Path:
    """<models_dir>/<model>/v<version>/: booster.json and model.joblib. Returns the folder."""
    folder = models_dir / model / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(folder / "booster.json")
    joblib.dump(rest, folder / "model.joblib")
    return folder


def load_artifacts(folder: str | Path) -> tuple[xgb.Booster, object]:
    import xgboost as xgb  # here, not at the top: the Definitions load without it (assets/lazy.py)

    folder = Path(folder)
    booster = xgb.Booster()
    booster.load_model(folder / "booster.json")
    return booster, joblib.load(folder / "model.joblib")


def next_version(con: duckdb.DuckDBPyConnection, model: str) -> int:
    ensure_registry(con)
    return con.execute("SELECT coalesce(max(version), 0) + 1 FROM ml.model_registry WHERE model = ?",
                       [model]).fetchone()[0]


def register(con: duckdb.DuckDBPyConnection, model: str, version: int, *, snapshot_date: date | None,
             data_hash: str, features: list[str], params: dict, metrics: dict, artifact_path: str | Path,
             run_id: str = "", alias: str = "challenger") -> Entry:
    ensure_registry(con)
    con.execute(
        "INSERT INTO ml.model_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        [model, version, datetime.now(), snapshot_date, data_hash, features, json.dumps(params, default=str),
         json.dumps(metrics), str(artifact_path), alias, run_id],
    )
    return Entry(model, version, alias, metrics, str(artifact_path), snapshot_date, features)


def abandon_challengers(con: duckdb.DuckDBPyConnection, model: str, run_id: str) -> list[int]:
    """Mark `abandoned` the challengers other runs registered and never gated (killed before their gate):
    only the newest challenger is ever gated, and a stale one must not be promoted later."""
    ensure_registry(con)
    stale = [v for (v,) in con.execute(
        "SELECT version FROM ml.model_registry WHERE model = ? AND alias = 'challenger' AND run_id IS DISTINCT FROM ? "
        "ORDER BY version", [model, run_id]).fetchall()]
    if stale:
        con.execute("UPDATE ml.model_registry SET alias = 'abandoned', note = 'its run ended before the gate' "
                    f"WHERE model = ? AND version IN ({', '.join(map(str, stale))})", [model])
    return stale


def _entry(row) -> Entry | None:
    if row is None:
        return None
    model, version, alias, metrics, path, snap, features, trained_at = row
    return Entry(model, version, alias, json.loads(metrics) if metrics else {}, path, snap, features, trained_at)


def get(con: duckdb.DuckDBPyConnection, model: str, alias: str | None = None, version: int | None = None) -> Entry | None:
    """The newest version with this alias (or exactly this version)."""
    ensure_registry(con)
    cond, args = ("version = ?", [version]) if version is not None else ("alias = ?", [alias])
    return _entry(con.execute(
        "SELECT model, version, alias, metrics, artifact_path, snapshot_date, features, trained_at FROM ml.model_registry "
        f"WHERE model = ? AND {cond} ORDER BY version DESC LIMIT 1", [model, *args]).fetchone())


def due_for_training(con: duckdb.DuckDBPyConnection, models: list[str], max_age_days: float,
                     now: datetime | None = None) -> list[str]:
    """The models with no champion, or a champion trained more than `max_age_days` ago (read only)."""
    have = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' "
                       "AND table_name = 'model_registry'").fetchone()[0]
    if not have:
        return list(models)
    fresh = {m for m, at in con.execute(
        "SELECT model, max(trained_at) FROM ml.model_registry WHERE alias = 'champion' GROUP BY model").fetchall()
        if (now or datetime.now()) - at < timedelta(days=max_age_days)}
    return [m for m in models if m not in fresh]


def promote(con: duckdb.DuckDBPyConnection, model: str, version: int, note: str) -> None:
    """Make `version` the champion; the previous champion is retired. One transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE ml.model_registry SET alias = 'retired' WHERE model = ? AND alias = 'champion'", [model])
        con.execute("UPDATE ml.model_registry SET alias = 'champion', note = ? WHERE model = ? AND version = ?",
                    [note, model, version])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def reject(con: duckdb.DuckDBPyConnection, model: str, version: int, note: str) -> None:
    con.execute("UPDATE ml.model_registry SET alias = 'rejected', note = ? WHERE model = ? AND version = ?",
                [note, model, version])


def compare(challenger: dict, champion: dict | None, thresholds: dict[str, tuple[str, float]],
            higher_is_better: dict[str, bool], tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """The promotion gate: every threshold met (`metric: (">=" | "<=", value)`) AND no metric worse than the
    champion's on the same holdout (beyond `tolerance`). Returns (passed, reasons it failed)."""
    failures = []
    for metric, (op, bound) in thresholds.items():
        value = challenger.get(metric)
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        if not ok:
            failures.append(f"{metric} {value if value is None else round(value, 4)} not {op} {bound}")
    if champion:
        for metric, up in higher_is_better.items():
            new, old = challenger.get(metric), champion.get(metric)
            if new is None or old is None:
                continue
            worse = (new < old - tolerance) if up else (new > old + tolerance)
            if worse:
                failures.append(f"{metric} {new:.4f} worse than champion's {old:.4f}")
    return not failures, failures
