"""Write the dagster.yaml of a home: telemetry off, one warehouse writer at a time (steps and queued runs)."""

from __future__ import annotations

from pathlib import Path

# Run tag of every job that writes the warehouse; the run queue starts one such run at a time.
WRITES = {"scorehouse/warehouse": "write"}

DAGSTER_YAML = """\
# Written by scorehouse. Dagster's own storage (runs, events, schedules) lives in this folder.
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
"""


def ensure_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() != DAGSTER_YAML:
        cfg.write_text(DAGSTER_YAML)
    return path
