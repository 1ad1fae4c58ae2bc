"""Named crash points for the kill tests (tests/test_reliability_e2e.py).

`SCOREHOUSE_KILL_AT=ingest` (a comma-separated list of names) makes the process SIGKILL itself the first time it
reaches that point: a real, uncatchable kill at a known place, mid-transaction or between two writes, instead
of a timer racing the pipeline. Unset (always, outside that test), `reached` does nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = {
    "ingest": "a file's rows are inserted, its transaction not yet committed",
    "features": "some feature tables are rebuilt, others not yet",
    "training": "a challenger's artifacts are saved, it is not registered yet",
    "registered": "a challenger is registered, its gate has not judged it yet",
    "approved": "a challenger's gate approved it, it is not promoted yet",
    "scoring": "one model's scores are committed, its drift and the other models not yet",
    "publish": "the new serving file is written, not yet swapped in",
}
# The iceberg backend's (tests/test_lake.py), not reached by a run on the embedded warehouse.
LAKE_POINTS = {
    "lake_write": "a lake part's data files are written, its catalog commit not yet made",
    "lake_shard": "a shard step has written its first feature table to the lake, the others not yet",
    "lake_score": "a scoring shard step has written its first model's scores to the lake, the others not yet",
}


def reached(name: str) -> None:
    wanted = os.environ.get("SCOREHOUSE_KILL_AT")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
