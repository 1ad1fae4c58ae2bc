"""Model quality on the real public data sets, through the pipeline itself (`scorehouse run`).

    python benchmarks/model_quality.py [--sources churn_modelling german_credit ...]

For each source: a fresh home, `scorehouse run --source NAME` (ingest, features, every model trained on the
pipeline's own holdout, gated, scored), then the holdout metrics of every registered version are read from
ml.model_registry. The table between the markers in docs/model-quality.md is rewritten with the figures, the
date and this command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from ingest_features import BIN, ROOT, clean_env  # noqa: E402

DOC = ROOT / "docs" / "model-quality.md"
SOURCES = ["churn_modelling", "german_credit", "bank_marketing", "cdnow_sample", "berka", "synthetic"]
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
# the figures worth a column, per model (all of them are in the registry)
SHOWN = {
    "churn": ["auc", "brier", "high_risk_precision", "high_risk_recall"],
    "segments": ["silhouette", "k"],
    "recommendations": ["auc", "auc_term_deposit", "precision_at_5", "recall_at_5", "map_at_5", "coverage",
                        "popularity_map_at_5"],
    "credit_risk": ["auc", "gini", "ks", "model_kind", "scorecard_auc", "xgb_auc"],
    "clv": ["bgnbd_params", "holdout_error"],
    "fraud": ["method", "auprc", "roc_auc", "precision_at_review", "recall_at_review", "holdout_transactions"],
    "manager_performance": ["rmse", "rmse_last", "skill"],
    "agency_performance": ["rmse", "rmse_last", "skill"],
}


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def measure(source: str, workdir: Path) -> tuple[list[str], float]:
    home = workdir / source
    env = clean_env()
    cmd = [str(BIN / "scorehouse"), "run", "--source", source, "--home", str(home)]
    if source == "synthetic":
        landing = workdir / "synthetic_landing"
        subprocess.run([str(BIN / "scorehouse"), "generate", "--customers", "20000", "--out", str(landing)],
                       check=True, env=env, capture_output=True)
        cmd += ["--landing", str(landing)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - t0
    rows = []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for model, version, alias, metrics in con.execute(
                "SELECT model, version, alias, metrics FROM ml.model_registry ORDER BY model, version").fetchall():
            m = json.loads(metrics)
            shown = "; ".join(f"{k} {fmt(m[k])}" for k in SHOWN.get(model, []) if k in m)
            rows.append(f"| {source} | {model} | v{version} {alias} | {m.get('holdout_rows', '')} | {shown} |")
    if proc.returncode != 0:
        rows.append(f"| {source} | (run failed: exit {proc.returncode}) | | | see `scorehouse run --source {source}` |")
    return rows, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", nargs="+", default=SOURCES)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="scorehouse-quality-"))
    lines = ["| source | model | version | holdout rows | holdout metrics |", "|---|---|---|---:|---|"]
    try:
        for s in args.sources:
            rows, wall = measure(s, workdir)
            print(f"{s}: {wall:.0f}s", *rows, sep="\n", flush=True)
            lines += rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    block = (f"{BEGIN}\nMeasured {stamp} with `python benchmarks/model_quality.py --sources {' '.join(args.sources)}`"
             f" (each source from an empty home):\n\n" + "\n".join(lines) + f"\n{END}")
    text = DOC.read_text()
    DOC.write_text(text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):])
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
