"""The iceberg backend's assets (docs/scale-out.md): feature tables and scores built shard by shard in the lake.

`lake/features` and `lake/scores` are one asset each per snapshot date (daily partitions: a past snapshot is
backfilled from the UI), each computed by a graph: a step that fixes what every shard works with, one step per
customer shard (Dagster's dynamic mapping: the multiprocess executor runs them side by side, a failed shard is
re-executed alone from the UI), and a step over all shards (the population's columns; the scores' are written
back into each shard's part by a step per shard again). The work is
warehouse/shard_features.py's and warehouse/shard_scores.py's, with the models' own scoring; this is the glue.
"""

import resource
import tempfile
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.lifecycle import ModelSpec, score_as_published, training_keys
from assets.metadata import frame_md
from assets.resources import Settings, Source, Warehouse, WarehouseReader
from ml import registry
from warehouse import features as F
from warehouse import fraud as W
from warehouse import shard_features as S
from warehouse import shard_scores as SS
from warehouse.contract import TABLES
from warehouse.db import Home
from warehouse.lake import SHARD, Lake, LakeLocation

GROUP = "lake"
KEY = dg.AssetKey(["lake", "features"])
SCORES_KEY = dg.AssetKey(["lake", "scores"])
PUBLISHED_KEY = dg.AssetKey(["lake", "published"])
JOB = "lake"


class LakeResource(dg.ConfigurableResource):
    """The Iceberg catalog (its URL from SCOREHOUSE_CATALOG: it may hold a password) and the warehouse location
    of settings `warehouse.lake`."""

    catalog: str
    location: str

    def open(self) -> Lake:
        return Lake(LakeLocation(self.catalog, self.location))


