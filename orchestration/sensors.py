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


def build_landing_sensor(job, interval: int) -> dg.SensorDefinition:
    @dg.sensor(job=job, minimum_interval_seconds=interval, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Launches the pipeline when files in the landing folder are new or changed.")
    def landing_files(context: dg.SensorEvaluationContext, source: Source):
        state = landing_state(source)
        previous = json.loads(context.cursor) if context.cursor else {}
        changed = sorted(p for p, s in state.items() if previous.get(p) != s)
        if not changed:
            return dg.SkipReason(f"no new or changed file among {len(state)} in the landing folder")
        context.update_cursor(json.dumps(state))
        key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=key, tags={"scorehouse/trigger": "landing", "scorehouse/files": str(len(changed))})

    return landing_files
