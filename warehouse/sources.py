"""Source configs: one YAML file maps a bank's own files onto the raw data contract.

A config names, per contract table, one or more *feeds* (a file glob plus how to read and map it).
Everything a new bank needs is expressible here: separators, encodings, decimal marks, headerless files,
renames, date formats, value maps, derived columns (DuckDB SQL over the source row) and joins to lookup
files (`inputs`). See docs/source-config.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

from warehouse.contract import DATE, MODES, NUM, TABLES, TS
from warehouse.sqlcheck import UnsafeSql, expression, join_clause

SOURCES_DIR = Path(__file__).parent / "sources"

READ_KEYS = {
    "path", "format", "sep", "header", "columns", "encoding", "decimal", "thousands", "quote",
    "na_values", "sheet", "skip_rows", "compression",
}
MAP_KEYS = {"rename", "dates", "value_maps", "derive", "joins", "drop", "keep_extra", "description"}
# How files arrive (docs/deliveries.md); settable for every table under `delivery:` and per feed.
DELIVERY_DEFAULTS = {
    "settle_seconds": 10.0,  # a file is read once its size and mtime have not changed for this long
    "ready_marker": None,  # or "{name}.done" (one marker per file) or "_SUCCESS" (one per folder)
    "max_shrink": 0.10,  # a snapshot smaller than the current state by more than this share is held back
    "last_line": "quarantine",  # a last line without a line break: quarantine ("possibly truncated") | accept
}
DELIVERY_KEYS = {"mode", "on_conflict", *DELIVERY_DEFAULTS}
ON_CONFLICT = ("keep_first", "latest_wins", "quarantine")
DEFAULT_ON_CONFLICT = {"snapshot": "latest_wins", "events": "quarantine"}
PLAUSIBILITY_KEYS = {"max_abs", "min_date", "min", "max"}


class SourceConfigError(ValueError):
    """A source config that cannot be used; the message names the file and the offending key."""


@dataclass(frozen=True)
class ReadSpec:
    """How to read one file into rows of text."""

    path: str  # glob, relative to the landing folder
    format: str = "auto"  # auto (by extension) | csv | xlsx
    sep: str = ","  # one character, or "whitespace" for runs of blanks (fixed-width-like .txt)
    header: bool = True
    columns: tuple[str, ...] = ()  # names when header is false (or to override the header)
    encoding: str = "utf-8"
    decimal: str = "."
    thousands: str | None = None
    quote: str = '"'
    na_values: tuple[str, ...] = ("",)
    sheet: str | int | None = None
    skip_rows: int = 0
    compression: str = "auto"  # auto (by extension: .gz) | gzip | none

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, (), "")}


@dataclass(frozen=True)
class Feed:
    """One file glob mapped onto one contract table."""

    table: str
    read: ReadSpec
    rename: dict[str, str] = field(default_factory=dict)  # source column -> contract column
    dates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> strptime formats
    value_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    derive: dict[str, str] = field(default_factory=dict)  # column -> SQL expression over the source row
    joins: tuple[str, ...] = ()  # SQL join clauses to inputs, e.g. "LEFT JOIN disp ON disp.account_id = src.x"
    drop: tuple[str, ...] = ()  # source columns not to keep (e.g. free text)
    keep_extra: bool = True  # unmapped source columns are kept as extra attributes
    mode: str = "snapshot"  # snapshot | events (the contract table's by default)
    on_conflict: str = "latest_wins"  # a key already loaded with other values: keep_first | latest_wins | quarantine
    settle_seconds: float = DELIVERY_DEFAULTS["settle_seconds"]
    ready_marker: str | None = None
    max_shrink: float = DELIVERY_DEFAULTS["max_shrink"]
    last_line: str = DELIVERY_DEFAULTS["last_line"]
    plausibility: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> overrides of the contract

    def fingerprint(self) -> str:
        """What decides how rows are mapped: a change re-reads the feed's files. Delivery keys (how a file is
        waited for, guarded, merged) do not change what a row says, so they are not part of it."""
        mapping = {k: v for k, v in _plain(self).items() if k not in DELIVERY_KEYS}
        blob = json.dumps(mapping, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceConfig:
    name: str
    description: str
    feeds: dict[str, tuple[Feed, ...]]  # contract table -> feeds
    inputs: dict[str, ReadSpec]  # lookup files usable by name in joins/derive
    snapshot_date: date | None
    holdout_days: int
    default_landing: str | None
    origin: Path
    settings: dict = field(default_factory=dict)  # overrides of the pipeline settings for this source
    def tables(self) -> list[str]:
        return [t for t in TABLES if self.feeds.get(t)]


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in obj.__dict__.items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def available_sources() -> list[str]:
    return sorted(p.stem for p in SOURCES_DIR.glob("*.yaml"))


def resolve_source(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise SourceConfigError(f"source config {p} does not exist")
        return p
    shipped = SOURCES_DIR / f"{name_or_path}.yaml"
    if not shipped.exists():
        raise SourceConfigError(
            f"unknown source {name_or_path!r}: not a file and not one of {', '.join(available_sources())}"
        )
    return shipped


def load_source(name_or_path: str | Path) -> SourceConfig:
    """The source config, checked (SourceConfigError naming the file and key). Read again only when the file
    changed: every ingest step and resource asks for it."""
    path = resolve_source(name_or_path)
    st = path.stat()
    return _load(path.resolve(), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _load(path: Path, size: int, mtime_ns: int) -> SourceConfig:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SourceConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise SourceConfigError(f"{path}: expected a mapping at the top level")
    where = str(path)

    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise SourceConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(TOP_KEYS))})")
    unknown_tables = set(doc.get("tables", {})) - set(TABLES)
    if unknown_tables:
        raise SourceConfigError(
            f"{where}: tables {sorted(unknown_tables)} are not in the contract ({', '.join(TABLES)})"
        )
    inputs = {
        name: _read_spec(spec, f"{where}: inputs.{name}") for name, spec in (doc.get("inputs") or {}).items()
    }
    delivery = _delivery_defaults(doc.get("delivery") or {}, f"{where}: delivery")
    plausibility = _plausibility(doc.get("plausibility") or {}, f"{where}: plausibility")
    feeds: dict[str, tuple[Feed, ...]] = {}
    for table, specs in (doc.get("tables") or {}).items():
        specs = specs if isinstance(specs, list) else [specs]
        feeds[table] = tuple(_feed(table, s, f"{where}: tables.{table}[{i}]", delivery, set(inputs),
                                   plausibility.get(table, {})) for i, s in enumerate(specs))
        if len({f.mode for f in feeds[table]}) > 1:
            raise SourceConfigError(f"{where}: tables.{table}: every feed of a table has the same `mode`")

    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):  # its keys are checked against the settings model by orchestration
        raise SourceConfigError(f"{where}: settings: expected a mapping of pipeline settings (docs/settings.md)")
    snap = doc.get("snapshot") or {}
    snapshot_date = snap.get("date")
    if isinstance(snapshot_date, str):
        snapshot_date = date.fromisoformat(snapshot_date)
    return SourceConfig(
        name=doc.get("name", path.stem),
        description=doc.get("description", ""),
        feeds=feeds,
        inputs=inputs,
        snapshot_date=snapshot_date,
        holdout_days=int(snap.get("holdout_days", 90)),
        default_landing=doc.get("landing"),
        origin=path,
        settings=settings,
    )


TOP_KEYS = {"name", "description", "landing", "snapshot", "inputs", "tables", "settings", "delivery", "plausibility"}


def _confined_glob(glob: object, where: str) -> str:
    """A glob relative to the landing folder that cannot leave it: no absolute path, no `..`."""
    text = str(glob)
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("~"):
        raise SourceConfigError(f"{where}.path: {text!r} is absolute; paths are globs inside the landing folder")
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        raise SourceConfigError(f"{where}.path: {text!r} leaves the landing folder (`..`); paths are globs inside it")
    return text


def _delivery_defaults(spec: dict, where: str) -> dict:
    if not isinstance(spec, dict):
        raise SourceConfigError(f"{where}: expected a mapping")
    unknown = set(spec) - set(DELIVERY_DEFAULTS)
    if unknown:
        raise SourceConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(DELIVERY_DEFAULTS)})")
    return {**DELIVERY_DEFAULTS, **_delivery_values(spec, where)}


def _delivery_values(spec: dict, where: str) -> dict:
    out = {}
    if "settle_seconds" in spec:
        v = spec["settle_seconds"]
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            raise SourceConfigError(f"{where}.settle_seconds: a number of seconds >= 0, not {v!r}")
        out["settle_seconds"] = float(v)
    if "max_shrink" in spec:
        v = spec["max_shrink"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 1:
            raise SourceConfigError(f"{where}.max_shrink: a share between 0 and 1, not {v!r}")
        out["max_shrink"] = float(v)
    if "ready_marker" in spec:
        v = spec["ready_marker"]
        if v is not None and (not isinstance(v, str) or not v.strip() or "/" in v or ".." in v):
            raise SourceConfigError(f"{where}.ready_marker: a file name such as '{{name}}.done' or '_SUCCESS', "
                                    f"not {v!r}")
        out["ready_marker"] = v
    if "last_line" in spec:
        if spec["last_line"] not in ("quarantine", "accept"):
            raise SourceConfigError(f"{where}.last_line: quarantine or accept, not {spec['last_line']!r}")
        out["last_line"] = spec["last_line"]
    return out


def _plausibility(spec: dict, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """`plausibility: {table: {column: {max_abs | min_date | min | max: value}}}`: the contract's bounds, per source."""
    if not isinstance(spec, dict):
        raise SourceConfigError(f"{where}: expected a mapping of tables")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for table, cols in spec.items():
        if table not in TABLES:
            raise SourceConfigError(f"{where}.{table}: not a contract table ({', '.join(TABLES)})")
        for col, rules in (cols or {}).items():
            column = TABLES[table].column(col)
            if column is None:
                raise SourceConfigError(f"{where}.{table}.{col}: not a column of {table}")
            if not isinstance(rules, dict) or set(rules) - PLAUSIBILITY_KEYS:
                raise SourceConfigError(f"{where}.{table}.{col}: a mapping of {', '.join(sorted(PLAUSIBILITY_KEYS))}")
            for k, v in rules.items():
                if k == "min_date":
                    if column.type not in (DATE, TS):
                        raise SourceConfigError(f"{where}.{table}.{col}.min_date: {col} is not a date")
                    try:
                        v = date.fromisoformat(str(v)).isoformat()
                    except ValueError as e:
                        raise SourceConfigError(f"{where}.{table}.{col}.min_date: an ISO date, not {v!r}") from e
                elif v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
                    raise SourceConfigError(f"{where}.{table}.{col}.{k}: a number or null, not {v!r}")
                elif k == "max_abs" and column.type != NUM:
                    raise SourceConfigError(f"{where}.{table}.{col}.max_abs: {col} is not a number")
                out.setdefault(table, {}).setdefault(col, {})[k] = v
    return out


