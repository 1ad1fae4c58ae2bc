"""Resources, and the one helper that picks them per environment."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from assets.settings import WarehouseSettings, load_settings, source_config
from warehouse.db import Home, connect, held, run_lock
from warehouse.schema import ensure_schemas
from warehouse.sources import SourceConfig

WAREHOUSE = WarehouseSettings()  # the defaults of `warehouse:` in the settings, for a resource built without them


class Warehouse(dg.ConfigurableResource):
    """The working DuckDB file under the home. One writer at a time: assets use pool `warehouse`."""

    home: str
    memory_limit: str = WAREHOUSE.memory_limit
    threads: int | None = WAREHOUSE.threads
    lock_wait_seconds: float = 60.0  # another process (e.g. a run from the CLI) may hold the file briefly
    run_lock_wait_seconds: float = WAREHOUSE.run_lock_wait_seconds  # a second run of the same home waits for the first

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        # One run per home from start to end, whoever launched it (CLI, schedule, sensor, UI): steps of two
        # runs never interleave, and the second waits, or fails saying which run holds the home.
        who = f"run {context.run.run_id}" if context.run else "a Dagster run"

        def on_wait(message: str) -> None:
            print(message, file=sys.stderr, flush=True)  # the CLI shows only errors of the console log
            if context.log:
                context.log.warning(message)

        with run_lock(self.paths.run_lock, who, self.run_lock_wait_seconds, on_wait=on_wait):
            yield self

    @property
    def paths(self) -> Home:
        return Home.resolve(self.home)

    @contextmanager
    def connect(self):
        # Our own context manager rather than dagster-duckdb's: its get_connection does not close the
        # connection when the body raises, which would keep DuckDB's single-writer lock after a failure.
        # Another process (e.g. `scorehouse deliveries accept`) may hold the file briefly: wait for it.
        with connect(self.paths.warehouse, memory_limit=self.memory_limit, threads=self.threads,
                     wait_seconds=self.lock_wait_seconds) as con:
            ensure_schemas(con)
            yield con

    @contextmanager
    def holding(self):
        """The file held open for one step: its `connect()`s share one DuckDB instance (see `holds_warehouse`)."""
        with held(self.paths.warehouse, memory_limit=self.memory_limit, threads=self.threads,
                  wait_seconds=self.lock_wait_seconds):
            yield


class WarehouseReader(Warehouse):
    """The working DuckDB file for steps that only read it, side by side (job lake's shard steps: DuckDB lets
    several processes read a file no process writes). No run lock of its own: a step process of a run launched
    from the UI would take it for itself and the shard steps would wait for each other; a writer of another run
    makes `reading()` wait `lock_wait_seconds` for the file, then fail naming it."""

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        yield self

    @contextmanager
    def reading(self):
        with connect(self.paths.warehouse, read_only=True, memory_limit=self.memory_limit, threads=self.threads,
                     wait_seconds=self.lock_wait_seconds) as con:
            yield con


def holds_warehouse(fn):
    """An asset's or check's body run with its `warehouse` resource held for the step (`warehouse.db.held`): a
    step connects several times (read, record, check), and creating a DuckDB instance costs ~20 ms each time.
    Only for the embedded jobs' in-process steps: a step of job lake must not keep other step processes out."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def steps(*args, **kwargs):
            with kwargs["warehouse"].holding():
                yield from fn(*args, **kwargs)
        return steps

    @functools.wraps(fn)
    def step(*args, **kwargs):
        with kwargs["warehouse"].holding():
            return fn(*args, **kwargs)
    return step


class Source(dg.ConfigurableResource):
    """Which bank's files to read (a shipped source name or a YAML path) and where they land."""

    source: str = "synthetic"
    landing: str = ""

    def config(self) -> SourceConfig:
        return source_config(self.source)  # its `settings:` block checked too

    def landing_path(self) -> Path:
        cfg = self.config()
        landing = Path(self.landing or cfg.default_landing or "").expanduser().resolve()
        if not landing.is_dir():
            raise dg.Failure(f"landing folder {landing} does not exist (source {cfg.name!r}); "
                             "pass --landing or set SCOREHOUSE_LANDING")
        return landing


class Settings(dg.ConfigurableResource):
    """Thresholds and knobs, validated (assets/settings.py): the defaults, the source config's
    `settings:`, <home>/scorehouse.yaml, $SCOREHOUSE_CONFIG. `get` returns plain data (mappings, lists)."""

    home: str
    source: str = ""

    def get(self, *path: str):
        node = load_settings(self.home, self.source or None)
        for p in path:
            node = node[p]
        return node


def resources_for_env(env: str | None = None) -> dict[str, dg.ConfigurableResource]:
    """Local (default) resources from the environment the CLI or `make ui` set up.

    SCOREHOUSE_HOME, SCOREHOUSE_SOURCE and SCOREHOUSE_LANDING choose the home, the bank and its landing
    folder; SCOREHOUSE_ENV names the environment (only `local`, the embedded DuckDB + Dagster storage, today).
    """
    env = env or os.environ.get("SCOREHOUSE_ENV", "local")
    if env != "local":
        raise ValueError(f"unknown SCOREHOUSE_ENV {env!r}; known: local")
    home = Home.resolve()
    source = os.environ.get("SCOREHOUSE_SOURCE", "synthetic")
    wh = load_settings(home.root, source)["warehouse"]
    # Landing: the environment, else the source config's own `landing:`, else <home>/landing.
    landing = os.environ.get("SCOREHOUSE_LANDING") or source_config(source).default_landing or str(home.root / "landing")
    resources = {
        "warehouse": Warehouse(home=str(home.root), memory_limit=wh["memory_limit"], threads=wh["threads"],
                               run_lock_wait_seconds=wh["run_lock_wait_seconds"]),
        "source": Source(source=source, landing=landing),
        "settings": Settings(home=str(home.root), source=source),
    }
    if wh["backend"] == "iceberg":
        from assets.lake import LakeResource

        resources["lake"] = LakeResource(catalog=dg.EnvVar("SCOREHOUSE_CATALOG"), location=wh["lake"]["location"])
        resources["warehouse_reader"] = WarehouseReader(home=str(home.root), memory_limit=wh["memory_limit"],
                                                        threads=wh["threads"])
    return resources
