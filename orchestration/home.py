"""A home's Dagster folder: its dagster.yaml (telemetry off, one warehouse writer at a time), the workspace file
`scorehouse ui` loads, and Dagster's storage, created once by the CLI before any Dagster process starts."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import sqlite3
import tempfile
from pathlib import Path

# Run tag of every job that writes the warehouse; the run queue starts one such run at a time.
WRITES = {"scorehouse/warehouse": "write"}

# The code location: its name in the UI and on every run. workspace.yaml and pyproject's [tool.dagster] say the same.
LOCATION = "scorehouse"
MODULE = "orchestration.definitions"

DAGSTER_YAML = """\
# Written by scorehouse (again by its next command, should this folder move). Dagster's own storage (runs,
# events, schedules) lives in this folder: Dagster's SQLite storage, its connections kept open (orchestration/storage.py).
storage:
  custom:
    module: orchestration.storage
    class: PooledSqliteStorage
    config:
      base_dir: {base_dir}
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1   # pool `warehouse`: DuckDB allows one writer per file
  runs:
    tag_concurrency_limits:
      - key: scorehouse/warehouse   # queued runs that write the warehouse start one after another
        value: write
        limit: 1
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 0
python_logs:
  # pyiceberg's warnings (a catalog commit retried after another shard step's) into the run's event log, with
  # their step, rather than onto the terminal of `scorehouse run` as stray lines
  managed_python_loggers:
    - pyiceberg
"""

WORKSPACE_YAML = f"""\
# Written by scorehouse: what `scorehouse ui` loads, and the origin `scorehouse run` gives its runs.
load_from:
  - python_module:
      module_name: {MODULE}
      location_name: {LOCATION}
"""

# Dagster's UI greets a new home with a newsletter sign-up whose form is an iframe from dagster.io, shown until this
# file exists: a bank's internal tool makes no such call (as telemetry is off), and the pop-up covers the page.
NUX_SEEN = (".nux/nux.yaml", "seen: 1\n")

# Where `scorehouse ui` last served the home (one line, e.g. http://127.0.0.1:3000): alerts link to runs there.
UI_URL_FILE = "ui_url"

# Dagster's SQLite storages under DAGSTER_HOME, each versioned by Alembic.
STORAGE_DBS = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


class StorageError(Exception):
    """Dagster's storage of a home is in a state scorehouse cannot repair."""


def ensure_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    dagster_yaml = DAGSTER_YAML.format(base_dir=json.dumps(str(path.resolve())))
    for name, text in (("dagster.yaml", dagster_yaml), ("workspace.yaml", WORKSPACE_YAML)):
        f = path / name
        if not f.exists() or f.read_text() != text:
            f.write_text(text)
    nux = path / NUX_SEEN[0]
    if not nux.exists():
        nux.parent.mkdir(exist_ok=True)
        nux.write_text(NUX_SEEN[1])
    return path


def record_ui_url(path: Path, url: str) -> None:
    """Written by `scorehouse ui`; kept when it stops, so links in alerts sent meanwhile work once it is back."""
    ensure_dagster_home(path)
    (path / UI_URL_FILE).write_text(url + "\n")


def recorded_ui_url(path: Path) -> str | None:
    f = path / UI_URL_FILE
    return (f.read_text().strip() or None) if f.exists() else None


def open_instance(path: Path, say=print):
    """The home's DagsterInstance, its storage created (and migrated) here, once, under a lock. A daemon and a
    webserver that both found no storage once created it at the same moment and left two Alembic heads in
    schedules.db, and neither could load anything again; a home left that way is repaired first."""
    import dagster as dg

    ensure_dagster_home(path)
    with (path / ".storage.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two CLI commands starting on a new home
        for db in _repair_heads(path):
            say(f"repaired {db}: it had two Alembic heads (the daemon and the webserver created it at once)")
        return dg.DagsterInstance.from_config(str(path))


def _versions(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
        except sqlite3.OperationalError:  # no version table yet: Dagster creates it
            return []


def _heads() -> dict[str, str]:
    """The version Dagster stamps on each storage it creates now, read from a throwaway instance (Dagster has
    no public call for it)."""
    import dagster as dg

    with tempfile.TemporaryDirectory() as tmp:
        with dg.DagsterInstance.local_temp(tmp):
            pass
        return {name: _versions(Path(tmp) / name)[0] for name in STORAGE_DBS}


def _repair_heads(path: Path) -> list[Path]:
    broken = {name: v for name in STORAGE_DBS if (path / name).exists() and len(v := _versions(path / name)) > 1}
    if not broken:
        return []
    heads = _heads()
    for name, versions in broken.items():
        if heads[name] not in versions:
            raise StorageError(
                f"{path / name}: Dagster storage versions {', '.join(versions)} (one expected, and this Dagster "
                f"writes {heads[name]}); move {path} aside to start its run history afresh (the warehouse, models "
                "and serving file are not in it)")
    for name in broken:
        # Both processes created the tables from the same current schema; only the version stamp is doubled.
        with contextlib.closing(sqlite3.connect(path / name)) as con, con:
            con.execute("DELETE FROM alembic_version WHERE version_num != ?", (heads[name],))
    import dagster as dg

    # The data migrations the losing process skipped (what `dagster instance migrate` runs); they print.
    with dg.DagsterInstance.from_config(str(path)) as instance, contextlib.redirect_stdout(io.StringIO()):
        instance.upgrade()
    return [path / name for name in broken]
