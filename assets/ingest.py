"""Ingest: one asset per raw table. Reads the landing files of the configured source, loads good rows into
raw.<table>, rejected rows into quarantine.<table>, and reports the reconciliation."""


import dagster as dg

from assets.metadata import frame_md, table_metadata
from orchestration.resources import Settings, Source, Warehouse
from warehouse.contract import TABLES
from warehouse.ingest import TableReport, ingest_table

GROUP = "ingest"
# Facts that reference customers are loaded after them, so orphans can be quarantined.
AFTER_CUSTOMERS = {name for name, t in TABLES.items() if t.references_customers}


def _report_metadata(con, report: TableReport, provided: bool) -> dict:
    md = table_metadata(con, f"raw.{report.table}", show=TABLES[report.table].previewable)
    md.update({
        "rows_read": report.total("rows_read"),
        "rows_loaded": report.total("rows_loaded"),
        "rows_quarantined": report.total("rows_quarantined"),
        "rows_in_quarantine_table": report.rows_in_quarantine,
        "files": frame_md(
            [(f.path, f.status, f"{f.rows_read:,}", f"{f.rows_loaded:,}", f"{f.rows_quarantined:,}") for f in report.files],
            ["file", "status", "read", "loaded", "quarantined"],
        ) if provided else dg.MetadataValue.md("_this source has no file for this table_"),
    })
    reasons = con.execute(
        f"""SELECT regexp_replace(reason, '''[^'']*''', '''…''', 'g') AS kind, count(*) n,
                   min(_source_file || ' row ' || _source_row) AS example
            FROM quarantine.{report.table} GROUP BY 1 ORDER BY n DESC LIMIT 8"""
    ).fetchall()
    if reasons:
        md["quarantine_reasons"] = frame_md(reasons, ["reason", "rows", "first example"])
    return md


def build_raw_asset(table: str) -> dg.AssetsDefinition:
    contract = TABLES[table]
    key = dg.AssetKey(["raw", table])

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"duckdb", "csv", "excel"},
        pool="warehouse",
        deps=[dg.AssetKey(["raw", "customers"])] if table in AFTER_CUSTOMERS else [],
        description=f"raw.{table}: {contract.description} Rejected rows go to quarantine.{table} with the reason.",
        check_specs=[
            dg.AssetCheckSpec("rows_reconcile", asset=key,
                              description="rows read = rows loaded + rows quarantined, for every file"),
            dg.AssetCheckSpec("quarantine_share", asset=key,
                              description="share of this run's rows rejected stays under ingest.max_quarantine_share"),
        ],
    )
    def _raw(context: dg.AssetExecutionContext, warehouse: Warehouse, source: Source, settings: Settings):
        cfg = source.config()
        provided = bool(cfg.feeds.get(table))
        with warehouse.connect() as con:
            report = ingest_table(con, cfg, table, source.landing_path() if provided else None,
                                  run_id=context.run.run_id, log=context.log.info)
            md = _report_metadata(con, report, provided)
        if report.errors:
            # Good files stay loaded; each bad file loaded nothing. Name every file and what is wrong.
            raise dg.Failure(description="\n".join(report.errors), metadata={"files": md["files"]})
        read, loaded, quarantined = (report.total(a) for a in ("rows_read", "rows_loaded", "rows_quarantined"))
        bad = [f.path for f in report.files if f.rows_read != f.rows_loaded + f.rows_quarantined]
        yield dg.AssetCheckResult(
            check_name="rows_reconcile", passed=not bad,
            metadata={"actual": f"{read:,} read = {loaded:,} loaded + {quarantined:,} quarantined",
                      "threshold": "exact", "files_not_reconciling": ", ".join(bad) or "none"},
        )
        limit = float(settings.get("ingest", "max_quarantine_share"))
        share = quarantined / read if read else 0.0
        yield dg.AssetCheckResult(
            check_name="quarantine_share", passed=share <= limit, severity=dg.AssetCheckSeverity.WARN,
            metadata={"actual": round(share, 6), "threshold": limit, "rows_quarantined": quarantined},
        )
        yield dg.MaterializeResult(metadata=md)

    return _raw


raw_assets = [build_raw_asset(t) for t in TABLES]
