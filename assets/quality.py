"""Great Expectations validation of every raw table, as blocking Dagster asset checks."""

import dagster as dg

from orchestration.resources import Warehouse
from quality.contract_suite import validate_table
from warehouse.contract import TABLES


def build_gx_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["raw", table]), name="gx_contract", blocking=True, pool="warehouse",
        description=f"Great Expectations suite of raw.{table} from the data contract: columns, types, "
                    "required values, bounds, allowed values, unique key, customers referenced exist.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            result = validate_table(con, table)
            rows = con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
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
