"""The home folder and DuckDB connections.

DuckDB allows one writing process per file, so the pipeline opens the working database briefly, inside
`with`, and Dagster runs at most one writer at a time (pool `warehouse`, limit 1).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

DEFAULT_HOME = ".scorehouse"
SQL = Path(__file__).with_name("sql")  # statements longer than a few lines, values bound ($1, ...)


@cache
def sql(name: str) -> str:
    return (SQL / f"{name}.sql").read_text()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Home:
        return cls(Path(home or os.environ.get("SCOREHOUSE_HOME") or DEFAULT_HOME).expanduser().resolve())

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def serving(self) -> Path:
        return self.root / "serving.duckdb"

    @property
    def serving_versions(self) -> Path:
        return self.root / "serving"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def run_lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


def content_version(con: duckdb.DuckDBPyConnection, table: str, exact: bool = False) -> str:
    """A fingerprint of a table's rows (any order): equal when a rebuild produced the same rows. Dagster's data
    version of a feature table, so that a model trained on it is "stale" only when its data really changed.
    `exact`: every bit of every value counts (delivered rows: a corrected amount must show)."""
    # Doubles as single precision (7 significant digits), and below 1e-9 as 0: DuckDB's parallel sums and averages
    # may differ in the last bits between two builds of the same rows (a balance that nets to 0 may come out
    # 1e-17), which made every model look stale after a daily run on unchanged data. A cast, not printf: printf
    # cost ~17 s on 1M customers' features, the cast well under a second.
    schema, _, name = table.rpartition(".")
    cols = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND "
                       "table_name = ? ORDER BY ordinal_position", [schema or "main", name]).fetchall()
    values = ", ".join(f"""(CASE WHEN abs("{c}") < 1e-9 THEN 0 ELSE "{c}" END)::FLOAT"""
                       if t in ("DOUBLE", "FLOAT", "REAL") and not exact else f'"{c}"' for c, t in cols)
    (n, h), = con.execute(f"SELECT count(*), coalesce(sum(hash({values or 'NULL'})::HUGEINT), 0) "
                          f"FROM {table} t").fetchall()
    return f"{n}-{h:x}"


def delivery_version(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A raw table's data version from the ledger: what each of its deliveries did (loaded, held, released ...).
    Its rows change only through a delivery, and hashing the ledger costs nothing where the table has 60M rows."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                       "AND table_name = 'deliveries'").fetchone()[0]:
        return "0"
    (h,) = con.execute("""SELECT hash(string_agg(concat_ws(':', delivery_id, state, rows_loaded, rows_released,
                                                          rows_closed), ',' ORDER BY delivery_id))
                          FROM raw.deliveries WHERE table_name = ?""", [table]).fetchone()
    return f"{h or 0:x}"


def has_rows(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Whether `relation` (a schema-qualified table, or a parenthesised query) holds at least one row, without
    counting them all."""
    return con.execute(f"SELECT count(*) > 0 FROM (SELECT 1 FROM {relation} t LIMIT 1)").fetchall()[0][0]


@contextmanager
def connect(path: str | Path, read_only: bool = False, memory_limit: str | None = None, threads: int | None = None,
            wait_seconds: float = 0.0, on_wait=None):
    """A short-lived connection; spills to <home>/tmp so big loads stay within the memory limit. DuckDB lets
    one process write a file and no other open it meanwhile: with `wait_seconds`, wait that long for the other
    process (a pipeline run) to let go, saying so once through `on_wait`. Inside `held(path)` (one pipeline step),
    a cursor of the held connection instead."""
    import time

    path = Path(path)
    held_con = _HELD_FILES.get(str(path.resolve())) if _HELD_FILES else None
    if held_con is not None:
        # A cursor shares the held database instance: DuckDB spends ~20 ms creating an instance (its catalog of
        # built-in functions) on every connect, and a step may connect a dozen times.
        cursor = held_con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"preserve_insertion_order": "true"}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = str(threads)
    if not read_only:
        tmp = path.parent / "tmp"
        tmp.mkdir(exist_ok=True)
        config["temp_directory"] = str(tmp)
    deadline, delay, told = time.monotonic() + wait_seconds, 0.2, False
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            if on_wait and not told:
                on_wait(f"{path} is in use by another process (a pipeline run?): waiting up to {wait_seconds:.0f} s")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    try:
        yield con
    finally:
        con.close()


