"""The iceberg backend's assets (docs/scale-out.md): the feature tables built shard by shard in the lake.

`lake/features` is one asset per snapshot date (daily partitions: a past snapshot is backfilled from the UI),
computed by a graph: a step that puts the ingest's raw tables into the lake and fixes what every shard builds
with, one step per customer shard (Dagster's dynamic mapping: the multiprocess executor runs them side by side,
a failed shard is re-executed alone from the UI), and the step that computes the population's columns over all
shards. The work is warehouse/shard_features.py's; this module is the glue.
"""

from datetime import date

import dagster as dg

from assets.resources import Warehouse
from warehouse import shard_features as S
from warehouse.contract import TABLES
from warehouse.lake import Lake, LakeLocation

GROUP = "lake"
KEY = dg.AssetKey(["lake", "features"])
JOB = "lake_features"


class LakeResource(dg.ConfigurableResource):
    """The Iceberg catalog (its URL from SCOREHOUSE_CATALOG: it may hold a password) and the warehouse location
    of settings `warehouse.lake`."""

    catalog: str
    location: str

    def open(self) -> Lake:
        return Lake(LakeLocation(self.catalog, self.location))


def _snapshot(context: dg.OpExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def build_lake(shards: int, max_concurrent: int, first_snapshot: str) -> tuple[dg.AssetsDefinition, object]:
    """The `lake/features` asset for `shards` customer shards, and job `lake_features` running it on the
    multiprocess executor, `max_concurrent` steps at a time."""

    @dg.op(ins={"delivered": dg.In(dg.Nothing)}, out=dg.DynamicOut(), pool="warehouse")
    def lake_plan(context: dg.OpExecutionContext, warehouse: Warehouse, lake: LakeResource):
        """The raw tables into the lake, by shard; the pivots and customer attributes every shard builds with."""
        snap, store = _snapshot(context), lake.open()
        with warehouse.connect() as con:
            written = S.export_raw(con, store, shards)
            plan = S.plan(con, snap)
        context.log.info(f"raw tables into the lake ({shards} shards): "
                         + ", ".join(f"{t} {n:,}" for t, n in written.items()))
        for k in range(shards):
            yield dg.DynamicOutput((k, plan), mapping_key=f"shard_{k}")

    @dg.op
    def lake_shard(context: dg.OpExecutionContext, work: tuple, lake: LakeResource) -> dict:
        """One shard's feature tables, written to the lake as its part of the snapshot."""
        shard, plan = work
        counts = S.build_shard(lake.open(), shard, plan)
        context.log.info(f"shard {shard}: {counts['population']:,} customers")
        return {"shard": shard, **counts}

    @dg.op
    def lake_population(context: dg.OpExecutionContext, parts: list, lake: LakeResource) -> dg.Output:
        """The population's columns over every shard; the asset's metadata."""
        snap = _snapshot(context)
        customers = S.population_step(lake.open(), shards, snap)
        rows = sorted(parts, key=lambda p: p["shard"])
        preview = "| shard | customers | labels |\n|---:|---:|---:|\n" + "".join(
            f"| {p['shard']} | {p['population']:,} | {p['labels']:,} |\n" for p in rows)
        return dg.Output(customers, metadata={
            "dagster/row_count": customers, "snapshot_date": str(snap), "shards": shards,
            "lake": lake.location, "customers per shard": dg.MetadataValue.md(preview)})

    raw = {t: dg.AssetIn(key=dg.AssetKey(["raw", t]), dagster_type=dg.Nothing) for t in TABLES}

    @dg.graph_asset(key=KEY, group_name=GROUP, kinds={"iceberg", "duckdb"}, ins=raw,
                    partitions_def=dg.DailyPartitionsDefinition(start_date=str(first_snapshot), end_offset=1),
                    description=__doc__.split("\n\n")[1])
    def lake_features(customers, products, accounts, transactions, loans, managers, agencies, labels, targets):
        delivered = [customers, products, accounts, transactions, loans, managers, agencies, labels, targets]
        return lake_population(lake_plan(delivered=delivered).map(lake_shard).collect())

    job = dg.define_asset_job(JOB, selection=[KEY], partitions_def=lake_features.partitions_def,
                              executor_def=dg.multiprocess_executor.configured({"max_concurrent": max_concurrent}),
                              description="The feature tables in the lake for one snapshot date, shard by shard "
                              "(docs/scale-out.md). Run after the ingest: `scorehouse run --job lake_features`.")
    return lake_features, job
