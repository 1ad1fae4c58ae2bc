"""`scorehouse`: generate a sample bank, run the pipeline through Dagster, start the UI.

Thin on purpose: the graph is Dagster's (orchestration/definitions.py); `run` executes the same job the UI
and the sensors launch, in this process, recorded in the home's Dagster storage so it shows in the UI.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestration.home import ensure_dagster_home
from warehouse.db import Home, run_lock

UI_HOST = "127.0.0.1"
UI_PORT = 3000
READ_WAIT = 60.0  # seconds a read of the warehouse after a run waits for a brief writer (`deliveries accept`)
STOP_GRACE = 3.0  # seconds the webserver, daemon, code servers and run workers get to exit before being killed


def _to_stderr(message: str) -> None:
    """Where a command says it is waiting: the terminal, apart from what it prints as its result."""
    print(message, file=sys.stderr, flush=True)


def _source(args: argparse.Namespace) -> str:
    return getattr(args, "source", None) or os.environ.get("SCOREHOUSE_SOURCE") or "synthetic"


def _config_error(e: Exception) -> int:
    for line in str(e).splitlines():  # one line per problem, each naming the file and the key
        print(f"error: {line}", file=sys.stderr)
    return 2


def _settings(home: Home, source: str) -> dict | None:
    """The validated settings, or None after printing what is wrong."""
    from assets.settings import CONFIG_ERRORS, load_settings

    try:
        return load_settings(home.root, source)
    except CONFIG_ERRORS as e:
        _config_error(e)
        return None


def _set_env(home: Home, source: str | None = None, landing: str | None = None) -> None:
    os.environ["SCOREHOUSE_HOME"] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(home.dagster_home))
    if source:
        os.environ["SCOREHOUSE_SOURCE"] = source
    if landing:
        os.environ["SCOREHOUSE_LANDING"] = str(Path(landing).expanduser().resolve())


# ---------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    from warehouse.synthetic import generate_bank

    t0 = time.monotonic()
    counts = generate_bank(args.out, customers=args.customers, seed=args.seed, fmt=args.format, drift=args.drift,
                           fraud_rate=args.fraud_rate,
                           manager_effect=args.manager_effect, progress=lambda m: print(f"  {m}", flush=True))
    print(f"wrote a sample bank to {Path(args.out).resolve()} in {time.monotonic() - t0:.1f}s:")
    for table, n in counts.items():
        print(f"  {table:<14}{n:>12,} rows")
    return 0


# ---------------------------------------------------------------- run
class _Progress(threading.Thread):
    """Prints one line per finished step and check, read from the run's own event log."""

    def __init__(self, instance, run_id: str):
        super().__init__(daemon=True)
        self.instance, self.run_id, self.stop = instance, run_id, threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        cursor = None
        while True:
            done = self.stop.is_set()
            conn = self.instance.get_records_for_run(self.run_id, cursor=cursor)
            for rec in conn.records:
                self._print(rec.event_log_entry)
            cursor = conn.cursor
            if done:
                return
            self.stop.wait(1.0)  # each look is a query of the run's event log

    def _print(self, entry) -> None:
        ev = entry.dagster_event
        if ev is None:
            # what a step warned about (a file not read this run, a delivery held back): on the terminal too
            if entry.level == logging.WARNING and entry.step_key and entry.user_message:
                print(f"[{time.monotonic() - self.t0:6.1f}s] ! {entry.user_message}", flush=True)
            return
        t = f"[{time.monotonic() - self.t0:6.1f}s]"
        kind = ev.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            mat = ev.event_specific_data.materialization
            md = mat.metadata
            rows = md.get("dagster/row_count")
            extra = ""
            if "rows_read" in md:
                extra = f" ({md['rows_read'].value:,} read, {md['rows_quarantined'].value:,} quarantined)"
            elif "customers_known" in md:  # the iceberg backend's sample
                extra = f" (a sample of the {md['customers_known'].value:,}: warehouse.lake.sample_customers)"
            n = f"{rows.value:,} rows" if rows else ""
            print(f"{t} ✓ {mat.asset_key.to_user_string():<32} {n}{extra}", flush=True)
        elif kind == "ASSET_CHECK_EVALUATION":
            ce = ev.event_specific_data
            mark = "✓" if ce.passed else ("!" if ce.severity.value == "WARN" else "✗")
            print(f"{t}   {mark} check {ce.asset_key.to_user_string()} {ce.check_name}", flush=True)
        elif kind == "STEP_FAILURE":
            err = ev.event_specific_data.error
            msg = _failure_message(err)
            print(f"{t} ✗ {ev.step_key} failed: {msg}", flush=True)


