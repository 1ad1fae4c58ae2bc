"""The model registry: `ml.model_registry` in the warehouse DuckDB, artifacts under <home>/models/.

One row per trained version with what it was trained on, its holdout metrics and its state (`alias`):

    challenger --gate--> approved --promotion--> champion --next promotion--> retired
    challenger --gate--> rejected

Only the gate writes `approved` or `rejected`, and only a version its gate approved in the same run can be
promoted: a version whose run ended before its gate or its promotion (killed anywhere) is marked `abandoned` by
the next training run and is never promotable. XGBoost boosters are saved with `save_model` (JSON, portable
across XGBoost versions); the rest of a model (feature spec, calibrator, params) with joblib beside it.

`ml.model_runs` says what became of every model in every run: trained or not (and why), promoted or kept,
scored with which champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import joblib

from ml.errors import MissingInputs

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
    alias VARCHAR NOT NULL,          -- challenger | approved | rejected | champion | retired | abandoned
    note VARCHAR,                    -- why it was approved, rejected, promoted or abandoned
    run_id VARCHAR,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS ml.model_runs (
    run_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    training VARCHAR,                -- promoted | kept | rejected | not_trained (NULL: not retrained in this run)
    training_note VARCHAR,           -- why not trained, why rejected, what was replaced
    challenger_version INTEGER,
    champion_version INTEGER,        -- the champion after this run's promotion step
    scoring VARCHAR,                 -- scored | no_champion | failed (NULL: not scored in this run)
    scoring_note VARCHAR,
    rows_scored BIGINT,
    outcome VARCHAR,                 -- the whole story in one line, as the CLI and the serving file show it
    updated_at TIMESTAMP,
    PRIMARY KEY (run_id, model)
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


def save_artifacts(models_dir: str | Path, model: str, version: int, rest: dict,
                   boosters: dict[str, xgb.Booster] | None = None) -> Path:
    """<models_dir>/<model>/v<version>/: each XGBoost booster by `save_model` (JSON, portable across XGBoost
    versions: `booster.json`, or `booster_<name>.json` for several) and everything else (plain dicts, arrays,
    params) in model.joblib. The one way every model is saved. Returns the folder."""
    folder = Path(models_dir) / model / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, booster in (boosters or {}).items():
        booster.save_model(folder / (f"booster_{name}.json" if name else "booster.json"))
    joblib.dump(rest, folder / "model.joblib")
    return folder


def load_artifacts(folder: str | Path) -> tuple[dict, dict[str, xgb.Booster]]:
    """What save_artifacts wrote: (model.joblib's contents, {booster name: booster}; "" for booster.json)."""
    folder = Path(folder)
    boosters = {}
    for path in sorted(folder.glob("booster*.json")):
        import xgboost as xgb  # here, not at the top: the Definitions load without it (assets/lazy.py)

        booster = xgb.Booster()
        booster.load_model(path)
        boosters[path.stem.removeprefix("booster").removeprefix("_")] = booster
    return joblib.load(folder / "model.joblib"), boosters


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
    """Mark `abandoned` the versions other runs registered and never promoted (their run ended before the gate,
    or between the gate and the promotion): an approval holds for the run that gated it only."""
    ensure_registry(con)
    stale = [v for (v,) in con.execute(
        "SELECT version FROM ml.model_registry WHERE model = ? AND alias IN ('challenger', 'approved') "
        "AND run_id IS DISTINCT FROM ? ORDER BY version", [model, run_id]).fetchall()]
    if stale:
        con.execute("UPDATE ml.model_registry SET alias = 'abandoned', note = 'its run ended before its promotion' "
                    f"WHERE model = ? AND version IN ({', '.join(map(str, stale))})", [model])
    return stale


def _entry(row) -> Entry | None:
    if row is None:
        return None
    model, version, alias, metrics, path, snap, features, trained_at = row
    return Entry(model, version, alias, json.loads(metrics) if metrics else {}, path, snap, features, trained_at)


def get(con: duckdb.DuckDBPyConnection, model: str, alias: str | None = None, version: int | None = None,
        run_id: str | None = None) -> Entry | None:
    """The newest version with this alias (or exactly this version); with `run_id`, registered by that run."""
    ensure_registry(con)
    cond, args = ("version = ?", [version]) if version is not None else ("alias = ?", [alias])
    if run_id is not None:
        cond, args = f"{cond} AND run_id = ?", [*args, run_id]
    return _entry(con.execute(
        "SELECT model, version, alias, metrics, artifact_path, snapshot_date, features, trained_at FROM ml.model_registry "
        f"WHERE model = ? AND {cond} ORDER BY version DESC LIMIT 1", [model, *args]).fetchone())


def due_for_training(con: duckdb.DuckDBPyConnection, models: list[str], max_age_days: float,
                     now: datetime | None = None) -> list[str]:
    """The models with no champion, a champion trained more than `max_age_days` ago, or a champion whose latest
    scoring failed because its inputs are gone from the features (MissingInputs: a column renamed or no longer
    sent), which could not score again until the next retrain. Read only."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ml'"
                                        ).fetchall()}
    if "model_registry" not in tables:
        return list(models)
    fresh = {m for m, at in con.execute(
        "SELECT model, max(trained_at) FROM ml.model_registry WHERE alias = 'champion' GROUP BY model").fetchall()
        if (now or datetime.now()) - at < timedelta(days=max_age_days)}
    if "model_runs" in tables:
        fresh -= {m for (m,) in con.execute("""
            SELECT r.model FROM (SELECT model, arg_max(scoring, updated_at) AS scoring,
                                        arg_max(scoring_note, updated_at) AS note,
                                        arg_max(champion_version, updated_at) AS version
                                 FROM ml.model_runs WHERE scoring IS NOT NULL GROUP BY model) r
            JOIN ml.model_registry c ON c.model = r.model AND c.alias = 'champion' AND c.version = r.version
            WHERE r.scoring = 'failed' AND starts_with(r.note, ?)""", [MissingInputs.PREFIX]).fetchall()}
    return [m for m in models if m not in fresh]


class NotApproved(RuntimeError):
    """Only a version its gate approved can be promoted."""


def approve(con: duckdb.DuckDBPyConnection, model: str, version: int, note: str) -> None:
    con.execute("UPDATE ml.model_registry SET alias = 'approved', note = ? WHERE model = ? AND version = ? "
                "AND alias = 'challenger'", [note, model, version])


def promote(con: duckdb.DuckDBPyConnection, model: str, version: int, note: str) -> None:
    """Make `version`, which its gate approved, the champion; the previous champion is retired. One transaction."""
    alias = con.execute("SELECT alias FROM ml.model_registry WHERE model = ? AND version = ?",
                        [model, version]).fetchone()
    if alias is None or alias[0] != "approved":
        raise NotApproved(f"{model} v{version} is {alias[0] if alias else 'not registered'}, not approved by its "
                          "gate: only an approved version can be promoted")
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
    con.execute("UPDATE ml.model_registry SET alias = 'rejected', note = ? WHERE model = ? AND version = ? "
                "AND alias = 'challenger'", [note, model, version])


RUN_FIELDS = ("training", "training_note", "challenger_version", "champion_version", "scoring", "scoring_note",
              "rows_scored")


def record_run(con: duckdb.DuckDBPyConnection, run_id: str, model: str, **fields) -> dict:
    """Set what became of `model` in run `run_id` (the fields of ml.model_runs given), recompute its one-line
    outcome; returns the row."""
    ensure_registry(con)
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise ValueError(f"unknown ml.model_runs fields {sorted(unknown)}")
    row = model_run(con, run_id, model) or {f: None for f in RUN_FIELDS}
    row.update(fields)
    row["outcome"] = outcome_line(row)
    con.execute("DELETE FROM ml.model_runs WHERE run_id = ? AND model = ?", [run_id, model])
    con.execute(f"INSERT INTO ml.model_runs (run_id, model, {', '.join(RUN_FIELDS)}, outcome, updated_at) "
                f"VALUES (?, ?, {', '.join('?' * len(RUN_FIELDS))}, ?, ?)",
                [run_id, model, *(row[f] for f in RUN_FIELDS), row["outcome"], datetime.now()])
    return row


def model_run(con: duckdb.DuckDBPyConnection, run_id: str, model: str) -> dict | None:
    r = con.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM ml.model_runs WHERE run_id = ? AND model = ?",
                    [run_id, model]).fetchone()
    return dict(zip(RUN_FIELDS, r, strict=True)) if r else None


def run_outcomes(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict]:
    """Every model's row of one run, in model order (read only: the table exists once any model ran)."""
    cols = ("model", *RUN_FIELDS, "outcome")
    return [dict(zip(cols, r, strict=True)) for r in con.execute(
        f"SELECT {', '.join(cols)} FROM ml.model_runs WHERE run_id = ? ORDER BY model", [run_id]).fetchall()]


def outcome_line(row: dict) -> str:
    """`promoted v5; scored with champion v5`, `kept champion v4 (challenger v5 rejected: auc 0.71 not >= 0.8);
    ...`, `not trained: no 'churned' outcomes ...; no champion yet`."""
    parts = []
    t, note, champ, chal = row.get("training"), row.get("training_note"), row.get("champion_version"), \
        row.get("challenger_version")
    if t == "promoted":
        parts.append(f"promoted v{chal}" + (f" ({note})" if note else ""))
    elif t == "rejected":
        parts.append((f"kept champion v{champ}" if champ else "no champion yet")
                     + f" (challenger v{chal} rejected: {note})")
    elif t == "not_trained":
        parts.append(f"not trained: {note}" + ("" if champ else "; no champion yet"))
    elif t == "kept":
        parts.append((f"kept champion v{champ}" if champ else "no champion yet") + (f" ({note})" if note else ""))
    s = row.get("scoring")
    if s == "scored":
        parts.append(f"scored with champion v{champ}" + (f" ({row.get('scoring_note')})" if row.get("scoring_note") else ""))
    elif s == "no_champion" and not any("no champion yet" in x for x in parts):
        parts.append("no champion yet: not scored")
    elif s == "failed":
        parts.append(f"scoring failed: {row.get('scoring_note')}")
    return "; ".join(parts) or "nothing ran"


def compare(challenger: dict, champion: dict | None, thresholds: dict[str, tuple[str, float]],
            higher_is_better: dict[str, bool], tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """The promotion gate: every threshold met (`metric: (">=" | "<=", value)`) AND no metric worse than the
    champion's on the same holdout (beyond `tolerance`). Returns (passed, reasons it failed)."""
    failures = []
    for metric, (op, bound) in thresholds.items():
        value = challenger.get(metric)
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        if not ok:
            failures.append(f"{metric} not measured (needs {op} {bound})" if value is None
                            else f"{metric} {round(value, 4)} not {op} {bound}")
    if champion:
        for metric, up in higher_is_better.items():
            new, old = challenger.get(metric), champion.get(metric)
            if new is None or old is None:
                continue
            worse = (new < old - tolerance) if up else (new > old + tolerance)
            if worse:
                failures.append(f"{metric} {new:.4f} worse than champion's {old:.4f}")
    return not failures, failures