def _peak_rss_gb() -> float:
    """This step process's peak resident memory: what one shard costs a worker (benchmarks/lake_run.py)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _snapshot(context: dg.OpExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def build_lake(shards: int, first_snapshot: str, specs: list[ModelSpec], executor: dg.ExecutorDefinition
               ) -> tuple[list[dg.AssetsDefinition], object]:
    """The `lake/features`, `lake/scores` and `lake/published` assets for `shards` customer shards, and job `lake`
    running them on `executor` (settings `execution:`; the multiprocess executor by default)."""
    partitions = dg.DailyPartitionsDefinition(start_date=str(first_snapshot), end_offset=1)

    @dg.op(ins={"delivered": dg.In(dg.Nothing)}, out=dg.DynamicOut(), pool="warehouse")
    def lake_plan(context: dg.OpExecutionContext, warehouse: Warehouse, lake: LakeResource):
        """The raw tables that are not per customer into the lake, the fingerprints of the others (each shard's
        step exports its part of them); the pivots and customer attributes every shard builds with."""
        snap, store = _snapshot(context), lake.open()
        with warehouse.connect() as con:
            raw, written = S.export_shared(con, store, shards)
            plan = S.plan(con, snap)
        exported = [t for t, (_, new) in written.items() if new]
        context.log.info("shared raw tables into the lake: " + (", ".join(exported) or "none")
                         + (f"; unchanged since the last export: {', '.join(sorted(set(written) - set(exported)))}"
                            if len(exported) < len(written) else ""))
        for k in range(shards):
            yield dg.DynamicOutput((k, plan, raw), mapping_key=f"shard_{k}")

    @dg.op
    def lake_shard(context: dg.OpExecutionContext, work: tuple, warehouse_reader: WarehouseReader,
                   lake: LakeResource) -> dg.Output:
        """One shard's part of the per-customer raw tables into the lake (unless the lake holds it as written from
        the same rows), then its feature tables, written as its part of the snapshot."""
        shard, plan, raw = work
        store = lake.open()
        with warehouse_reader.reading() as con:
            exported = S.export_shard(con, store, shard, raw)
        counts = S.build_shard(store, shard, plan)
        context.log.info(f"shard {shard}: raw parts written: "
                         + (", ".join(f"{t} {n:,}" for t, n in exported.items()) or "none (unchanged)")
                         + f"; features of {counts['population']:,} customers")
        rss = _peak_rss_gb()
        return dg.Output({"shard": shard, **counts, "peak_rss_gb": rss}, metadata={"peak_rss_gb": rss})

    @dg.op
    def lake_population(context: dg.OpExecutionContext, parts: list, lake: LakeResource) -> dg.Output:
        """The population's columns over every shard; the asset's metadata."""
        snap = _snapshot(context)
        customers = S.population_step(lake.open(), shards, snap)
        rows = sorted(parts, key=lambda p: p["shard"])
        preview = "| shard | customers | labels | peak RSS of its step |\n|---:|---:|---:|---:|\n" + "".join(
            f"| {p['shard']} | {p['population']:,} | {p['labels']:,} | {p['peak_rss_gb']:.2f} GB |\n" for p in rows)
        return dg.Output(customers, metadata={
            "dagster/row_count": customers, "snapshot_date": str(snap), "shards": shards,
            "lake": lake.location, "customers per shard": dg.MetadataValue.md(preview)})

    raw = {t: dg.AssetIn(key=dg.AssetKey(["raw", t]), dagster_type=dg.Nothing) for t in TABLES}

    @dg.graph_asset(key=KEY, group_name=GROUP, kinds={"iceberg", "duckdb"}, ins=raw,
                    partitions_def=partitions,
                    description="The feature tables of one snapshot date in the lake (features.*), built shard by "
                                "shard: the raw tables into the lake and the plan, a step per customer shard, the "
                                "population's columns over all shards.")
    def lake_features(customers, products, accounts, transactions, loans, managers, agencies, labels, targets):
        delivered = [customers, products, accounts, transactions, loans, managers, agencies, labels, targets]
        return lake_population(lake_plan(delivered=delivered).map(lake_shard).collect())

    lake_scores = _scores_asset(shards, partitions, [s for s in specs if s.per_customer])
    published = _published_asset(partitions, specs)
    job = dg.define_asset_job(JOB, selection=[KEY, SCORES_KEY, PUBLISHED_KEY],
                              executor_def=executor,
                              description="Features and scores in the lake for one snapshot date, shard by shard, "
                              "with the registry's champions, and the serving file published from them "
                              "(docs/scale-out.md). On the iceberg backend `scorehouse run` runs it after the "
                              "run on the DuckDB file (the ingest, and training on a sample of the customers); "
                              "`scorehouse run --job lake` alone.")
    return [lake_features, lake_scores, published], job


def _scores_asset(shards: int, partitions: dg.PartitionsDefinition, specs: list[ModelSpec]) -> dg.AssetsDefinition:
    """`lake/scores`: every customer model's champion scores each shard into scores.<model> in the lake."""
    by_name = {s.name: s for s in specs}

    @dg.op(ins={"ready": dg.In(dg.Nothing)}, out=dg.DynamicOut(), pool="warehouse")
    def lake_score_plan(context: dg.OpExecutionContext, warehouse: Warehouse, settings: Settings, source: Source,
                        lake: LakeResource):
        """The champions every shard scores with, the fraud window of the whole bank, the lake snapshots read."""
        snap, cfg = _snapshot(context), source.config()
        with warehouse.connect() as con:
            champions = {n: e for n in by_name if (e := registry.get(con, n, "champion")) is not None}
            if missing := sorted(set(by_name) - set(champions)):
                context.log.info(f"no champion yet (not scored in the lake): {', '.join(missing)}")
            current = F.resolve_snapshot(con, cfg.snapshot_date, cfg.holdout_days)
            fraud = settings.get("models", "fraud")
            if snap < current and champions.pop("fraud", None) is not None:
                # fraud scores the transactions of the last days delivered, not a snapshot's customers
                context.log.info(f"{snap} is a past snapshot date (the data's is {current}): fraud, which scores "
                                 "the latest transactions delivered, is scored only for the current one")
            win = W.window(con, fraud["score_days"], fraud["train_days"]) if "fraud" in champions else None
        names = [*(f"features.{t}" for t in S.FEATURE_TABLES), S.SCORES, S.COLUMNS,
                 *(n for c in TABLES.values() for n in (f"raw.{c.name}", f"raw.{c.name}_history"))]
        pins = {n: p for n, p in lake.open().pin(names).items() if p is not None}
        plan = {"champions": champions, "fraud_from": win.score_from if win else None, "pins": pins,
                "scored_at": datetime.now(UTC).replace(tzinfo=None)}
        for k in range(shards):
            yield dg.DynamicOutput((k, plan), mapping_key=f"shard_{k}")

    @dg.op
    def lake_score_shard(context: dg.OpExecutionContext, work: tuple, lake: LakeResource,
                         settings: Settings) -> dg.Output:
        """One shard's scores of every champion, written to the lake as its part of the snapshot."""
        shard, plan = work
        snap, store, written = _snapshot(context), lake.open(), {}
        with tempfile.TemporaryDirectory(prefix=f"scorehouse-shard{shard}-") as tmp:
            SS.shard_warehouse(Home.resolve(tmp).warehouse, store, shard, snap, plan["pins"])
            local = Warehouse(home=tmp)
            if plan["fraud_from"] is not None:
                with local.connect() as con:
                    W.build_transaction_features(con, plan["fraud_from"],
                                                 settings.get("models", "fraud")["history_days"])
            for name, entry in plan["champions"].items():
                scored = score_as_published(by_name[name], context, local, settings.get("models", name), entry)
                written[name] = SS.write_scores(
                    store, name, scored.frame, shard=shard, snap=snap, scored_date=scored.snapshot_date,
                    version=entry.version, run_id=context.run.run_id, scored_at=plan["scored_at"])
        context.log.info(f"shard {shard}: " + (", ".join(f"{n} {r:,}" for n, r in written.items()) or "no champion"))
        rss = _peak_rss_gb()
        return dg.Output({"shard": shard, "rows": written, "champions": plan["champions"], "peak_rss_gb": rss},
                         metadata={"peak_rss_gb": rss, **{f"rows_{n}": r for n, r in written.items()}})

    @dg.op(out=dg.DynamicOut())
    def lake_score_population(context: dg.OpExecutionContext, parts: list, lake: LakeResource):
        """The columns decided over every shard's rows (ModelSpec.population), from a narrow read of them all; each
        shard's slice goes to a step of its own that writes it into the shard's part."""
        snap, store = _snapshot(context), lake.open()
        rows = sorted(parts, key=lambda p: p["shard"])
        champions = rows[0]["champions"] if rows else {}
        fixed = {}
        for name, entry in champions.items():
            pop = by_name[name].population
            if pop is not None:
                model = by_name[name].model.load(entry.artifact_path)
                fixed[name] = SS.population_columns(store, name, snap, key=pop.key, order=pop.order, inputs=pop.inputs,
                                                    columns=pop.columns, compute=lambda f, p=pop, m=model: p.compute(f, m))
        for part in rows:
            mine = {n: f[f[SHARD] == part["shard"]] for n, f in fixed.items() if f is not None}
            yield dg.DynamicOutput((part, mine), mapping_key=f"shard_{part['shard']}")

    @dg.op
    def lake_score_apply(context: dg.OpExecutionContext, work: tuple, lake: LakeResource) -> dict:
        """One shard's part of each such table rewritten with its slice of the population's columns."""
        part, mine = work
        store, snap = lake.open(), _snapshot(context)
        for name, fixed in mine.items():
            SS.apply_population(store, name, part["shard"], snap, fixed, key=by_name[name].population.key)
        return part

    @dg.op
    def lake_score_summary(context: dg.OpExecutionContext, parts: list) -> dg.Output:
        """The asset's metadata: rows per model and shard, the champions that scored them."""
        snap, rows = _snapshot(context), sorted(parts, key=lambda p: p["shard"])
        champions = rows[0]["champions"] if rows else {}
        names = sorted(champions)
        preview = ("| shard | " + " | ".join(names) + " | peak RSS of its step |\n|---:|" + "---:|" * (len(names) + 1)
                   + "\n") + "".join(f"| {p['shard']} | " + " | ".join(f"{p['rows'].get(n, 0):,}" for n in names)
                             + f" | {p['peak_rss_gb']:.2f} GB |\n" for p in rows)
        return dg.Output(sum(sum(p["rows"].values()) for p in rows), metadata={
            "snapshot_date": str(snap), "shards": shards,
            "models": ", ".join(f"{n} v{e.version}" for n, e in sorted(champions.items())) or "none (no champion yet)",
            "rows per shard": dg.MetadataValue.md(preview)})

    ins = {"features": dg.AssetIn(key=KEY, dagster_type=dg.Nothing),
           **{s.name: dg.AssetIn(key=training_keys(s.name)[1], dagster_type=dg.Nothing) for s in specs}}

    # markdown in the UI: placeholders in backticks
    @dg.graph_asset(key=SCORES_KEY, group_name=GROUP, kinds={"iceberg", "duckdb"}, ins=ins, partitions_def=partitions,
                    description="Every customer model's scores of one snapshot date in the lake (`scores.MODEL`), "
                                "from the registry's champions, shard by shard, with the columns ranked or tiered "
                                "over the whole bank computed after the shards.")
    def lake_scores(**upstream):
        scored = lake_score_plan(ready=list(upstream.values())).map(lake_score_shard).collect()
        return lake_score_summary(lake_score_population(scored).map(lake_score_apply).collect())

    return lake_scores