def _failure_message(err) -> str:
    from orchestration.alerting import failure_message

    return failure_message(err)


def _lake_tables(settings: dict, partition: str) -> None:
    """What a run of job lake leaves in the lake: each feature and score table's rows for its snapshot date."""
    from datetime import date

    from warehouse.lake import Lake, LakeError, LakeLocation
    from warehouse.shard_features import COLUMNS

    snap = date.fromisoformat(partition)
    try:
        lake = Lake(LakeLocation(os.environ.get("SCOREHOUSE_CATALOG", ""), settings["warehouse"]["lake"]["location"]))
        rows = [(n, lake.count(n, snap)) for n in lake.tables()
                if n.startswith(("features.", "scores.")) and n != COLUMNS]
    except LakeError as e:
        print(f"\nLake: {e}")
        return
    except Exception as e:  # a summary, after the run: the run's own failure already says what went wrong
        print(f"\nLake: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return
    print(f"\nLake tables for {snap} in {lake.location.warehouse}")
    for name, n in rows:
        print(f"  {name:<34}{n:>12,}")


def _warehouse_tables(home: Home) -> None:
    from warehouse.db import connect

    print("\nTables in", home.warehouse)
    with connect(home.warehouse, read_only=True, wait_seconds=READ_WAIT, on_wait=_to_stderr) as con:
        rows = con.execute("""
            SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_schema IN ('raw', 'quarantine', 'features', 'ml', 'scores') ORDER BY table_schema, table_name""").fetchall()
        for schema, name in rows:
            if name == "ingest_ledger":
                continue
            n = con.execute(f'SELECT count(*) FROM {schema}."{name}"').fetchone()[0]
            if schema == "quarantine" and n == 0:
                continue
            print(f"  {schema + '.' + name:<34}{n:>12,}")


def _summary(home: Home, result, run_id: str, tables: bool = True) -> None:
    """The run's tables (the DuckDB file's, unless `tables` is False: a lake run prints its own), models, checks."""
    if tables:
        _warehouse_tables(home)
    report = _report(home, run_id, READ_WAIT)
    if report is not None and report.models:
        print("\nModels:")
        for line in report.lines():
            print(f"  {line}")
        _tag(run_id, report)
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    print(f"\nChecks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        why = c.metadata.get("failed") or c.metadata.get("actual")  # a gate says which condition failed
        print(f"  ✗ {c.asset_key.to_user_string()} {c.check_name} ({c.severity.value}): {why.value if why else ''}")
    for ev in result.get_step_failure_events():
        print(f"  ✗ step {ev.step_key}: {_failure_message(ev.event_specific_data.error)}")
    print(f"\nRun {run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    print(f"Home: {home.root}  (warehouse.duckdb, dagster/ run history)")
    if home.serving.exists():
        print(f"BI:   {home.serving} (query it: scorehouse sql --home {home.root}; docs/bi.md)")
    port = _ui_port(home)
    print(f"UI:   scorehouse ui --home {home.root} --port {port}, then http://{UI_HOST}:{port}/runs/{run_id}")


def _ui_port(home: Home) -> int:
    """The port `scorehouse ui` last served this home on (where its alerts link), else the default."""
    from urllib.parse import urlsplit

    from orchestration.home import recorded_ui_url

    url = urlsplit(recorded_ui_url(home.dagster_home) or "")
    return (url.port or UI_PORT) if url.hostname == UI_HOST else UI_PORT


def _report(home: Home, run_id: str, wait: float = 0.0):
    """The run's report (quality/run_report.py) from the warehouse; None when there is none to read."""
    from assets.settings import bi_publisher, load_settings
    from quality.drift import Bands
    from quality.run_report import build_report
    from warehouse.db import connect
    from warehouse.serving import published_at

    if not home.warehouse.exists():
        return None
    published = published_at(home.serving, run_id)
    settings = load_settings(home.root, _source(argparse.Namespace()))
    bands = Bands.from_config(settings["monitoring"]["drift"])
    with connect(home.warehouse, read_only=True, wait_seconds=wait,
                 on_wait=_to_stderr) as con:
        return build_report(con, run_id, bands, published, publisher=bi_publisher(settings))


def _tag(run_id: str, report) -> None:
    """The report's tags on the run, also when its report asset did not run (a run that failed before it)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        if instance.has_run(run_id):
            instance.add_run_tags(run_id, report.tags())


def _writable(root: Path) -> None:
    """Fail before any library does (in its own words) when the home cannot be written: main() turns the
    OSError into one line."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(root)) from e


def _landing_problems(cfg, landing: Path) -> list[str]:
    """What the source config cannot be run with in this landing folder: links that lead out of it."""
    from warehouse.landing import OUTSIDE, matches

    out = []
    specs = [(f"tables.{t}[{i}]", f.read.path) for t, feeds in cfg.feeds.items() for i, f in enumerate(feeds)]
    specs += [(f"inputs.{n}", spec.path) for n, spec in cfg.inputs.items()]
    for where, glob in specs:
        for p in matches(landing, glob)[1]:
            out.append(f"{cfg.origin}: {where}.path: {p.relative_to(landing).as_posix()} {OUTSIDE}")
    return out


def _flags(args: argparse.Namespace) -> None:
    """`scorehouse run`'s settings flags as the settings' last layer, in the environment: the run's step
    processes read the same settings. The catalog URL (it may hold a password) goes where the lake resource
    reads it, SCOREHOUSE_CATALOG."""
    import json

    from assets.settings import FLAGS_ENV

    given = {("warehouse", "backend"): args.backend, ("warehouse", "lake", "location"): args.warehouse,
             ("warehouse", "lake", "shards"): args.shards, ("execution", "executor"): args.executor}
    flags: dict = {}
    for path, value in given.items():
        if value is not None:
            node = flags
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    if flags:
        os.environ[FLAGS_ENV] = json.dumps(flags)
    if args.catalog:
        os.environ["SCOREHOUSE_CATALOG"] = args.catalog


def cmd_run(args: argparse.Namespace) -> int:
    home = Home.resolve(args.home)
    _flags(args)
    settings = _settings(home, _source(args))  # a bad source config or setting stops here, before Dagster
    if settings is None:
        return 2
    from assets.settings import source_config

    cfg = source_config(_source(args))
    landing = Path(args.landing or os.environ.get("SCOREHOUSE_LANDING") or cfg.default_landing or home.root / "landing")
    problems = _landing_problems(cfg, landing.expanduser()) if landing.expanduser().is_dir() else []
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    _writable(home.root)
    _set_env(home, args.source, args.landing)
    from orchestration.jobs import LAKE_FOLLOWS

    # the iceberg backend: the DuckDB file's jobs that score its sample are followed by job lake (everyone; publish)
    lake_after = args.job in LAKE_FOLLOWS and settings["warehouse"]["backend"] == "iceberg"
    if lake_after and not os.environ.get("SCOREHOUSE_CATALOG"):
        print("error: warehouse.backend iceberg needs the catalog's URL: --catalog postgresql://user@host:port/db "
              "or SCOREHOUSE_CATALOG (docs/scale-out.md)", file=sys.stderr)
        return 2

    # The home's run lock from before the registry is read (which models are due) until the summary and the
    # alerts have read the warehouse: a second `scorehouse run` of this home starts after all of it, and never
    # finds the file held by the other run's writer. The run's Warehouse resource takes it again, in this process.
    with run_lock(home.run_lock, f"run of job {args.job!r} from `scorehouse run`",
                  settings["warehouse"]["run_lock_wait_seconds"],
                  on_wait=_to_stderr, children=True):  # the multiprocess executor's steps run under it
        code = _run_job(args.job, args.partition if not lake_after else None, home, cfg, settings)
        if code == 0 and lake_after:  # the iceberg backend: then the lake's features, scores and publish
            print("\nThen the lake (warehouse.backend iceberg): job 'lake'", flush=True)
            code = _run_job("lake", args.partition, home, cfg, settings)
        return code


def _run_job(name: str, partition_given: str | None, home: Home, cfg, settings: dict) -> int:
    """One run of job `name` through Dagster in this process, its summary and alerts; the exit code."""
    from assets.models import SPECS
    from orchestration.definitions import defs
    from orchestration.home import open_instance
    from orchestration.jobs import due_selection
    from orchestration.location import create_run, execute
    from orchestration.stale_runs import fail_dead_cli_runs

    job = defs.resolve_job_def(name)
    partition, problem = _partition(job, partition_given, home, cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    selection = None
    if name == "scorehouse":
        selection = due_selection(job, home.root, settings, [s.name for s in SPECS])
        if selection is not None:
            kept = sorted({k.path[-1].removesuffix("_challenger") for k in job.asset_layer.executable_asset_keys
                           if k.path[0] == "ml" and k not in selection and k.path[-1].endswith("_challenger")})
            print(f"Not retrained (champion younger than models.retrain_after_days; --job retrain forces): "
                  f"{', '.join(kept)}", flush=True)
    with open_instance(home.dagster_home) as instance:
        fail_dead_cli_runs(instance)
        print(f"Running job {name!r} for source {os.environ.get('SCOREHOUSE_SOURCE', 'synthetic')!r}, "
              f"home {home.root}", flush=True)
        recon, run = create_run(
            instance, home.dagster_home / "workspace.yaml", name, asset_selection=selection,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            tags={"scorehouse/trigger": "cli", "scorehouse/pid": str(os.getpid()),
                  "scorehouse/host": os.uname().nodename,
                  **({"dagster/partition": partition} if partition else {})})
        run_id = run.run_id
        progress = _Progress(instance, run_id)
        progress.start()
        try:
            result = execute(recon, run, instance)
        finally:
            progress.stop.set()
            progress.join()
        if name == "lake":
            _lake_tables(settings, partition)
        _summary(home, result, run_id, tables=not name.startswith("lake"))
        _alerts(instance, run_id, home, settings)
    return 0 if result.success else 1


def _partition(job, given: str | None, home: Home, cfg) -> tuple[str | None, str | None]:
    """The partition to run a partitioned job for (given, else the snapshot date the warehouse's data gives),
    or what is wrong."""
    from datetime import date

    if job.partitions_def is None:
        return None, (f"job {job.name!r} has no partitions: leave out --partition" if given else None)
    if given:
        try:
            return date.fromisoformat(given).isoformat(), None
        except ValueError:
            return None, f"--partition {given!r}: expected a snapshot date, YYYY-MM-DD"
    from warehouse.db import connect
    from warehouse.features import resolve_snapshot

    if not home.warehouse.exists():
        return None, f"job {job.name!r} builds on the ingest's tables: run `scorehouse run --job ingest` first"
    with connect(home.warehouse, read_only=True) as con:
        return resolve_snapshot(con, cfg.snapshot_date, cfg.holdout_days).isoformat(), None


def _alerts(instance, run_id: str, home: Home, settings: dict) -> None:
    """What the daemon's alert sensors would do for this run (there is no daemon behind `scorehouse run`)."""
    from orchestration.alerting import describe, evaluate_run
    from quality.channels import channels_from_settings

    try:
        outcomes = evaluate_run(instance, run_id, home.root, settings)
    except Exception as e:  # alerting never changes the run's outcome
        print(f"\nAlerts: not evaluated ({type(e).__name__}: {e})")
        return
    if not any(not c.missing(os.environ) for c in channels_from_settings(settings["alerts"])):
        # said once for the run, not once per alert: nobody hears any of them
        print("\nAlerts: no alert channel configured: nothing was sent (Slack, webhook, email: docs/alerts.md)"
              + ("; these would have been:" if outcomes else ""))
        for o in outcomes:
            print(f"  {o.alert.kind}: {o.alert.title}", flush=True)
    elif outcomes:
        print("\nAlerts:")
        print("\n".join(describe(outcomes)), flush=True)


# ---------------------------------------------------------------- alerts
def cmd_alerts(args: argparse.Namespace) -> int:
    from orchestration.alerting import store_for, ui_base_url
    from quality.alerts import run_url, test_alert
    from quality.channels import channels_from_settings, deliver

    home = Home.resolve(args.home)
    settings = _settings(home, _source(args))
    if settings is None:
        return 2
    cfg = settings["alerts"]
    store = store_for(home.root)
    if args.action == "log":
        rows = store.deliveries(args.limit)
        for r in reversed(rows):
            print(f"{r['sent_at'][:19]}  {r['kind']:<13} {r['channel']:<10} {'ok' if r['ok'] else 'FAILED':<6} "
                  f"{r['attempts']} attempt(s)  {r['title']}{'  — ' + r['error'] if r['error'] else ''}")
        for c in store.open_conditions():
            print(f"open condition {c['key']} since {c['first_seen'][:19]}, last alerted {c['last_alerted'][:19]}")
        return 0
    alert = test_alert(run_url(ui_base_url(home.root, cfg, os.environ), "test"))
    worked, configured = 0, 0
    for ch in channels_from_settings(cfg):
        missing = ch.missing(os.environ)
        if missing:
            print(f"  {ch.name:<10} ({ch.type}) skipped: {', '.join(missing)} not set")
            continue
        configured += 1
        d = deliver(ch, alert, os.environ, cfg.get("delivery"))
        store.record(None, "test", alert.title, ch.name, d.ok, d.attempts, d.error)
        worked += d.ok
        print(f"  {ch.name:<10} ({ch.type}) {'ok' if d.ok else 'FAILED: ' + d.error} ({d.attempts} attempt(s))")
    print(f"{worked} of {configured} configured channel(s) worked")
    return 0 if configured and worked == configured else 1


# ---------------------------------------------------------------- deliveries
def cmd_deliveries(args: argparse.Namespace) -> int:
    from warehouse import deliveries
    from warehouse.db import connect

    home = Home.resolve(args.home)
    if not home.warehouse.exists():
        print(f"no warehouse in {home.root} yet: nothing has been delivered", file=sys.stderr)
        return 0 if args.action == "list" else 1

    if args.action == "accept":
        with connect(home.warehouse, wait_seconds=args.wait, on_wait=_to_stderr) as con:
            try:
                held = deliveries.accept(con, args.file, args.table)
            except deliveries.NotHeld as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        for d in held:
            print(f"accepted {d.table_name} {d.source_file} ({d.rows_read:,} rows, held because: "
                  f"{(d.note or '').split('; nothing')[0]}); the next run loads it: scorehouse run --home {home.root}")
        return 0
    with connect(home.warehouse, read_only=True, wait_seconds=args.wait, on_wait=_to_stderr) as con:
        has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                          "AND table_name = 'deliveries'").fetchone()[0]
        rows = deliveries.of_table(con, args.table) if has and args.table else \
            [d for t in sorted({r[0] for r in con.execute("SELECT DISTINCT table_name FROM raw.deliveries")
                                .fetchall()}) for d in deliveries.of_table(con, t)] if has else []
    if not rows:
        print("no deliveries recorded yet")
        return 0
    head = ("table", "file", "state", "delivered", "read", "loaded", "already", "quarant.", "released", "note")
    table = [head] + [(d.table_name, d.source_file, d.state + (" · archived" if d.archived_at else ""),
                       f"{d.delivered_at:%Y-%m-%d %H:%M}" if d.delivered_at else "", f"{d.rows_read:,}",
                       f"{d.rows_loaded:,}", f"{d.rows_skipped:,}", f"{d.rows_quarantined:,}", f"{d.rows_released:,}",
                       (d.note or "")[:100]) for d in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head) - 1)]
    for r in table:
        print("  ".join(str(v).rjust(w) if 4 <= i <= 8 else str(v).ljust(w) for i, (v, w) in
                        enumerate(zip(r, widths, strict=False))) + "  " + r[-1])
    held = [d for d in rows if d.state == "held" and not d.archived_at]
    if held:
        print(f"\n{len(held)} held back: look at the file; if it is right, `scorehouse deliveries accept FILE`")
    return 0


# ---------------------------------------------------------------- rollback
def cmd_rollback(args: argparse.Namespace) -> int:
    from warehouse.serving import ServingError, current_version, read_manifest, rollback, versions

    home = Home.resolve(args.home)
    if args.list:
        current = current_version(home)
        for v in versions(home):
            m = read_manifest(v)
            print(f"{'*' if v == current else ' '} {v.name}  run {m[0][4] if m else '?'}  "
                  f"{len(m)} tables and views")
        return 0
    try:
        target = rollback(home, args.to)
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = read_manifest(home.serving)
    print(f"{home.serving} now serves {target.name} (published {rows[0][3]:%Y-%m-%d %H:%M:%S} by run {rows[0][4]}):")
    for name, kind, n, *_ in rows:
        print(f"  {name:<28}{kind:<6}{n:>12,}")
    print("The next pipeline run publishes again over it.")
    return 0


# ---------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    """The last run of the home: how it ended, its tags, failed checks and the report of every model."""
    home = Home.resolve(args.home)
    if not home.dagster_home.is_dir():
        print(f"no run recorded in {home.dagster_home} yet: scorehouse run --home {home.root}")
        return 0
    _set_env(home)
    import dagster as dg

    from orchestration.alerting import run_checks

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            print(f"no run recorded in {home.dagster_home} yet: scorehouse run --home {home.root}")
            return 0
        run = runs[0]
        stats = instance.get_run_stats(run.run_id)
        failed = [c for c in run_checks(instance, run.run_id) if not c["passed"]]
    started, ended = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
                      for t in (stats.start_time, stats.end_time))
    print(f"Last run {run.run_id}: job {run.job_name}, {run.status.value}, started {started}, ended {ended} "
          f"(by {run.tags.get('scorehouse/trigger') or run.tags.get('dagster/schedule_name') or 'the UI'})")
    for k, v in sorted(run.tags.items()):
        if k.startswith("scorehouse/") and k not in ("scorehouse/pid", "scorehouse/host", "scorehouse/trigger",
                                                   "scorehouse/warehouse"):  # how it ran, not what it did
            print(f"  {k}: {v}")
    if failed:
        print(f"Checks failed: {len(failed)}")
        for c in failed:
            why = c["metadata"].get("failed") or c["metadata"].get("actual") or ""
            print(f"  ✗ {c['asset']} {c['check']} ({c['severity']}): {why}")
    report = _report(home, run.run_id, args.wait)
    if report is None or not report.models:
        print("No model trained or scored in this run.")
    else:
        print("Models:")
        for line in report.lines():
            print(f"  {line}")
    if not run.is_finished:
        print("(the run is still going: the report so far)")
    return 0 if run.status != dg.DagsterRunStatus.FAILURE else 1


