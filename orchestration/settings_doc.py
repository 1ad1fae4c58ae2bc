"""The settings as commented YAML: the defaults for docs/settings.md, the effective values for `scorehouse settings`.

Both come from the model in assets/settings.py (values and descriptions), so neither can disagree with
what a run uses. Regenerate the page with `python -m orchestration.settings_doc > docs/settings.md`.
"""

from __future__ import annotations

import textwrap
import types
import typing
from typing import Any

import yaml

from assets.settings import Effective, ScorehouseSettings, _child, _is_model, _strip, defaults

WIDTH = 110
ORIGIN_COLUMN = 60


def _flow(value: Any) -> str:
    """One value as YAML on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("...").strip()


def _member(t: Any, value: Any) -> Any:
    """The member of a tagged union (a channel) that `value` is."""
    if typing.get_origin(t) in (typing.Union, types.UnionType) and isinstance(value, dict):
        for m in typing.get_args(t):
            if _is_model(m) and "type" in m.model_fields and m.model_fields["type"].default == value.get("type"):
                return m
    return t


def _lines(data: dict, t: Any, path: tuple, depth: int, out: list[str], eff: Effective | None) -> None:
    pad = "  " * depth
    for key, value in data.items():
        p = (*path, key)
        field = t.model_fields.get(key) if _is_model(t) else None
        if field is not None and field.description:
            out += [f"{pad}# {line}" for line in textwrap.wrap(field.description, WIDTH - len(pad) - 2)]
        child = _member(_strip(_child(t, key)), value)
        if isinstance(value, dict) and value:
            out.append(f"{pad}{_flow(key)}:")
            _lines(value, child, p, depth + 1, out, eff)
            continue
        line = f"{pad}{_flow(key)}: {_flow(value)}"
        out.append(f"{line:<{ORIGIN_COLUMN}}  # {eff.origin(p)}" if eff else line)


def render(eff: Effective | None = None) -> str:
    """Commented YAML of the defaults, or of `eff`'s effective values each followed by where it came from."""
    out: list[str] = []
    _lines(eff.as_dict() if eff else defaults(), ScorehouseSettings, (), 0, out, eff)
    return "\n".join(out) + "\n"


def header(eff: Effective, home_file: str) -> str:
    lines = ["# Effective settings, merged key by key from (lowest first):"]
    for layer in eff.layers:
        shown = (f"{layer.label} ({layer.where})" if layer.label.startswith("source ")
                 else layer.where if layer.label == "$SCOREHOUSE_CONFIG" else layer.label)
        lines.append(f"#   {shown}")
    if not any(layer.label == home_file for layer in eff.layers):
        lines.append(f"#   ({home_file}: none; any key below can be set there)")
    lines.append("# After each value: where it came from. Every setting: docs/settings.md.")
    return "\n".join(lines) + "\n"


PAGE = """\
# Settings

Everything users tune — the quarantine threshold, feature checks, DuckDB memory, sensor intervals, schedules,
every model's parameters and promotion gate, churn risk cut-offs and retention actions, drift bands, alert
channels and routes, what BI may read — is one typed settings model (`assets/settings.py`, composing
the model parameters of `ml/params.py`, the drift bands of `quality/drift.py` and the alert channels of
`quality/channels.py`). Each default is defined there once; this page is generated from it.

## Where settings come from

Merged key by key, lowest first (a mapping merges into the one below it; a value or a list replaces it):

1. the defaults below;
2. the source config's `settings:` block — what belongs to a bank's data, e.g. which transactions count as
   purchases ([source-config.md](source-config.md));
3. `<home>/scorehouse.yaml` — a home's own choices;
4. the file named by `$SCOREHOUSE_CONFIG`, when set;
5. `scorehouse run`'s flags (`--backend`, `--warehouse`, `--shards`, `--executor`: [scale-out.md](scale-out.md)),
   passed to the run's step processes as JSON in `$SCOREHOUSE_SETTINGS`.

So `<home>/scorehouse.yaml` needs only the keys it changes:

```yaml
models:
  churn:
    params: {n_estimators: 200}
    gate:
      min: {auc: 0.75}        # the other thresholds stay; `auc: null` would drop this one, `min: null` all
schedules:
  daily_scoring: {cron: "30 5 * * 1-5"}
```

`scorehouse settings [--home DIR] [--source NAME|PATH]` prints the effective settings as this YAML, each
value followed by where it came from (`default`, `source <name>`, `<home>/scorehouse.yaml`,
`$SCOREHOUSE_CONFIG`, `command line`).

## Checked before anything runs

The merged settings are validated when the Dagster definitions load and by every `scorehouse` command that
reads them (`run`, `ui`, `alerts`, `settings`); a source config's `settings:` block when the source loads.
An unknown key or a bad value stops it (exit 2) with one line per problem, naming the file and the key path:

```
error: /srv/bank/.scorehouse/scorehouse.yaml: models.churn.params.n_estimatrs: unknown key; did you mean n_estimators? (allowed: n_estimators, max_depth, ...)
error: /srv/bank/.scorehouse/scorehouse.yaml: models.churn.risk_cutoffs: expected 2 numbers in (0, 1), the lower first, got [0.6, 0.3]
```

Free-form keys are not checked against anything: feature columns in `features.ranges`, tables in
`serving.shareable`, and the metric names of a gate (a misspelt metric under `min`/`max` fails the gate,
naming it; under `not_worse_than_champion` it is not compared).

## Threads

DuckDB uses `warehouse.threads` (null: every core); model fits use their own `threads` where they have one.
XGBoost's and scikit-learn's OpenMP threads sleep while they wait for each other (`OMP_WAIT_POLICY=PASSIVE`,
which Scorehouse sets unless the environment already does): spinning took a core from whatever else the
machine was running for no gain ([benchmarks/RESULTS.md](../benchmarks/RESULTS.md)).

## Reference: every setting and its default

```yaml
{reference}```
"""


def render_page() -> str:
    return PAGE.replace("{reference}", render())


if __name__ == "__main__":
    print(render_page(), end="")