_HELD_FILES: dict[str, duckdb.DuckDBPyConnection] = {}  # files held open by `held`: resolved path -> connection


@contextmanager
def optimizers_off(con: duckdb.DuckDBPyConnection, *names: str):
    """DuckDB's optimizer rules `names` switched off for the statements run inside; the setting restored after."""
    (before,) = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    off = sorted({n for n in (before or "").split(",") if n} | set(names))
    con.execute(f"SET disabled_optimizers = '{','.join(off)}'")
    try:
        yield con
    finally:
        con.execute(f"SET disabled_optimizers = '{before or ''}'")


@contextmanager
def held(path: str | Path, **connect_args):
    """Hold `path` open for a block (one pipeline step, never longer): every `connect(path)` inside, whatever its
    arguments, is a cursor of this one read-write connection. Nested, the outer hold is kept."""
    key = str(Path(path).resolve())
    if key in _HELD_FILES:
        yield
        return
    try:
        with connect(path, **connect_args) as con:
            _HELD_FILES[key] = con
            try:
                yield
            finally:
                del _HELD_FILES[key]
    finally:
        release_freed_memory()


def release_freed_memory() -> None:
    """Give the heap that a finished step freed back to the system (glibc's `malloc_trim`; elsewhere nothing).
    The steps of a run share one process: without it, memory one step's frames and DuckDB instance freed stays
    in the process and the next step's peak starts from there."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


class RunLockTimeout(RuntimeError):
    pass


_HELD: dict[str, int] = {}  # run locks this process holds: path -> its file descriptor
SHARED_LOCK = "SCOREHOUSE_RUN_LOCK_SHARED"  # "<pid> <lock path>": a holder that lets its children in


@contextmanager
def run_lock(path: Path, holder: str, wait_seconds: float, on_wait=print, poll_seconds: float = 0.5,
             children: bool = False):
    """One pipeline run per home at a time: an exclusive `flock` on `path`, held for the whole run.

    The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a crashed run never
    blocks the next one. A second run waits up to `wait_seconds` (saying once who holds the lock), then fails
    with a message naming the holder. Re-entrant within a process: `scorehouse run` holds it from before its
    run until after its summary has read the warehouse, and the run's own resource takes it again inside. With
    `children`, also for the processes it starts (their environment names the lock and its holder): the steps
    the multiprocess executor starts for its run go ahead under its lock instead of waiting for it.
    """
    import fcntl
    import time

    key = str(Path(path).resolve())
    if key in _HELD:  # this process holds it already: say who holds it now, release nothing on the way out
        _write_holder(_HELD[key], holder)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, told = time.monotonic() + wait_seconds, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                other = Path(path).read_text().strip() or "another process"
                if _held_for_this_process_tree(key, other):
                    yield
                    return
                if time.monotonic() >= deadline:
                    raise RunLockTimeout(f"{other} holds {path} (one run per home at a time); waited "
                                         f"{wait_seconds:.0f}s (warehouse.run_lock_wait_seconds)") from None
                if not told:
                    on_wait(f"waiting for {other} to finish (one run per home at a time: {path})")
                    told = True
                time.sleep(poll_seconds)
        _write_holder(fd, holder)
        _HELD[key] = fd
        if children:
            os.environ[SHARED_LOCK] = f"{os.getpid()} {key}"
        yield
    finally:
        if _HELD.pop(key, None) is not None and children:
            os.environ.pop(SHARED_LOCK, None)
        os.close(fd)  # releases the lock


def _held_for_this_process_tree(key: str, holder: str) -> bool:
    """Whether the lock is held by the process that started this one and shared it with its children."""
    import psutil

    pid, _, shared = os.environ.get(SHARED_LOCK, "").partition(" ")
    return (shared == key and holder.endswith(f"(pid {pid})")
            and int(pid) in {p.pid for p in psutil.Process().parents()})


def _write_holder(fd: int, holder: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, frames: dict | None = None):
    """One transaction with DataFrames registered as views by name: committed if the body returns, rolled
    back if it raises (readers see all of it or none), the views dropped either way."""
    frames = frames or {}
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        con.execute("BEGIN TRANSACTION")
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in frames:
            con.unregister(name)