# ---------------------------------------------------------------- sql
def cmd_sql(args: argparse.Namespace) -> int:
    """Query the serving file read-only, as BI does: one query, or a prompt (one statement per line)."""
    import shutil

    import duckdb

    home = Home.resolve(args.home)
    if not home.serving.exists():
        print(f"error: no serving file at {home.serving} yet: scorehouse run --home {home.root} publishes it",
              file=sys.stderr)
        return 1
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 10_000

    def run(sql: str) -> bool:
        # a new connection per query, as the docs advise BI: each sees the latest publish, whole
        try:
            with duckdb.connect(str(home.serving), read_only=True) as con:
                rel = con.sql(sql)
                if rel is None:
                    print("ok")
                else:
                    rel.show(max_rows=args.max_rows, max_width=width)
            return True
        except duckdb.Error as e:
            print(f"error: {e}", file=sys.stderr)
            return False

    if args.query:
        return 0 if run(args.query) else 1
    print(f"{home.serving} (read-only). One statement per line; .tables lists what is published; .quit or Ctrl-D "
          "ends.", flush=True)
    while True:
        try:
            line = input("sql> " if sys.stdin.isatty() else "").strip()
        except EOFError:
            print()
            return 0
        if line in (".quit", ".exit", "\\q"):
            return 0
        if line == ".tables":
            line = "SELECT table_name, kind, row_count FROM manifest ORDER BY table_name"
        if line:
            run(line)


