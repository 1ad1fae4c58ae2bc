"""One model's life in Dagster, the same for every model: challenger -> gate -> champion -> scores.

A model module (assets/churn.py, ...) says how to fit, save and score; `model_assets` turns that into
  - `ml/<name>_challenger` (group training): fit on the current features, register as `challenger`;
  - `<name>_gate`, a blocking check on it: the thresholds of `models.<name>.gate` AND not worse than the champion
    on the same holdout; a failing challenger is marked `rejected` and nothing downstream of it runs;
  - `ml/<name>_champion` (group training): promote the challenger;
  - `scores/<name>` (group scoring): score every customer with the champion -> scores.<name> (+ _history),
    and measure drift against the champion's reference profile -> monitoring.drift;
  - `<name>_drift`, a check on the scores: the model's band is its score's (ERROR in the alert band), raised to
    WARN at most by input drift weighted by the model's importance (quality/drift.py `verdict`).
Each version's reference profile (every input feature and the score, as the model scored the population it was
trained on, and the model's importance of each input) is saved beside its artifacts as reference.json: made from
the version's first scoring when the same run scores it (the same numbers, without scoring everyone twice), at
training in a training-only job.
`scorehouse run` and the landing sensor leave out the training of models whose champion is younger than
`models.retrain_after_days` (orchestration/jobs.py `due_selection`); the `retrain` and `train_<model>` jobs, the
weekly schedule and a materialization from the UI always train.
Scoring reads the champion from the registry, not from the run: the daily scoring job scores with whatever
champion there is, so a retrain that fails its gate never stops scoring.
"""

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.features import CF as CUSTOMER_FEATURES
from assets.metadata import frame_md, rounded, table_metadata
from assets.resources import Settings, Warehouse, holds_warehouse
from ml import registry
from ml.errors import MissingInputs, NotEnoughData
from ml.model import Model
from quality import drift
from warehouse import failpoints
from warehouse.columns import ScoredTable
from warehouse.features import GROUP_AGGREGATES
from warehouse.frames import frame
from warehouse.monitoring import run_drift, write_drift
from warehouse.scores import write_scores

LABELS = dg.AssetKey(["features", "labels"])
PRIORITY = "dagster/priority"
REFERENCE = "reference.json"
PENDING = "reference.pending.json"  # a version whose first scoring makes its reference.json


@dataclass
class Trained:
    """What a fit returns: the model object, its holdout metrics and what the UI should show."""

    model: Model
    metrics: dict
    features: list[str]
    snapshot_date: date | None
    data_hash: str
    metadata: dict = field(default_factory=dict)
    # (champion's registry entry) -> the champion's metrics on this challenger's holdout, computed the same way:
    # the gate compares the two on the same customers and the same outcomes
    rescore: Callable[[registry.Entry], dict] | None = None


@dataclass
class Scored:
    frame: pd.DataFrame  # one row per customer (or customer x rank), customer_id first
    snapshot_date: date
    metadata: dict = field(default_factory=dict)
    order_by: str = "customer_id"
    inputs: pd.DataFrame | None = None  # the model's input rows as scoring read them: what drift is measured on


