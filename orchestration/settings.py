"""Settings: packaged defaults, then the source config's `settings:` block (what is specific to a bank's data,
e.g. which transactions count as purchases), then the user's YAML (<home>/scorehouse.yaml, then
$SCOREHOUSE_CONFIG), merged key by key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS = Path(__file__).with_name("defaults.yaml")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_settings(home: str | Path | None = None, source: str | None = None) -> dict[str, Any]:
    settings = yaml.safe_load(DEFAULTS.read_text())
    if source:
        from warehouse.sources import load_source

        settings = _merge(settings, load_source(source).settings)
    candidates = [os.environ.get("SCOREHOUSE_CONFIG"), home and Path(home) / "scorehouse.yaml"]
    for c in candidates:
        if c and Path(c).exists():
            settings = _merge(settings, yaml.safe_load(Path(c).read_text()) or {})
    return settings