# ---------------------------------------------------------------- settings
def cmd_settings(args: argparse.Namespace) -> int:
    from assets.settings import CONFIG_ERRORS, effective
    from orchestration.settings_doc import header, render

    home = Home.resolve(args.home)
    try:
        eff = effective(home.root, _source(args))
    except CONFIG_ERRORS as e:
        return _config_error(e)
    print(header(eff, str(home.root / "scorehouse.yaml")) + render(eff), end="")
    return 0


# ---------------------------------------------------------------- ui
def cmd_ui(args: argparse.Namespace) -> int:
    from orchestration.home import StorageError, open_instance, record_ui_url

    home = Home.resolve(args.home)
    if _settings(home, _source(args)) is None:  # else the webserver would only show the error
        return 2
    _set_env(home, args.source, args.landing)
    try:
        # Created here, once: a webserver and a daemon that both find no storage migrate it at the same moment.
        instance = open_instance(home.dagster_home)
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # Alerts (the daemon's sensors, `scorehouse run`) link to runs in this UI unless told another address.
    record_ui_url(home.dagster_home, f"http://{UI_HOST}:{args.port}")
    with instance:
        code = _serve(instance, home, args.port)
    # Everything is stopped, stored and printed; the interpreter's teardown of what this process loaded (Dagster,
    # DuckDB, pandas) would add 1-3 s on a busy machine to a Ctrl-C that should take under 5.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(instance, home: Home, port: int) -> int:
    bindir = Path(sys.executable).parent
    target = ["-w", str(home.dagster_home / "workspace.yaml")]  # the code location `scorehouse`
    # Each in its own session so one signal stops it with its children (code servers, run workers).
    procs = [
        subprocess.Popen([str(bindir / "dagster-daemon"), "run", *target], start_new_session=True),
        subprocess.Popen([str(bindir / "dagster-webserver"), "-h", UI_HOST, "-p", str(port), *target],
                         start_new_session=True),
    ]
    print(f"Dagster UI on http://{UI_HOST}:{port} (home {home.root}); Ctrl-C stops it.", flush=True)
    stopping = threading.Event()

    def _stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping.is_set() and all(p.poll() is None for p in procs):
        stopping.wait(0.5)
    code = 0 if stopping.is_set() else 1
    _stop_all(instance, procs)
    print("stopped webserver and daemon", flush=True)
    return code