@dataclass(frozen=True)
class Population:
    """Score columns decided over every row a model scores, not row by row (a rank, a tier by share of
    customers). On the iceberg backend each shard scores its own rows; these columns are then computed again
    over all shards' rows, put in the order the embedded scoring has them (`order`: ties are split in it)."""

    key: tuple[str, ...]  # a row's identity in scores.<name>
    order: tuple[str, ...]
    inputs: tuple[str, ...]  # the published columns `compute` reads
    columns: tuple[str, ...]  # the published columns it gives
    # (rows: key, order and inputs of every shard, in order; the champion's model) -> `columns`, aligned to rows
    compute: Callable[[pd.DataFrame, Model], pd.DataFrame]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    train_doc: str
    score_doc: str
    # scores.<name> column by column: names, meanings, which join bi.customer_scores, the watched outputs
    table: ScoredTable
    # (context, warehouse, models.<name> settings) -> Trained, or None when the data cannot train this model
    fit: Callable[[dg.AssetExecutionContext, Warehouse, dict], Trained | None]
    # its class (ml/model.py), how a version's artifacts are loaded, as "module:Class": imported when first used,
    # so loading the definitions imports no model library (assets/lazy.py)
    model_class: str
    # (context, warehouse, settings, champion entry) -> Scored
    score: Callable[[dg.AssetExecutionContext, Warehouse, dict, registry.Entry], Scored]
    train_deps: tuple[dg.AssetKey, ...] = (CUSTOMER_FEATURES,)
    score_deps: tuple[dg.AssetKey, ...] = (CUSTOMER_FEATURES,)
    kinds: frozenset[str] = frozenset({"scikitlearn", "duckdb"})
    # metrics that must be equal for a challenger and the champion to be compared at all (e.g. a credit model on
    # the RFM proxy target vs one on observed defaults; segments on different features)
    comparable_on: tuple[str, ...] = ()
    domain: str = "customers"  # the business domain, a tag on its assets
    # (the challenger's metrics) -> the key of its gate in models.<name>: fraud judges an anomaly score (no labels)
    # by other thresholds than a supervised model
    gate_key: Callable[[dict], str] = lambda metrics: "gate"
    # more checks on scores.<name> (assets/fraud.py: a jump in the flagged count)
    checks: tuple = ()
    # Dagster's step priority: below 0, the model's steps wait while another model's step is ready (fraud's own
    # branch starts before the customer features are built, and would otherwise interleave with their phases)
    priority: int = 0
    population: Population | None = None

    @property
    def per_customer(self) -> bool:
        """Scored customer by customer (one row per customer, customer and rank, or transaction): by customer
        shard on the iceberg backend. Not the manager and agency models, scored over whole books."""
        return any(c.name == "customer_id" for c in self.table.columns)

    @property
    def op_tags(self) -> dict[str, str]:
        return {PRIORITY: str(self.priority)} if self.priority else {}

    @property
    def model(self) -> type[Model]:
        module, _, name = self.model_class.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def score_columns(self) -> tuple[str, ...]:
        """The outputs whose distribution is watched for drift (first: the score), as scores.<name> names them."""
        return self.table.trend


