"""A BI tool in a loop: opens <serving file> read-only with a new connection each time, reads the manifest and
counts every table and view it lists, and records what it saw, until <stop file> exists.

    python tests/bi_reader.py SERVING_FILE STOP_FILE OUT_JSONL

One JSON line per read: {"run_id", "ok"} or {"error"}; "ok" is false when a count differs from the manifest
read in the same connection (a torn publish). No file yet (nothing published) is recorded as "absent".
"""

import json
import sys
import time
from pathlib import Path

import duckdb


def read_once(path: Path) -> dict:
    if not path.exists():
        return {"absent": True}
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            manifest = con.execute("SELECT table_name, row_count, run_id FROM manifest").fetchall()
            counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t, _, _ in manifest}
    except Exception as e:  # any error is what the test counts
        return {"error": f"{type(e).__name__}: {e}"}
    runs = {r for _, _, r in manifest}
    mismatched = [t for t, n, _ in manifest if counts[t] != n]
    return {"run_id": ",".join(sorted(runs)), "tables": len(manifest), "ok": len(runs) == 1 and not mismatched,
            "mismatched": mismatched}


def main(serving: str, stop: str, out: str) -> None:
    path, stop_file = Path(serving), Path(stop)
    with open(out, "a") as f:
        while True:
            last = stop_file.exists()  # one more read after the stop file appears: the final state
            f.write(json.dumps(read_once(path)) + "\n")
            f.flush()
            if last:
                return
            time.sleep(0.05)  # a dashboard polls; it does not spin


if __name__ == "__main__":
    main(*sys.argv[1:4])
