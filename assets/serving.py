"""Publish: the serving file BI reads (`<home>/serving.duckdb`, swapped in atomically) and Parquet exports.

A graph asset so that it runs after every scoring step of the run even when some model was not scored (a source
without churn outcomes has no churn model; Dagster skips an asset whose upstream produced nothing, but a fan-in
input waits for all its sources and is skipped only when all of them were).
"""

import dagster as dg
import duckdb

from assets.metadata import frame_md, table_metadata
from orchestration.resources import Settings, Warehouse
from warehouse.serving import publish, versions

KEY = dg.AssetKey(["serving", "published"])


@dg.op(ins={"scored": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing), pool="warehouse",
       description="Copy the scored tables, views and manifest into a new serving file and swap it in.")
def publish_serving(context: dg.OpExecutionContext, warehouse: Warehouse, settings: Settings) -> None:
    cfg = settings.get("serving")
    with warehouse.connect() as con:
        out = publish(con, warehouse.paths, run_id=context.run.run_id, shareable=cfg["shareable"],
                      keep_previous=cfg["keep_previous"], exports=cfg["exports"])
    kept = versions(warehouse.paths)
    customers = next((n for t, _, n in out.tables if t == "bi.customer_scores"), None)
    context.log.info(f"serving.duckdb now {out.version.name}: {len(out.tables)} tables and views; "
                     f"{len(kept) - 1} earlier version(s) kept for `scorehouse rollback`")
    joined = {}
    if customers is not None:  # what BI sees first: the schema and first rows of the joined table
        with duckdb.connect(str(warehouse.paths.serving), read_only=True) as srv:
            joined = table_metadata(srv, "bi.customer_scores")
        joined["dagster/table_name"] = dg.MetadataValue.text("serving.bi.customer_scores")
    context.add_output_metadata({
        **joined,
        "serving_file": dg.MetadataValue.path(str(warehouse.paths.serving)),
        "version": out.version.name,
        "manifest": frame_md([(t, k, f"{n:,}") for t, k, n in out.tables], ["table_name", "kind", "rows"]),
        "earlier_versions_kept": len(kept) - 1,
        "pruned": ", ".join(p.name for p in out.pruned) or "none",
        "parquet_exports": frame_md([(str(p.relative_to(warehouse.paths.root)),) for p in out.exports], ["file"]),
    })


def build_publish(score_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    ins = {k.path[-1]: dg.AssetIn(key=k, dagster_type=dg.Nothing) for k in score_keys}

    @dg.graph_asset(key=KEY, group_name="serving", kinds={"duckdb", "parquet"}, ins=ins)
    def published(**scored):
        """serving.duckdb for BI: every scored table (shareable columns only: `serving.shareable`), customer,
        agency and product dimensions, the model registry and drift, one joined row per customer
        (`bi.customer_scores`), the views `bi.model_summary`, `bi.drift_summary`, and a `manifest` of what each
        holds (docs/bi.md). Built beside the live file and swapped in by rename; the previous
        `serving.keep_previous` files stay for `scorehouse rollback`. Also Parquet under
        exports/<model>/snapshot_date=<date>/."""
        return publish_serving(scored=list(scored.values()))

    return published