def read_features(warehouse: Warehouse, columns: list[str] | None = None, table: str = "customer_features",
                  ids: tuple[str, ...] = ("customer_id", "snapshot_date")) -> pd.DataFrame:
    """features.<table> (customer_features by default), or only its `ids` and `columns`: a scoring asset reads what
    its model uses (the whole 85-column table costs seconds to load at 1M customers). A column the model was
    trained on that today's features lack is MissingInputs, never a column of NaN."""
    with warehouse.connect() as con:
        have = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' "
            "AND table_name = ?", [table]).fetchall()}
        if not have:  # e.g. `--job train_churn` on a new home: say what to run, not a catalog error
            raise dg.Failure(description=f"features.{table} is not built yet in {warehouse.home}: run "
                                         "the whole pipeline once (`scorehouse run`); the train and score jobs "
                                         "read the features it builds.")
        if columns is None:
            return frame(con.execute(f"SELECT * FROM features.{table}"))
        missing = [c for c in dict.fromkeys(columns) if c not in have]
        if missing:
            raise MissingInputs(missing)
        cols = [*ids, *(c for c in dict.fromkeys(columns) if c not in ids)]
        return frame(con.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM features.{table}"))


def require_label(con, label: str, key: str) -> None:
    """NotEnoughData naming the outcome labels the source does have, when the one a model reads is not there:
    a mistyped label must say so, not leave a model silently untrained."""
    have = [r[0] for r in con.execute("SELECT DISTINCT label FROM raw.labels ORDER BY 1").fetchall()]
    if label not in have:
        raise NotEnoughData(f"no '{label}' outcomes ({key}): the source's outcome labels are "
                            + (", ".join(f"'{h}'" for h in have) if have else "none (it maps no labels table)"))


def frame_hash(frame: pd.DataFrame) -> str:
    """A fingerprint of the training data, recorded with each version."""
    return str(pd.util.hash_pandas_object(frame, index=False).sum()) if len(frame) else "empty"


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else "not measured"


def _gate_actual(metrics: dict, thresholds: dict[str, tuple[str, float]], higher: dict[str, bool]) -> str:
    """The challenger against each threshold in words, e.g. `auc 0.8612 >= 0.8; brier 0.2412 not <= 0.2`."""
    parts = []
    for k, (op, bound) in thresholds.items():
        v = metrics.get(k)
        ok = isinstance(v, int | float) and (v >= bound if op == ">=" else v <= bound)
        parts.append(f"{k} {_num(v)} {op if ok else 'not ' + op} {bound:g}")
    parts += [f"{k} {_num(metrics.get(k))}" for k in higher if k not in thresholds]
    return "; ".join(parts) or "no metric gated"


def _gate_threshold(thresholds: dict[str, tuple[str, float]], higher: dict[str, bool], tolerance: float) -> str:
    parts = [f"{k} {op} {bound:g}" for k, (op, bound) in thresholds.items()]
    if higher:
        parts.append(f"not worse than the champion on {', '.join(higher)} (tolerance {tolerance:g})")
    return "; ".join(parts) or "none"


def _thresholds(gate: dict) -> dict[str, tuple[str, float]]:
    return {**{k: (">=", v) for k, v in (gate.get("min") or {}).items()},
            **{k: ("<=", v) for k, v in (gate.get("max") or {}).items()}}



def _scalars(metrics: dict) -> dict:
    """The plain-number metrics, rounded: what the UI shows of a registry entry."""
    return {k: rounded(v) for k, v in metrics.items() if isinstance(v, int | float)}


def score_as_published(spec: ModelSpec, context, warehouse: Warehouse, cfg: dict, entry: registry.Entry) -> Scored:
    """spec.score with the frame under the names of scores.<name> (ml/ keeps its own; ModelSpec.table maps them) and
    every float as DOUBLE: float32 from a model would make one probability FLOAT beside its DOUBLE siblings."""
    scored = spec.score(context, warehouse, cfg, entry)
    frame = scored.frame.rename(columns=spec.table.renames())
    floats = frame.select_dtypes("float32").columns
    scored.frame = frame.astype(dict.fromkeys(floats, "float64")) if len(floats) else frame
    return scored


def load_reference(spec: ModelSpec, path: Path) -> dict | None:
    """A version's reference profile; score columns saved under a model's own (older) names take the table's."""
    if not path.exists():
        return None
    reference = json.loads(path.read_text())
    renames = spec.table.renames()
    reference["scores"] = {renames.get(k, k): v for k, v in reference.get("scores", {}).items()}
    return reference


def reference_profile(spec: ModelSpec, scored: Scored, version: int, features: list[str] | None,
                      bands: drift.Bands, importance: dict[str, float] | None) -> dict:
    """A version's reference profile from one scoring of its population: input features and scores, and how much
    the model relies on each input (absent: equal weights)."""
    inputs = scored.inputs if scored.inputs is not None else pd.DataFrame()
    features = [f for f in features or [] if f in inputs.columns]
    return {"model": spec.name, "version": version, "snapshot_date": str(scored.snapshot_date),
            "rows": len(scored.frame), "features": drift.build_profile(inputs, features, bands),
            "scores": drift.build_profile(scored.frame, list(spec.score_columns), bands),
            **({"importance": {f: float(importance.get(f, 0.0)) for f in features}} if importance else {})}


def _scored_in_this_run(context, key: dg.AssetKey) -> bool:
    """Whether this run also materializes `key`."""
    keys = context.run.asset_selection  # None or empty: the whole job
    return key in (keys or context.job_def.asset_layer.executable_asset_keys)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)  # a reader never sees half a profile


GROUP_NOTE = "group aggregate: one value per agency or manager, moves with which customers a delivery holds"


def measure_drift(reference: dict, scored: Scored, bands: drift.Bands) -> pd.DataFrame:
    """Every score column (kind score) and input feature (kind feature) against the reference, worst first
    (quality.drift.measure): group aggregates and columns constant in the reference are measured but skipped.
    With the row counts of both populations."""
    inputs = scored.inputs if scored.inputs is not None else pd.DataFrame()
    rows = drift.measure(reference, scored.frame, inputs, bands, exclude=dict.fromkeys(GROUP_AGGREGATES, GROUP_NOTE))
    return rows.assign(reference_rows=reference.get("rows"), current_rows=len(scored.frame))


def _bar(share: float, width: int = 20) -> str:
    return "█" * round(share * width)


def _weight(w: float) -> str:
    return "" if pd.isna(w) else f"{w:.3f}"


