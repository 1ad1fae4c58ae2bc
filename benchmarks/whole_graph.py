"""Benchmark: the whole default graph, raw CSV to published serving file, from an empty home (issue 12).

    python benchmarks/whole_graph.py [--customers 1000000] [--runs 1] [--keep]

Each run is one `scorehouse run` on the generated bank (cached under benchmarks/out/bank_<n>/, shared with the
other benchmarks) into an emptied benchmarks/out/graph_home_<n>, as a new user starts it: wall time, CPU and the
peak RSS of its process tree, then every step's duration read from the run's own Dagster event log, summed by
stage (ingest, features, training with its gates, scoring, publish and the rest). Results are appended to
benchmarks/RESULTS.md. Target (issue 12): at 1M customers <= 240 s wall and <= 3 GB peak RSS on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest_features import BIN, OUT, RESULTS, clean_env, ensure_bank, machine  # noqa: E402

# the run's process tree: wall, user and system CPU, peak RSS of the largest process (`scorehouse run` executes
# steps in process, so that is the run), and its RSS every half second (epoch seconds, GB) to find each step's peak
PROBE = """
import json, resource, subprocess, sys, time
import psutil
t0 = time.monotonic()
proc = subprocess.Popen(sys.argv[1:])
ps, rss = psutil.Process(proc.pid), []
while proc.poll() is None:
    try:
        rss.append((time.time(), ps.memory_info().rss / 2**30))
    except psutil.Error:
        pass
    time.sleep(0.5)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print('PROBE ' + json.dumps({'wall': time.monotonic() - t0, 'user': u.ru_utime, 'sys': u.ru_stime,
                             'peak_gb': u.ru_maxrss / 2**20, 'rss': rss}), file=sys.stderr)
sys.exit(proc.returncode)
"""

STEPS = """
import json, sys
import dagster as dg
with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    stats = instance.get_run_step_stats(sys.argv[2])
print('STEPS ' + json.dumps({s.step_key: (s.start_time, s.end_time) for s in stats if s.end_time and s.start_time}))
"""


STAGES = {"raw": "ingest", "features": "features", "ml": "training (challengers, gates, champions)",
          "scores": "scoring", "serving": "publish"}


def stage(step_key: str) -> str:
    """The stage a step belongs to, from its key's first part (`raw__customers`, `ml__churn_challenger`, ...)."""
    head = step_key.split("__")[0]
    return STAGES.get(head, f"other ({head})")


def run_once(landing: Path, home: Path) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    cmd = [str(BIN / "scorehouse"), "run", "--landing", str(landing), "--home", str(home)]
    proc = subprocess.run([sys.executable, "-c", PROBE, *cmd], env=clean_env(), capture_output=True, text=True)
    probe = json.loads(next(ln[6:] for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")))
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
        raise SystemExit("the run failed")
    run_id = next(ln.split()[1].rstrip(":") for ln in proc.stdout.splitlines() if ln.startswith("Run "))
    out = subprocess.run([sys.executable, "-c", STEPS, str(home / "dagster"), run_id], env=clean_env(),
                         capture_output=True, text=True, check=True).stdout
    spans = json.loads(next(ln[6:] for ln in out.splitlines() if ln.startswith("STEPS ")))
    probe["steps"] = {k: end - start for k, (start, end) in spans.items()}
    # each step's peak: the largest RSS sampled while it ran (0.5 s samples: a shorter spike can be missed)
    probe["step_peak_gb"] = {k: max((gb for t, gb in probe["rss"] if start <= t <= end), default=0.0)
                             for k, (start, end) in spans.items()}
    t_peak, gb_peak = max(probe["rss"], key=lambda x: x[1], default=(0, 0.0))
    probe["peak_during"] = [k for k, (start, end) in spans.items() if start <= t_peak <= end] or ["between steps"]
    probe["sampled_peak_gb"] = gb_peak
    return probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the last run's home under benchmarks/out")
    args = ap.parse_args()
    landing, home = ensure_bank(args.customers), OUT / f"graph_home_{args.customers}"
    runs = []
    for i in range(args.runs):
        t0 = time.monotonic()
        runs.append(run_once(landing, home))
        r = runs[-1]
        print(f"run {i + 1}: {r['wall']:.1f} s wall, {r['user']:.0f} s user, {r['peak_gb']:.2f} GB "
              f"({time.monotonic() - t0:.0f} s with the step read)", flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n### {stamp} — `python benchmarks/whole_graph.py --customers {args.customers} --runs {args.runs}`\n",
             f"Machine: {machine()}. `scorehouse run` from an empty home (ingest, features, every model trained and "
             "gated, scored, published); peak RSS of its process. Target (issue 12) at 1M: <= 240 s, <= 3 GB.\n",
             "| run | wall | user CPU | sys CPU | peak RSS |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {r['wall']:.1f} s | {r['user']:.0f} s | {r['sys']:.0f} s | {r['peak_gb']:.2f} GB |"
              for i, r in enumerate(runs)]
    # steps run one at a time in process, so their durations add up to the run less start-up and the summary
    by_stage: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    for i, r in enumerate(runs):
        for key, secs in r["steps"].items():
            by_stage[stage(key)][i] += secs
    lines += ["", "| stage (sum of its steps) | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |",
              "|---|" + "---:|" * len(runs)]
    lines += [f"| {s} | " + " | ".join(f"{v:.1f} s" for v in vals) + " |" for s, vals in sorted(by_stage.items())]
    last = runs[-1]
    slowest = sorted(last["steps"].items(), key=lambda kv: -kv[1])[:15]
    lines += ["", "Slowest steps of the last run: " + "; ".join(f"{k} {v:.1f} s" for k, v in slowest) + "."]
    largest = sorted(last["step_peak_gb"].items(), key=lambda kv: -kv[1])[:8]
    lines += ["", "Largest RSS while a step ran (last run, sampled every 0.5 s): "
              + "; ".join(f"{k} {v:.2f} GB" for k, v in largest) + f". The sampled peak, {last['sampled_peak_gb']:.2f} GB, "
              f"was first reached during {', '.join(last['peak_during'])} (memory a step frees is not always given "
              "back to the system, so later steps can show the same figure)."]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