def _read_spec(spec: dict, where: str, extra_keys: frozenset[str] = frozenset()) -> ReadSpec:
    if not isinstance(spec, dict) or "path" not in spec:
        raise SourceConfigError(f"{where}: needs at least `path` (a file glob in the landing folder)")
    unknown = set(spec) - READ_KEYS - MAP_KEYS - extra_keys
    if unknown:
        raise SourceConfigError(f"{where}: unknown keys {sorted(unknown)}")
    spec = {**spec, "path": _confined_glob(spec["path"], where)}
    kw = {k: spec[k] for k in READ_KEYS if k in spec}
    for k in ("columns", "na_values"):
        if k in kw:
            kw[k] = tuple(str(v) for v in kw[k])
    if "na_values" in kw and "" not in kw["na_values"]:
        kw["na_values"] = ("", *kw["na_values"])
    if kw.get("format", "auto") not in ("auto", "csv", "xlsx"):
        raise SourceConfigError(f"{where}: format must be auto, csv or xlsx, not {kw['format']!r}")
    sep = kw.get("sep", ",")
    if sep != "whitespace" and len(sep) != 1:
        raise SourceConfigError(f"{where}: sep must be one character or 'whitespace', not {sep!r}")
    if kw.get("compression", "auto") not in ("auto", "gzip", "none"):
        raise SourceConfigError(f"{where}: compression must be auto, gzip or none, not {kw['compression']!r}")
    return ReadSpec(**kw)