def _drift_metadata(reference: dict, scored: Scored, rows: pd.DataFrame, columns: tuple[str, ...],
                    bands: drift.Bands) -> dict:
    counted = rows[rows["band"] != drift.SKIPPED]
    md = {"drift_band": drift.verdict(rows, bands).band,
          "drift_max_psi": rounded(float(counted["psi"].max())) if len(counted) else 0.0,
          "drift_top": frame_md([(r.feature, r.kind, f"{r.psi:.3f}", "" if pd.isna(r.ks) else f"{r.ks:.3f}",
                                  _weight(r.weight), r.band)
                                 for r in counted.head(bands.top_features).itertuples()],
                                ["column", "kind", "PSI", "KS", "weight", "band"])}
    if columns and columns[0] in reference["scores"]:
        col = columns[0]
        dist = drift.distribution_rows(reference["scores"][col], scored.frame[col])
        md[f"{col}_vs_reference"] = frame_md(
            [(b, f"{r:.1%} {_bar(r)}", f"{c:.1%} {_bar(c)}") for b, r, c in dist],
            [col, f"reference (v{reference['version']}, {reference['snapshot_date']})", "this run"])
    return md


def _number(v) -> float | None:
    return None if v is None or pd.isna(v) else float(f"{float(v):.6g}")


def _listed(r) -> dict:
    """One column as the check's metadata and the drift alert show it."""
    return {"column": r.feature, "kind": r.kind, "psi": round(r.psi, 4), "ks": None if pd.isna(r.ks) else round(r.ks, 4),
            "band": r.band, "weight": _number(getattr(r, "weight", None)),
            "reference_mean": _number(r.reference_mean), "current_mean": _number(r.current_mean)}


def _rows_count(rows: pd.DataFrame, column: str) -> int | None:
    values = rows[column].dropna() if column in rows else []
    return int(values.iloc[0]) if len(values) else None


def drift_result(rows: pd.DataFrame, bands: drift.Bands) -> dg.AssetCheckResult:
    """The drift check's verdict on one scoring run's monitoring.drift rows: the band quality.drift.verdict
    gives (led by the score, inputs weighted by importance), every score column, the drifted inputs that weigh
    most (weight x PSI), the skipped columns and why, and the row counts of both populations."""
    threshold = (f"PSI warn >= {bands.warn}, alert >= {bands.alert}; a model takes its score's band, raised "
                 "to warn at most by importance-weighted input drift")
    if not len(rows):
        return dg.AssetCheckResult(passed=True, metadata={
            "actual": "not measured in this run (the champion has no reference profile: retrain it)",
            "threshold": threshold})
    v = drift.verdict(rows, bands)
    skipped = rows[rows["band"] == drift.SKIPPED]
    counted = rows[rows["band"] != drift.SKIPPED]
    scores = counted[counted["kind"] == "score"]
    inputs = counted[counted["kind"] == "feature"]
    weight = inputs["weight"].fillna(0.0) if "weight" in inputs else pd.Series(1.0, index=inputs.index)
    drifted = inputs[inputs["band"] != "stable"].assign(_contribution=weight * inputs["psi"]).sort_values(
        "_contribution", ascending=False, kind="stable")
    listed = [_listed(r) for r in scores.itertuples()] + [_listed(r) for r in drifted.head(bands.top_features).itertuples()]
    return dg.AssetCheckResult(
        passed=v.band == "stable",
        severity=dg.AssetCheckSeverity.ERROR if v.band == "alert" else dg.AssetCheckSeverity.WARN,
        # numbers only where a plot over runs says something (PSI, how many drifted, rows scored); ids as text
        metadata={"actual": f"score PSI {v.score_psi:.3f} ({v.score_column or 'no score measured'}), "
                            f"importance-weighted input PSI {v.input_psi:.3f}",
                  "threshold": threshold, "band": v.band, "score_band": v.score_band, "input_band": v.input_band,
                  "score_psi": round(v.score_psi, 4), "input_psi": round(v.input_psi, 4),
                  "model_version": f"v{int(rows['model_version'].iloc[0])}",
                  "columns_drifted": int((counted["band"] != "stable").sum()), "inputs_drifted": len(drifted),
                  "current_rows": _rows_count(rows, "current_rows"),
                  "counts": dg.MetadataValue.json({
                      "reference_rows": _rows_count(rows, "reference_rows"),
                      "current_rows": _rows_count(rows, "current_rows"), "columns_measured": len(counted),
                      "inputs_measured": len(inputs), "columns_skipped": len(skipped)}),
                  "drifted": dg.MetadataValue.json(listed),
                  "skipped": dg.MetadataValue.json([{"column": r.feature, "kind": r.kind, "why": getattr(r, "note", None)}
                                                    for r in skipped.itertuples()]),
                  "top_drifted": frame_md([(d["column"], d["kind"], d["psi"], d["ks"], d["weight"] or "", d["band"],
                                            d["reference_mean"], d["current_mean"]) for d in listed],
                                          ["column", "kind", "PSI", "KS", "weight", "band", "reference mean",
                                           "current mean"])})


