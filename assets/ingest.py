"""Ingest: one asset per raw table. Reads the settled landing files of the configured source as deliveries
(warehouse/ingest.py), loads good rows into raw.<table> (a snapshot table keeps its versions in
raw.<table>_history), rejected rows into quarantine.<table>, and reports the reconciliation and held deliveries."""


import dagster as dg

from assets.metadata import frame_md, table_metadata
from assets.quality import gx_result, gx_spec
from assets.resources import Settings, Source, Warehouse, holds_warehouse
from warehouse import deliveries
from warehouse.contract import TABLES
from warehouse.db import delivery_version
from warehouse.ingest import TableReport, ingest_table

GROUP = "ingest"
# Facts that reference customers are loaded after them, so orphans can be quarantined.
AFTER_CUSTOMERS = {name for name, t in TABLES.items() if t.references_customers}
# Numbers and dates a reason quotes, blanked so that quarantined rows group by kind of problem (reasons never
# quote other values: warehouse/mapping.py).
FIGURE = r"(: )-?[0-9][0-9:. -]*( is )"


def _held(con, table: str) -> list[deliveries.Delivery]:
    return [d for d in deliveries.of_table(con, table) if d.state == "held" and d.archived_at is None]


def _report_metadata(con, report: TableReport, provided: bool) -> dict:
    md = table_metadata(con, f"raw.{report.table}", show=TABLES[report.table].previewable)
    md.update({
        "rows_read": report.total("rows_read"),
        "rows_loaded": report.total("rows_loaded"),
        "rows_skipped": report.total("rows_skipped"),
        "rows_quarantined": report.total("rows_quarantined"),
        "rows_released": report.released,
        "rows_in_quarantine_table": report.rows_in_quarantine,
        "deliveries_held": len(_held(con, report.table)),
        "files": frame_md(
            [(f.path, f.status, f"{f.rows_read:,}", f"{f.rows_loaded:,}", f"{f.rows_skipped:,}",
              f"{f.rows_quarantined:,}", f"{f.rows_released:,}") for f in report.files],
            ["file", "status", "read", "loaded", "already held", "quarantined", "released"],
        ) if provided else dg.MetadataValue.md("_this source has no file for this table_"),
    })
    reasons = con.execute(
        f"""SELECT regexp_replace(reason, ?, '\\1…\\2', 'g') AS why, count(*) n,
                   min(_source_file || ' row ' || _source_row) AS example
            FROM quarantine.{report.table} WHERE released_at IS NULL GROUP BY 1 ORDER BY n DESC LIMIT 8""",
        [FIGURE]).fetchall()
    if reasons:
        md["quarantine_reasons"] = frame_md(reasons, ["reason", "rows", "first example"])
    return md


def guard_result(held: list[deliveries.Delivery]) -> dg.AssetCheckResult:
    """The volume guard's verdict: ERROR while a delivery of the table is held back (the last good state stays)."""
    return dg.AssetCheckResult(
        check_name="delivery_guard", passed=not held, severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "actual": f"{len(held)} held back" if held else "none held back",
            "threshold": "no delivery held by the volume guard (max_shrink; no shorter re-send)",
            "held": dg.MetadataValue.json([{"delivery_id": d.delivery_id, "file": d.source_file,
                                            "rows_read": d.rows_read, "rows_before": d.rows_before,
                                            "rows_after": d.rows_after, "why": d.note} for d in held]),
            "held_files": frame_md([(d.source_file, f"{d.rows_read:,}", "" if d.rows_before is None else
                                     f"{d.rows_before:,} → {d.rows_after:,}", d.note) for d in held],
                                   ["file", "rows read", "current rows → after", "why"]),
        })


def build_raw_asset(table: str) -> dg.AssetsDefinition:
    contract = TABLES[table]
    key = dg.AssetKey(["raw", table])

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"duckdb", "csv", "excel"},
        pool="warehouse",
        deps=[dg.AssetKey(["raw", "customers"])] if table in AFTER_CUSTOMERS else [],
        description=f"raw.{table}: {contract.description} Delivered as {contract.mode} by default "
                    f"(docs/deliveries.md). Rejected rows go to quarantine.{table} with the reason.",
        check_specs=[
            gx_spec(key, table),
            dg.AssetCheckSpec("rows_reconcile", asset=key,
                              description="rows read = loaded + already held + quarantined, for every delivery"),
            dg.AssetCheckSpec("quarantine_share", asset=key,
                              description="share of this run's rows rejected stays under ingest.max_quarantine_share"),
            dg.AssetCheckSpec("delivery_guard", asset=key,
                              description="no delivery held back by the volume guard (a snapshot shrinking the "
                                          "table by more than max_shrink, or a shorter re-send): ERROR until it is "
                                          "accepted (`scorehouse deliveries accept FILE`) or replaced"),
        ],
    )
    @holds_warehouse
    def _raw(context: dg.AssetExecutionContext, warehouse: Warehouse, source: Source, settings: Settings):
        cfg = source.config()
        provided = bool(cfg.feeds.get(table))
        with warehouse.connect() as con:
            report = ingest_table(con, cfg, table, source.landing_path() if provided else None,
                                  run_id=context.run.run_id, log=context.log.info, warn=context.log.warning)
            md = _report_metadata(con, report, provided)
            held = _held(con, table)
            contract_check = gx_result(context, con, table, provided) if not report.errors else None
            version = dg.DataVersion(delivery_version(con, table))
        if report.errors:
            # Good files stay loaded; each bad file loaded nothing. Name every file and what is wrong.
            raise dg.Failure(description="\n".join(report.errors), metadata={"files": md["files"]})
        read, loaded, skipped, quarantined = (report.total(a) for a in
                                              ("rows_read", "rows_loaded", "rows_skipped", "rows_quarantined"))
        bad = [f.path for f in report.files if not f.reconciles]
        yield dg.AssetCheckResult(
            check_name="rows_reconcile", passed=not bad,
            metadata={"actual": f"{read:,} read = {loaded:,} loaded + {skipped:,} already held + "
                                f"{quarantined:,} quarantined ({report.released:,} released later)",
                      "threshold": "exact", "files_not_reconciling": ", ".join(bad) or "none"},
        )
        limit = float(settings.get("ingest", "max_quarantine_share"))
        share = quarantined / read if read else 0.0
        yield dg.AssetCheckResult(
            check_name="quarantine_share", passed=share <= limit, severity=dg.AssetCheckSeverity.WARN,
            metadata={"actual": round(share, 6), "threshold": limit, "rows_quarantined": quarantined},
        )
        yield guard_result(held)
        yield dg.MaterializeResult(metadata=md, data_version=version)
        yield contract_check

    return _raw


raw_assets = [build_raw_asset(t) for t in TABLES]
