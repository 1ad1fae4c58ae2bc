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
from pathlib import Path
from typing import Any

import yaml

from warehouse.contract import TABLES

SOURCES_DIR = Path(__file__).parent / "sources"

READ_KEYS = {
    "path", "format", "sep", "header", "columns", "encoding", "decimal", "thousands", "quote",
    "na_values", "sheet", "skip_rows",
}
MAP_KEYS = {"rename", "dates", "value_maps", "derive", "joins", "drop", "keep_extra", "description"}


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

    def fingerprint(self) -> str:
        blob = json.dumps(_plain(self), sort_keys=True, default=str)
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
    path = resolve_source(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SourceConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise SourceConfigError(f"{path}: expected a mapping at the top level")
    where = str(path)

    unknown_tables = set(doc.get("tables", {})) - set(TABLES)
    if unknown_tables:
        raise SourceConfigError(
            f"{where}: tables {sorted(unknown_tables)} are not in the contract ({', '.join(TABLES)})"
        )
    inputs = {
        name: _read_spec(spec, f"{where}: inputs.{name}") for name, spec in (doc.get("inputs") or {}).items()
    }
    feeds: dict[str, tuple[Feed, ...]] = {}
    for table, specs in (doc.get("tables") or {}).items():
        specs = specs if isinstance(specs, list) else [specs]
        feeds[table] = tuple(_feed(table, s, f"{where}: tables.{table}[{i}]") for i, s in enumerate(specs))

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


def _read_spec(spec: dict, where: str) -> ReadSpec:
    if not isinstance(spec, dict) or "path" not in spec:
        raise SourceConfigError(f"{where}: needs at least `path` (a file glob in the landing folder)")
    unknown = set(spec) - READ_KEYS - MAP_KEYS
    if unknown:
        raise SourceConfigError(f"{where}: unknown keys {sorted(unknown)}")
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
    return ReadSpec(**kw)


def _feed(table: str, spec: dict, where: str) -> Feed:
    read = _read_spec(spec, where)
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
        derive={str(k): str(v) for k, v in (spec.get("derive") or {}).items()},
        joins=tuple(spec.get("joins") or ()),
        drop=tuple(spec.get("drop") or ()),
        keep_extra=bool(spec.get("keep_extra", True)),
    )