def training_keys(name: str) -> list[dg.AssetKey]:
    """The assets a job that retrains one model selects."""
    return [dg.AssetKey(["ml", f"{name}_challenger"]), dg.AssetKey(["ml", f"{name}_champion"])]


def _champion_on_holdout(context, warehouse: Warehouse, name: str, trained: Trained) -> None:
    """Score the current champion on the challenger's holdout, into metrics["champion_on_holdout"]. A champion
    that cannot be scored on today's data (its inputs are gone) is compared by its own training figures."""
    with warehouse.connect() as con:
        champion = registry.get(con, name, "champion")
    if champion is None or trained.rescore is None:
        return
    try:
        figures = trained.rescore(champion)
    except (KeyError, ValueError, OSError, NotEnoughData) as e:  # inputs gone, artifact unreadable
        context.log.warning(f"{name} champion v{champion.version} could not be scored on the challenger's holdout "
                            f"({type(e).__name__}: {e}); the gate compares with its figures from its own training")
        return
    trained.metrics["champion_on_holdout"] = {"version": champion.version, **figures}


def _record(warehouse: Warehouse, run_id: str, name: str, **fields) -> dict:
    with warehouse.connect() as con:
        return registry.record_run(con, run_id, name, **fields)


def model_assets(spec: ModelSpec) -> tuple[list, list]:
    """The challenger, champion and scores assets, and the gate check."""
    name = spec.name
    challenger_key, champion_key = training_keys(name)
    scores_key = dg.AssetKey(["scores", name])

    @dg.asset(key=challenger_key, group_name="training", kinds=set(spec.kinds), pool="warehouse",
              deps=list(spec.train_deps), description=spec.train_doc, op_tags=spec.op_tags)
    @holds_warehouse
    def challenger(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings):
        cfg = {**settings.get("models", name), "min_holdout_per_class": settings.get("models", "min_holdout_per_class")}
        run_id = context.run.run_id
        with warehouse.connect() as con:
            abandoned = registry.abandon_challengers(con, name, run_id)
        if abandoned:
            context.log.warning(f"{name}: earlier version(s) {abandoned} were never promoted (their run ended "
                                "first); marked abandoned")
        try:
            trained = spec.fit(context, warehouse, cfg)
        except NotEnoughData as e:  # an expected outcome, not a failure: said once, in the outcome
            row = _record(warehouse, run_id, name, training="not_trained", training_note=str(e))
            context.log.info(f"{name}: {row['outcome']}")
            yield dg.MaterializeResult(metadata={"outcome": row["outcome"], "trained": False})
            return
        _champion_on_holdout(context, warehouse, name, trained)
        # Artifacts and reference profile first, the registry row last: a run killed in between leaves no
        # version half made (the next run reuses the number and overwrites the folder).
        with warehouse.connect() as con:
            version = registry.next_version(con, name)
        folder = trained.model.save(warehouse.paths.models, version)
        entry = registry.Entry(name, version, "challenger", trained.metrics, str(folder), trained.snapshot_date,
                               trained.features)
        importance = trained.model.importance() or None
        for left in (REFERENCE, PENDING):  # a folder reused after a killed run
            (folder / left).unlink(missing_ok=True)
        if _scored_in_this_run(context, scores_key):
            # scores/<name> scores this same population with this version if its gate approves it: the profile
            # is built from that scoring (it would be the same numbers), not by scoring everyone twice
            _write_json(folder / PENDING, {"importance": importance})
            profiled = f"from its first scoring (scores/{name} in this run)"
        else:  # a training-only job: profiled now, on the population it was trained on
            scored = score_as_published(spec, context, warehouse, cfg, entry)
            _write_json(folder / REFERENCE, reference_profile(
                spec, scored, version, entry.features,
                drift.Bands.from_config(settings.get("monitoring", "drift")), importance))
            profiled = f"at training ({len(scored.frame):,} rows scored)"
        failpoints.reached("training")
        with warehouse.connect() as con:
            registry.register(con, name, version, snapshot_date=trained.snapshot_date, data_hash=trained.data_hash,
                              features=trained.features, params=cfg["params"], metrics=trained.metrics,
                              artifact_path=folder, run_id=run_id)
            registry.record_run(con, run_id, name, challenger_version=version)
        failpoints.reached("registered")
        yield dg.MaterializeResult(metadata={"version": f"v{version}", "trained": True, **_scalars(trained.metrics),
                                             "artifact": str(folder), "reference_profile": profiled,
                                             **trained.metadata})

    # Blocking, so that the champion waits for the verdict; a rejection is a WARN (the champion stays in service
    # and scoring goes on); only an error in the gate itself stops what follows.
    @dg.asset_check(asset=challenger_key, name=f"{name}_gate", blocking=True, pool="warehouse", op_tags=spec.op_tags,
                    description=f"The challenger trained in this run meets the thresholds in models.{name}.gate and "
                                "is not worse than the champion on the same holdout: approved, else rejected (WARN: "
                                "the champion stays).")
    @holds_warehouse
    def gate(context: dg.AssetCheckExecutionContext, warehouse: Warehouse, settings: Settings) -> dg.AssetCheckResult:
        run_id = context.run.run_id
        with warehouse.connect() as con:
            new = registry.get(con, name, "challenger", run_id=run_id)
            champion = registry.get(con, name, "champion")
            cfg = settings.get("models", name)[spec.gate_key(new.metrics) if new else "gate"]
            thresholds = _thresholds(cfg)
            higher = {k: v == "higher" for k, v in (cfg.get("not_worse_than_champion") or {}).items()}
            threshold_md = _gate_threshold(thresholds, higher, cfg["tolerance"])
            if new is None:  # nothing trained in this run (its outcome says why): nothing to judge
                row = registry.model_run(con, run_id, name) or {}
                return dg.AssetCheckResult(passed=True, metadata={
                    "actual": f"not judged: {row.get('training_note') or 'no challenger trained in this run'}",
                    "threshold": threshold_md})
            rival = champion
            if champion and any(new.metrics.get(k) != champion.metrics.get(k) for k in spec.comparable_on):
                rival = None  # different targets or inputs: the absolute thresholds alone decide
            # the champion re-scored on the challenger's holdout when it could be; else its own training figures
            on_holdout = new.metrics.get("champion_on_holdout") or {}
            same = on_holdout if rival and on_holdout.get("version") == rival.version else {}
            rival_metrics = same or (rival.metrics if rival else None)
            passed, why = registry.compare(new.metrics, rival_metrics, thresholds, higher, cfg["tolerance"])
            if passed:
                registry.approve(con, name, new.version, "passed its gate")
            else:
                registry.reject(con, name, new.version, "; ".join(why))
                registry.record_run(con, run_id, name, training="rejected", training_note="; ".join(why),
                                    champion_version=champion.version if champion else None)
        if passed:
            failpoints.reached("approved")
        gated = {k: rounded(float(new.metrics[k])) for k in sorted({*thresholds, *higher})
                 if isinstance(new.metrics.get(k), int | float)}
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={
            "actual": _gate_actual(new.metrics, thresholds, higher), "threshold": threshold_md,
            **gated,  # the gated metrics as numbers: plotted run after run
            "challenger_version": f"v{new.version}",
            "champion": (f"v{champion.version} " + ", ".join(f"{k} {_num(rival_metrics.get(k))}" for k in higher)
                         + (" on this holdout" if same else " from its own training")
                         if rival else f"v{champion.version}, not comparable (differs in {', '.join(spec.comparable_on)})")
                        if champion else "none yet",
            "failed": "; ".join(why) or "none",
        })

    @dg.asset(key=champion_key, group_name="training", kinds={"duckdb"}, pool="warehouse", deps=[challenger_key],
              op_tags=spec.op_tags,
              description=f"The {name} champion: the version its gate approved in this run is promoted (the previous "
                          "one retired); otherwise the champion stays. Only an approved version is ever promoted.")
    @holds_warehouse
    def champion(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        run_id = context.run.run_id
        with warehouse.connect() as con:
            approved = registry.get(con, name, "approved", run_id=run_id)
            previous = registry.get(con, name, "champion")
            if approved is not None:
                note = f"replaces v{previous.version}" if previous else "the first"
                registry.promote(con, name, approved.version, f"passed its gate; {note}")
                row = registry.record_run(con, run_id, name, training="promoted", training_note=note,
                                          challenger_version=approved.version, champion_version=approved.version)
                context.log.info(f"{name} v{approved.version} is the champion")
            else:
                row = registry.model_run(con, run_id, name) or {}
                fields = {"champion_version": previous.version if previous else None}
                if row.get("training") not in ("rejected", "not_trained"):
                    fields.update(training="kept", training_note="no challenger approved in this run")
                row = registry.record_run(con, run_id, name, **fields)
        current = approved or previous
        return dg.MaterializeResult(metadata={
            "outcome": row["outcome"], "version": f"v{current.version}" if current else "none",
            **(_scalars(current.metrics) if current else {}),
            "replaced": f"v{previous.version}" if approved and previous else "none"})

    @dg.asset(key=scores_key, group_name="scoring", kinds=set(spec.kinds), pool="warehouse",
              deps=[champion_key, *spec.score_deps], output_required=False, description=spec.score_doc,
              op_tags=spec.op_tags)
    @holds_warehouse
    def scores(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings):
        run_id = context.run.run_id
        with warehouse.connect() as con:
            entry = registry.get(con, name, "champion")
        if entry is None:
            row = _record(warehouse, run_id, name, scoring="no_champion", champion_version=None)
            context.log.info(f"{name}: {row['outcome']} (train one: job train_{name}); scores.{name} not written")
            return
        try:
            scored = score_as_published(spec, context, warehouse, settings.get("models", name), entry)
        except MissingInputs as e:  # this model cannot score today; the others still do
            _record(warehouse, run_id, name, scoring="failed", scoring_note=str(e), champion_version=entry.version)
            raise dg.Failure(description=f"{name} v{entry.version} not scored: {e}") from e
        ref_path = Path(entry.artifact_path) / REFERENCE
        bands = drift.Bands.from_config(settings.get("monitoring", "drift"))
        pending = ref_path.with_name(PENDING)
        if not ref_path.exists() and pending.exists():  # this version's first scoring is its reference
            if str(scored.snapshot_date)[:10] != str(entry.snapshot_date)[:10]:
                context.log.warning(f"{name} v{entry.version} was trained on {entry.snapshot_date} but first scored on "
                                    f"{scored.snapshot_date} (its training run ended before scoring): its drift "
                                    "reference is this scoring's population")
            reference = reference_profile(spec, scored, entry.version, entry.features, bands,
                                          json.loads(pending.read_text())["importance"])
            _write_json(ref_path, reference)
            pending.unlink()
        else:
            reference = load_reference(spec, ref_path)
        rows = measure_drift(reference, scored, bands) if reference else None
        with warehouse.connect() as con:
            n = write_scores(con, name, scored.frame, version=entry.version, snapshot_date=scored.snapshot_date,
                             run_id=context.run.run_id, order_by=scored.order_by, renamed=spec.table.renames())
            failpoints.reached("scoring")
            if rows is not None:
                write_drift(con, rows, run_id=context.run.run_id, model=name, version=entry.version,
                            snapshot_date=scored.snapshot_date)
            md = table_metadata(con, f"scores.{name}", docs=spec.table.docs())
            row = registry.record_run(con, run_id, name, scoring="scored", rows_scored=n,
                                      champion_version=entry.version)
        if rows is None:
            context.log.warning(f"{name} v{entry.version} has no reference profile ({ref_path.name}; trained before "
                                "drift monitoring): drift not measured until it is retrained")
        drift_md = _drift_metadata(reference, scored, rows, spec.score_columns, bands) if rows is not None else {}
        yield dg.MaterializeResult(metadata={**md, "outcome": row["outcome"], "model_version": f"v{entry.version}",
                                             "rows_scored": n, **scored.metadata, **drift_md})

    @dg.asset_check(asset=["scores", name], name=f"{name}_drift", pool="warehouse", op_tags=spec.op_tags,
                    description=f"Score and input drift of {name} in this run against its champion's reference "
                                "profile: the score's band leads (ERROR in the alert band); inputs, weighted by "
                                "the model's importance, raise it to WARN at most (docs/alerts.md).")
    @holds_warehouse
    def drift_check(context: dg.AssetCheckExecutionContext, warehouse: Warehouse,
                    settings: Settings) -> dg.AssetCheckResult:
        bands = drift.Bands.from_config(settings.get("monitoring", "drift"))
        with warehouse.connect() as con:
            rows = run_drift(con, name, context.run.run_id)
        return drift_result(rows, bands)

    return [challenger, champion, scores], [gate, drift_check, *spec.checks]
