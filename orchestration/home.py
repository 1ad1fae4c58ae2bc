"""Write the dagster.yaml of a home: telemetry off, the `warehouse` pool limited to one step at a time."""

from __future__ import annotations

from pathlib import Path

DAGSTER_YAML = """\
# Written by scorehouse. Dagster's own storage (runs, events, schedules) lives in this folder.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1   # pool `warehouse`: DuckDB allows one writer per file
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 0
"""


def ensure_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() != DAGSTER_YAML:
        cfg.write_text(DAGSTER_YAML)
    return path
