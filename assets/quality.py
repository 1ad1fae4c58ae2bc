"""Great Expectations validation of every raw table, as blocking Dagster asset checks."""

import dagster as dg

from orchestration.resources import Source, Warehouse
from quality.contract_suite import validate_table
from warehouse.contract import TABLES


def build_gx_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["raw", table]), name="gx_contract", blocking=True, pool="warehouse",
        description=f"Great Expectations suite of raw.{table} from the data contract: columns, types, "
                    "required values, bounds, allowed values, unique key, customers referenced exist.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: Warehouse, source: Source) -> dg.AssetCheckResult:
        if not source.config().feeds.get(table):  # the suite of an empty table proves nothing and costs seconds
            return dg.AssetCheckResult(passed=True, metadata={
                "actual": f"this source delivers no {table}", "threshold": "0 failed", "rows_validated": 0})
        with warehouse.connect() as con:
            # What this run delivered is validated; what earlier runs loaded was validated then.
            new = [r[0] for r in con.execute(
                "SELECT delivery_id FROM raw.deliveries WHERE table_name = ? AND run_id = ? AND rows_loaded > 0 "
                "AND state IN ('loaded', 'superseded')", [table, context.run.run_id]).fetchall()]
            stored = con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
            if stored and not new:
                return dg.AssetCheckResult(passed=True, metadata={
                    "actual": "nothing new delivered in this run (validated when it was loaded)",
                    "threshold": "0 failed", "rows_validated": 0})
            result = validate_table(con, table, new)
            rows = result.rows
        failed = result.failed
        for r in failed:
            context.log.warning(f"raw.{table}: {result.describe(r)} failed ({r['unexpected_count']} unexpected)")
        return dg.AssetCheckResult(
            passed=result.passed,
            metadata={
                "actual": f"{len(failed)} of {len(result.results)} expectations failed",
                "threshold": "0 failed",
                "expectations": len(result.results),
                "rows_validated": rows,
                "failed_expectations": ", ".join(result.describe(r) for r in failed) or "none",
                "results": dg.MetadataValue.md(result.markdown()),
            },
        )

    return _check


gx_checks = [build_gx_check(t) for t in TABLES]