def _published_asset(partitions: dg.PartitionsDefinition, specs: list[ModelSpec]) -> dg.AssetsDefinition:
    """`lake/published`: serving.duckdb from one pinned snapshot of the lake's scores."""
    lake_models = [s.name for s in specs if s.per_customer]

    @dg.asset(key=PUBLISHED_KEY, group_name=GROUP, kinds={"iceberg", "duckdb"}, deps=[SCORES_KEY], pool="warehouse",
              partitions_def=partitions)
    def lake_published(context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings,
                       lake: LakeResource) -> dg.MaterializeResult:
        """serving.duckdb for BI, as the embedded `serving/published` builds it, with each customer model's scores
        read from the lake at one pinned snapshot of its table (taken after every shard has committed: a reader
        never sees a half-written shard): the current ones of the newest snapshot date (a backfilled past date
        joins the history, it never replaces them), their history from every snapshot date the lake holds; the
        manager and agency scores, registry, drift and dimensions from the DuckDB file."""
        snap, store, cfg = _snapshot(context), lake.open(), settings.get("serving")
        pins = store.pin([SS.table(m) for m in lake_models])
        paths = warehouse.paths
        with warehouse.connect() as con:
            out, counts, dates = SS.publish_from_lake(
                con, paths, store, lake_models, pins, context.run.run_id, shareable=cfg["shareable"],
                models=[s.table for s in specs], keep_previous=cfg["keep_previous"], exports=cfg["exports"],
                history_snapshots=cfg["history_snapshots"])
        served = sorted({str(d) for d in dates.values() if d is not None})
        newer = [d for d in dates.values() if d is not None and d > snap]
        context.log.info(f"serving.duckdb now {out.version.name}, from the lake's snapshot ids {pins}"
                         + (f"; {snap} is a past snapshot date: its scores join the history, the current ones stay "
                            f"those of {max(newer)}" if newer else ""))
        return dg.MaterializeResult(metadata={
            "serving_file": dg.MetadataValue.path(str(paths.serving)), "version": out.version.name,
            "snapshot_date": str(snap), "current_scores_as_of": ", ".join(served) or "none",
            "lake_snapshots": dg.MetadataValue.json({k: v for k, v in pins.items() if v is not None}),
            "from_lake": frame_md([(t, f"{n:,}") for t, n in counts.items()], ["table", "rows"]),
            "manifest": frame_md([(t, k, f"{n:,}") for t, k, n in out.tables], ["table_name", "kind", "rows"])})

    return lake_published