def _feed(table: str, spec: dict, where: str, delivery: dict | None = None, inputs: set[str] = frozenset(),
          plausibility: dict | None = None) -> Feed:
    read = _read_spec(spec, where, frozenset(DELIVERY_KEYS))
    mode = spec.get("mode", TABLES[table].mode)
    if mode not in MODES:
        raise SourceConfigError(f"{where}.mode: one of {', '.join(MODES)}, not {mode!r}")
    on_conflict = spec.get("on_conflict", DEFAULT_ON_CONFLICT[mode])
    if on_conflict not in ON_CONFLICT:
        raise SourceConfigError(f"{where}.on_conflict: one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    timing = {**(delivery or DELIVERY_DEFAULTS), **_delivery_values(spec, where)}
    derive = {str(k): str(v) for k, v in (spec.get("derive") or {}).items()}
    for col, sql in derive.items():
        try:
            expression(sql)
        except UnsafeSql as e:
            raise SourceConfigError(f"{where}.derive.{col}: {e}: {sql!r}") from e
    joins = tuple(spec.get("joins") or ())
    for i, sql in enumerate(joins):
        try:
            join_clause(sql, inputs)
        except UnsafeSql as e:
            raise SourceConfigError(f"{where}.joins[{i}]: {e}: {sql!r}") from e
    dates = {
        col: tuple(fmt if isinstance(fmt, list) else [fmt]) for col, fmt in (spec.get("dates") or {}).items()
    }
    renamed_targets = set((spec.get("rename") or {}).values()) | set(spec.get("derive") or {})
    for col in renamed_targets:
        if col.startswith("_"):
            raise SourceConfigError(f"{where}: column {col!r}: names starting with _ are reserved")
    for col, mapping in (spec.get("value_maps") or {}).items():
        if not isinstance(mapping, dict):
            raise SourceConfigError(f"{where}: value_maps.{col} must map source values to contract values")
    return Feed(
        table=table,
        read=read,
        rename={str(k): str(v) for k, v in (spec.get("rename") or {}).items()},
        dates=dates,
        value_maps={str(k): dict(v) for k, v in (spec.get("value_maps") or {}).items()},
        derive=derive,
        joins=joins,
        drop=tuple(spec.get("drop") or ()),
        keep_extra=bool(spec.get("keep_extra", True)),
        mode=mode,
        on_conflict=on_conflict,
        plausibility=dict(plausibility or {}),
        **timing,
    )