def _stop_all(instance, procs: list[subprocess.Popen]) -> None:
    """SIGTERM to everything the webserver and daemon started, SIGKILL to what is left after STOP_GRACE: most of
    a Dagster process's exit is the interpreter tearing down (2-5 s each on a busy machine), nothing to save."""
    import dagster as dg
    import psutil

    from orchestration.stale_runs import fail_runs

    tree = psutil.Process().children(recursive=True)
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
    workers = [r.run_id for r in unfinished if _launched_by(r, tree)]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE)
    for p in procs:  # the whole groups: also what was started after the snapshot
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    for p in procs:  # the others are not our children: their parents or init reap them
        p.wait()
    # A killed process is gone only once the kernel has torn it down (a big one takes a moment): Ctrl-C returns
    # when nothing of the tree runs any more, so a `scorehouse ui` started right after finds its port free.
    psutil.wait_procs(alive, timeout=STOP_GRACE)
    # A run whose worker was killed would stay STARTED in the UI and keep its `warehouse` pool slot.
    fail_runs(instance, workers, "its run worker was stopped with `scorehouse ui`")


# The tag Dagster's DefaultRunLauncher puts on a run with its code server's address. It has no public name;
# tests/test_definitions.py checks that it is still Dagster's.
GRPC_INFO_TAG = ".dagster/grpc_info"


