"""The landing-folder sensor: a new or changed file launches the pipeline (ingest skips unchanged files)."""


import hashlib
import json

import dagster as dg

from orchestration.resources import Source


def landing_state(source: Source) -> dict[str, list[int]]:
    cfg = source.config()
    landing = source.landing_path()
    globs = [f.read.path for feeds in cfg.feeds.values() for f in feeds] + [s.path for s in cfg.inputs.values()]
    state = {}
    for g in globs:
        for p in landing.glob(g):
            if p.is_file():
                st = p.stat()
                state[p.relative_to(landing).as_posix()] = [st.st_size, st.st_mtime_ns]
    return state


def _ingested_before(instance: dg.DagsterInstance, raw_keys: list[dg.AssetKey]) -> float | None:
    """When every raw table was last materialized (the oldest of them), or None if one never was."""
    stamps = []
    for key in raw_keys:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            return None
        stamps.append(event.timestamp)
    return min(stamps) if stamps else None


def build_landing_sensor(job, interval: int, raw_keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    @dg.sensor(job=job, minimum_interval_seconds=interval, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches the pipeline when files in the landing folder are new or changed.")
    def landing_files(context: dg.SensorEvaluationContext, source: Source):
        state = landing_state(source)
        if context.cursor:
            previous = json.loads(context.cursor)
        else:
            # First tick (a new home, or the sensor just switched on): files written before the last
            # complete ingest (e.g. by `scorehouse run`) are not new; no run just for switching the UI on.
            since = _ingested_before(context.instance, raw_keys)
            previous = {p: s for p, s in state.items() if since is not None and s[1] / 1e9 < since}
        changed = sorted(p for p, s in state.items() if previous.get(p) != s)
        if not changed:
            return dg.SkipReason(f"no new or changed file among {len(state)} in the landing folder")
        context.update_cursor(json.dumps(state))
        key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=key, tags={"scorehouse/trigger": "landing", "scorehouse/files": str(len(changed))})

    return landing_files