def build_maintenance(keep_days: int, grace_hours: float, keep_feature_days: int | None = None) -> dg.JobDefinition:
    """Job `lake_maintenance`: the feature tables' snapshot dates older than `keep_feature_days` before the newest
    deleted (None: kept), then every lake table's snapshots older than `keep_days` expired, and the files no
    snapshot left refers to (older than `grace_hours`) deleted (Lake.expire)."""

    @dg.op(description="Delete the feature tables' snapshot dates older than warehouse.lake.keep_feature_dates_days "
                       "before the newest (scores and their history are kept).")
    def drop_old_feature_dates(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output:
        if not keep_feature_days:
            context.log.info("every snapshot date kept (keep_feature_dates_days: null)")
            return dg.Output(0, metadata={"keep_feature_dates_days": "null (every date kept)"})
        store, rows = lake.open(), []
        for name in store.tables():
            newest = store.latest_snapshot(name) if name.startswith("features.") else None
            if newest is not None:
                cutoff = newest - timedelta(days=keep_feature_days)
                rows.append((name, str(cutoff), store.drop_snapshots_before(name, cutoff)))
        deleted = sum(d for _, _, d in rows)
        context.log.info(f"{deleted:,} feature rows of old snapshot dates deleted")
        return dg.Output(deleted, metadata={
            "keep_feature_dates_days": keep_feature_days,
            "tables": frame_md([(n, c, f"{d:,}") for n, c, d in rows], ["table", "dates before", "rows deleted"])})

    @dg.op(ins={"after": dg.In(dg.Nothing)},
           description="Expire old snapshots and delete unreferenced files, table by table.")
    def expire_lake_snapshots(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output:
        store = lake.open()
        older_than = datetime.now(UTC) - timedelta(days=keep_days)
        rows = [(name, *store.expire(name, older_than, timedelta(hours=grace_hours))) for name in store.tables()]
        context.log.info(f"{sum(r[1] for r in rows):,} snapshots expired, {sum(r[2] for r in rows):,} files deleted "
                         f"over {len(rows)} tables")
        return dg.Output(len(rows), metadata={
            "snapshots_expired": sum(r[1] for r in rows), "files_deleted": sum(r[2] for r in rows),
            "older_than": older_than.isoformat(timespec="seconds"),
            "tables": frame_md([(n, f"{e:,}", f"{d:,}") for n, e, d in rows], ["table", "snapshots expired",
                                                                              "files deleted"])})

    @dg.job(name="lake_maintenance", executor_def=dg.in_process_executor,
            description="The lake's housekeeping (docs/scale-out.md): feature snapshot dates older than "
                        "warehouse.lake.keep_feature_dates_days deleted, snapshots older than "
                        "warehouse.lake.keep_snapshots_days expired, files no snapshot refers to deleted.")
    def lake_maintenance():
        expire_lake_snapshots(after=drop_old_feature_dates())

    return lake_maintenance