def _launched_by(run, tree) -> bool:
    """Whether the run's worker is in the tree. A worker is a multiprocessing child of the code server that launched
    it, its command line says nothing of the run; the run's tags name that server's port or socket, which the code
    server's command line holds. CLI runs (another process) and other UIs' runs are left alone."""
    import json

    info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    kind = next((k for k in ("port", "socket") if info.get(k)), None)
    if kind is None:
        return False
    address = [f"--{kind}", str(info[kind])]
    return any(cmd[i:i + 2] == address for cmd in map(_cmdline, tree) for i in range(len(cmd) - 1))


def _cmdline(p) -> list[str]:
    import psutil

    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scorehouse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic bank (CSV or XLSX) to a folder")
    g.add_argument("--customers", type=int, default=20_000)
    g.add_argument("--out", required=True)
    g.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--drift", type=float, default=0.0,
                   help="shift the population (0..1; 0.5: younger, richer, more digital) to see drift caught")
    g.add_argument("--fraud-rate", type=float, default=0.0,
                   help="share of customers defrauded once (0..1; e.g. 0.02), labelled in a `fraud` column of "
                        "transactions (with a `counterparty` column): card testing, account takeover, night spending")
    g.add_argument("--manager-effect", type=float, default=0.0,
                   help="how much a relationship manager's lasting quality moves their clients' product use and "
                        "loyalty (>= 0; 1: clearly), so manager and agency performance can be predicted")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="materialize the whole asset graph through Dagster, in this process")
    r.add_argument("--source", help="shipped source name (synthetic, berka, ...) or a source-config YAML")
    r.add_argument("--landing", help="folder with the bank's files (default: the source's, else <home>/landing)")
    r.add_argument("--home", help="home folder (default: $SCOREHOUSE_HOME or ./.scorehouse)")
    r.add_argument("--job", default="scorehouse", help="job to run: scorehouse (all), score, retrain, train_<model>, ingest"
                   ", lake (warehouse.backend iceberg: features and scores in the lake, docs/scale-out.md)")
    r.add_argument("--partition", help="a partitioned job's partition (lake: the snapshot date, YYYY-MM-DD; "
                   "default: the snapshot the warehouse's data gives)")
    rs = r.add_argument_group("settings for this run (over scorehouse.yaml; docs/settings.md, docs/scale-out.md)")
    rs.add_argument("--backend", choices=("duckdb", "iceberg"), help="warehouse.backend; iceberg: the run on the DuckDB "
                    "file (training on a sample of the customers: warehouse.lake.sample_customers), then job lake "
                    "(every customer's features and scores, and the serving file, from the lake)")
    rs.add_argument("--catalog", help="the Iceberg catalog's URL (postgresql://user@host:port/db; else "
                    "SCOREHOUSE_CATALOG, where a password belongs: a flag is visible to other users of the machine)")
    rs.add_argument("--warehouse", help="warehouse.lake.location: the Iceberg warehouse, a folder or s3://bucket/prefix")
    rs.add_argument("--shards", type=int, help="warehouse.lake.shards: customer shards")
    rs.add_argument("--executor", choices=("in_process", "multiprocess", "k8s", "celery"),
                    help="execution.executor: how the run's steps are executed")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("alerts", help="send a test message to every alert channel, or show what was sent")
    a.add_argument("action", choices=("test", "log"))
    a.add_argument("--home")
    a.add_argument("--limit", type=int, default=30, help="log: how many deliveries")
    a.set_defaults(func=cmd_alerts)

    d = sub.add_parser("deliveries", help="list every delivered file and its state, or accept a held one")
    d.add_argument("action", choices=("list", "accept"))
    d.add_argument("file", nargs="?", help="accept: the held file, as `list` names it")
    d.add_argument("--table", help="only this contract table")
    d.add_argument("--home")
    d.add_argument("--wait", type=float, default=600, help="seconds to wait while a run holds the warehouse")
    d.set_defaults(func=cmd_deliveries)

    b = sub.add_parser("rollback", help="serve the previous serving file again (BI reads <home>/serving.duckdb)")
    b.add_argument("--home")
    b.add_argument("--to", help="a version name from --list instead of the previous one")
    b.add_argument("--list", action="store_true", help="list the kept versions (* = served now)")
    b.set_defaults(func=cmd_rollback)

    st = sub.add_parser("status", help="the last run: how it ended, what became of each model, drift, publish")
    st.add_argument("--home")
    st.add_argument("--wait", type=float, default=60, help="seconds to wait while a run holds the warehouse")
    st.set_defaults(func=cmd_status)

    q = sub.add_parser("sql", help="query the serving file read-only (a prompt without QUERY): what BI sees")
    q.add_argument("query", nargs="?", help="one SQL statement, e.g. \"SELECT * FROM manifest\"")
    q.add_argument("--home")
    q.add_argument("--max-rows", type=int, default=40, help="rows shown (the first and last half)")
    q.set_defaults(func=cmd_sql)

    s = sub.add_parser("settings", help="show the effective settings and where each value comes from")
    s.add_argument("--home")
    s.add_argument("--source", help="shipped source name or a source-config YAML (default: $SCOREHOUSE_SOURCE "
                                    "or synthetic)")
    s.set_defaults(func=cmd_settings)

    u = sub.add_parser("ui", help="start the Dagster webserver and daemon on 127.0.0.1 for a home")
    u.add_argument("--home")
    u.add_argument("--source")
    u.add_argument("--landing")
    u.add_argument("--port", type=int, default=UI_PORT)
    u.set_defaults(func=cmd_ui)

    args = parser.parse_args(argv)
    if getattr(args, "action", None) == "accept" and not args.file:
        parser.error("deliveries accept: name the held file (see `scorehouse deliveries list`)")
    try:
        return args.func(args)
    except Exception as e:
        problem = storage_problem(e, Home.resolve(getattr(args, "home", None)).root)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 1


