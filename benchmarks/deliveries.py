"""Benchmark: a bank's first full delivery, then its next day's delivery, through `scorehouse run --job features`.

    python benchmarks/deliveries.py [--customers 1000000] [--keep]

The generated bank (cached under benchmarks/out/) is delivered as a bank's export jobs would: day 1 is every
file but the transactions of the last day; day 2 is a new full customer snapshot under a new name with 1% of the
customers changed, and the last day's transactions. Each day is one `scorehouse run --job features` (ingest with
the deliveries ledger, GX checks of what changed, all feature tables) in its own process: wall time and that
process's peak RSS. Targets (issue 11): at 1M customers day 2 in <= 30 s and <= 2 GB; day 1 within the 108 s the
whole first load took before deliveries. Results are appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from ingest_features import BIN, OUT, RESULTS, clean_env, ensure_bank, machine  # noqa: E402

TABLES = {"agencies": "agencies.csv", "managers": "managers.csv", "products": "products.csv",
          "customers": "customers*.csv", "accounts": "accounts.csv", "transactions": "transactions*.csv",
          "loans": "loans.csv", "labels": "labels.csv"}


def measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Run `cmd` in its own process; (wall seconds, that process tree's peak RSS in GB, stdout)."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(r.returncode)")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd[:3])} failed")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KB"))
    return wall, peak / 2**20, proc.stdout


def prepare(n: int) -> tuple[Path, Path, Path]:
    """The two days' files: day 1 in `landing` (hard links to the generated bank, transactions without the last
    day), day 2 in `day2` (to be linked in), and the source config."""
    bank = ensure_bank(n)
    base = OUT / f"deliveries_{n}"
    landing, day2 = base / "landing", base / "day2"
    if not (day2 / "customers_day2.csv").exists():
        shutil.rmtree(base, ignore_errors=True)
        landing.mkdir(parents=True)
        day2.mkdir()
        for t in ("agencies", "managers", "products", "accounts", "loans", "labels", "customers"):
            os.link(bank / f"{t}.csv", landing / f"{t}.csv")
        src = str(bank / "transactions.csv")
        with duckdb.connect() as con:
            last = con.execute(f"SELECT max(transaction_date)::DATE FROM read_csv('{src}')").fetchone()[0]
            for where, out in ((f"transaction_date::DATE < DATE '{last}'", landing / "transactions_day1.csv"),
                               (f"transaction_date::DATE = DATE '{last}'", day2 / "transactions_day2.csv")):
                con.execute(f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true) WHERE {where}) "
                            f"TO '{out}' (HEADER, DELIMITER ',')")
            # 1% of the customers changed: a new income
            con.execute(f"""COPY (SELECT * REPLACE (CASE WHEN hash(customer_id) % 100 = 0
                                 THEN (TRY_CAST(income AS DOUBLE) * 1.1)::VARCHAR ELSE income END AS income)
                                 FROM read_csv('{bank / 'customers.csv'}', all_varchar=true))
                            TO '{day2 / 'customers_day2.csv'}' (HEADER, DELIMITER ',')""")
    cfg = base / "bank.yaml"
    cfg.write_text(yaml.safe_dump({"name": f"bench_{n}", "delivery": {"ready_marker": "_SUCCESS"},
                                   "tables": {t: {"path": g} for t, g in TABLES.items()}}))
    return landing, day2, cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the home under benchmarks/out")
    args = ap.parse_args()
    n = args.customers
    landing, day2, cfg = prepare(n)
    for f in day2.iterdir():  # a previous benchmark's day 2
        (landing / f.name).unlink(missing_ok=True)
    home = OUT / f"deliveries_{n}" / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = clean_env()
    cmd = [str(BIN / "scorehouse"), "run", "--job", "features", "--source", str(cfg), "--landing", str(landing),
           "--home", str(home)]
    (landing / "_SUCCESS").touch()
    results = {}
    results["day 1: full delivery"] = measured(cmd, env)
    for f in day2.iterdir():
        os.link(f, landing / f.name)
    (landing / "_SUCCESS").touch()
    results["day 2: customers snapshot (1% changed) + one day of transactions"] = measured(cmd, env)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        ledger = con.execute("SELECT source_file, state, rows_read, rows_loaded, rows_skipped, rows_closed "
                             "FROM raw.deliveries WHERE run_id = (SELECT run_id FROM raw.deliveries "
                             "ORDER BY processed_at DESC LIMIT 1) ORDER BY 1").fetchall()
        versions = con.execute("SELECT count(*) FROM raw.customers_history WHERE _valid_from IS NOT NULL").fetchone()[0]
    for day, (wall, peak, _) in results.items():
        print(f"{day}: {wall:.1f} s, peak RSS {peak:.2f} GB")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n### {stamp} — `python benchmarks/deliveries.py --customers {n}`\n",
             f"Machine: {machine()}. Each day one `scorehouse run --job features` (Dagster start-up, ingest as "
             "deliveries with the ledger and GX checks of what changed, every feature table), peak RSS of that "
             "run's process.\n", "| day | wall | peak RSS |", "|---|---:|---:|"]
    lines += [f"| {day} | {wall:.1f} s | {peak:.2f} GB |" for day, (wall, peak, _) in results.items()]
    lines += ["", "Day 2 deliveries: " + "; ".join(f"{f} {s} ({r:,} read, {ld:,} loaded, {sk:,} already held"
                                                    + (f", {c:,} closed" if c else "") + ")"
                                                    for f, s, r, ld, sk, c in ledger)
              + f"; {versions:,} new customer versions."]
    steps = [ln.strip() for ln in results[list(results)[1]][2].splitlines() if ln.startswith("[") and "✓ " in ln
             and "check" not in ln]
    lines += ["", "Day 2 steps (seconds since the run started): " + "; ".join(steps)]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
