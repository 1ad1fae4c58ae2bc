"""Publish: the serving file BI reads (`<home>/serving.duckdb`, swapped in atomically) and Parquet exports; and the
run's report.

Graph assets so that they run after every scoring step of the run even when some model was not scored (a source
without churn outcomes has no churn model; Dagster skips an asset whose upstream produced nothing, but a fan-in
input waits for all its sources and is skipped only when all of them were).
"""

import dagster as dg
import duckdb

from assets.lifecycle import ModelSpec
from assets.metadata import frame_md, table_metadata
from assets.resources import Settings, Warehouse
from assets.settings import bi_publisher
from quality.drift import Bands
from quality.run_report import RunReport, build_report
from warehouse.serving import publish, published_at, versions

KEY = dg.AssetKey(["serving", "published"])
REPORT = dg.AssetKey(["serving", "run_report"])


def build_publish(specs: list[ModelSpec]) -> dg.AssetsDefinition:
    tables = [s.table for s in specs]
    score_keys = [dg.AssetKey(["scores", s.name]) for s in specs]

    @dg.op(ins={"scored": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing), pool="warehouse",
           description="Copy the scored tables, views and manifest into a new serving file and swap it in.")
    def publish_serving(context: dg.OpExecutionContext, warehouse: Warehouse, settings: Settings) -> None:
        cfg = settings.get("serving")
        with warehouse.connect() as con:
            out = publish(con, warehouse.paths, run_id=context.run.run_id, shareable=cfg["shareable"], models=tables,
                          keep_previous=cfg["keep_previous"], exports=cfg["exports"],
                          history_snapshots=cfg["history_snapshots"])
        kept = versions(warehouse.paths)
        customers = next((n for t, _, n in out.tables if t == "bi.customer_scores"), None)
        context.log.info(f"serving.duckdb now {out.version.name}: {len(out.tables)} tables and views; "
                         f"{len(kept) - 1} earlier version(s) kept for `scorehouse rollback`")
        joined = {}
        if customers is not None:  # what BI sees first: the schema and first rows of the joined table
            with duckdb.connect(str(warehouse.paths.serving), read_only=True) as srv:
                joined = table_metadata(srv, "bi.customer_scores", docs=_comments(srv, "bi", "customer_scores"))
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

    ins = {k.path[-1]: dg.AssetIn(key=k, dagster_type=dg.Nothing) for k in score_keys}

    # The description is markdown: placeholders in backticks, or the UI takes `<model>` for an HTML tag.
    @dg.graph_asset(key=KEY, group_name="serving", kinds={"duckdb", "parquet"}, ins=ins)
    def published(**scored):
        """serving.duckdb for BI: every scored table (shareable columns only: `serving.shareable`) and its last
        snapshots, customer, agency and product dimensions, the model registry and drift, one joined row per
        customer (`bi.customer_scores`), the views `bi.model_summary`, `bi.drift_summary`, `bi.score_trend`, and a
        `manifest` of what each holds (docs/bi.md); every column has a comment. Built beside the live file and
        swapped in by rename; the previous `serving.keep_previous` files stay for `scorehouse rollback`. Also
        Parquet under `exports/MODEL/snapshot_date=DATE/`."""
        return publish_serving(scored=list(scored.values()))

    return published


def _comments(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    return {c: d for c, d in con.execute("SELECT column_name, comment FROM duckdb_columns() WHERE schema_name = ? "
                                         "AND table_name = ?", [schema, table]).fetchall() if d}


def report_metadata(report: RunReport) -> dict:
    md = {k: (dg.MetadataValue.float(v) if isinstance(v, float) else v) for k, v in report.metadata().items()}
    md["report"] = dg.MetadataValue.md("```\n" + "\n".join(report.lines()) + "\n```")
    return md


def build_run_report(specs: list[ModelSpec], published: bool = True) -> dg.AssetsDefinition:
    """After publishing (`published`: the graph has serving/published) and every model's training and scoring
    that the run holds (whichever job)."""
    upstream = [*([KEY] if published else []), *(dg.AssetKey(["ml", f"{s.name}_champion"]) for s in specs),
                *(dg.AssetKey(["scores", s.name]) for s in specs)]

    @dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing), pool="warehouse",
           description="Report what became of each model in this run; tag the run with it.")
    def report_run(context: dg.OpExecutionContext, warehouse: Warehouse, settings: Settings) -> None:
        run_id = context.run.run_id
        bands = Bands.from_config(settings.get("monitoring", "drift"))
        with warehouse.connect() as con:
            report = build_report(con, run_id, bands, published_at(warehouse.paths.serving, run_id),
                                  publisher=bi_publisher(settings.get()))
        # on the run itself, so that the Runs list shows it whoever launched the run (CLI, schedule, UI)
        context.instance.add_run_tags(run_id, report.tags())
        for line in report.lines():
            context.log.info(line)
        context.add_output_metadata(report_metadata(report))

    ins = {"_".join(k.path): dg.AssetIn(key=k, dagster_type=dg.Nothing) for k in upstream}

    @dg.graph_asset(key=REPORT, group_name="serving", kinds={"duckdb"}, ins=ins)
    def run_report(**after):
        """What became of each model in this run: outcome (promoted, kept, rejected, not trained, scored), champion
        version, rows scored, score PSI and worst input PSI, the drift check's band, and whether and when the run
        published. Numbers as numbers: the Plots tab follows them run after run. The run gets tags
        `scorehouse/drift`, `scorehouse/gates`, `scorehouse/scored`, `scorehouse/published`."""
        return report_run(after=list(after.values()))

    return run_report