STORAGE = {  # what the disk says, in the words of the libraries that meet it first (OS, DuckDB, SQLite)
    "no space left": ("No space left on device", "database or disk is full", "No space left"),
    "read-only": ("Read-only file system", "attempt to write a readonly database", "readonly database"),
}


def storage_problem(e: BaseException, home: Path) -> str | None:
    """One line for a full disk or a read-only home, whatever library met it first; None for other errors."""
    import errno

    seen, err = set(), e
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        path = getattr(err, "filename", None) or home
        codes = {errno.ENOSPC: "no space left", errno.EDQUOT: "no space left", errno.EROFS: "read-only"}
        kind = codes.get(getattr(err, "errno", None))
        if kind is None:
            kind = next((k for k, words in STORAGE.items() if any(w in str(err) for w in words)), None)
        if kind is None and "disk I/O error" in str(err):  # SQLite's word for a write that failed, whatever the cause
            kind = _file_system_state(home)
        if kind == "no space left":
            return (f"no space left on the device holding {path}: free some space, then run again (the next run "
                    "continues from the last committed state)")
        if kind == "read-only":
            return (f"{path} is on a read-only file system: scorehouse writes its home there (--home or "
                    "SCOREHOUSE_HOME); make it writable or choose another home, then run again")
        err = err.__cause__ or err.__context__
    return None


def _file_system_state(home: Path) -> str | None:
    """'read-only' or 'no space left' when the file system holding `home` is so now, else None (a real I/O error:
    left to its traceback)."""
    path = home
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    return "no space left" if st.f_bavail * st.f_frsize < 1 << 20 else None


if __name__ == "__main__":
    sys.exit(main())
