"""Great Expectations validation of a raw table, as the blocking check `gx_contract` its ingest asset yields.

In the ingest step itself, after the load is committed (GX reads with cursors of its own, which see committed
data only): a separate step per table cost a second of Dagster overhead each, and GX's import, for tables that
received nothing."""

import dagster as dg

from quality.contract_suite import validate_table

SPEC_DESCRIPTION = ("Great Expectations suite of raw.{table} from the data contract, on the rows this run "
                    "delivered: columns, types, required values, bounds, allowed values, unique key, customers "
                    "referenced exist. Blocking: the features are not built on a table that breaks its contract.")


def gx_spec(key: dg.AssetKey, table: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("gx_contract", asset=key, blocking=True, description=SPEC_DESCRIPTION.format(table=table))


def gx_result(context, con, table: str, provided: bool) -> dg.AssetCheckResult:
    """The suite's verdict on what this run delivered to raw.<table> (what earlier runs loaded was validated
    then; a table the source does not deliver proves nothing)."""
    if not provided:
        return dg.AssetCheckResult(check_name="gx_contract", passed=True, metadata={
            "actual": f"this source delivers no {table}", "threshold": "0 failed", "rows_validated": 0})
    new = [r[0] for r in con.execute(
        "SELECT delivery_id FROM raw.deliveries WHERE table_name = ? AND run_id = ? AND rows_loaded > 0 "
        "AND state IN ('loaded', 'superseded')", [table, context.run.run_id]).fetchall()]
    if not new and con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]:
        return dg.AssetCheckResult(check_name="gx_contract", passed=True, metadata={
            "actual": "nothing new delivered in this run (validated when it was loaded)", "threshold": "0 failed",
            "rows_validated": 0})
    result = validate_table(con, table, new)
    failed = result.failed
    for r in failed:
        context.log.warning(f"raw.{table}: {result.describe(r)} failed ({r['unexpected_count']} unexpected)")
    return dg.AssetCheckResult(
        check_name="gx_contract", passed=result.passed,
        metadata={
            "actual": f"{len(failed)} of {len(result.results)} expectations failed",
            "threshold": "0 failed",
            "expectations": len(result.results),
            "rows_validated": result.rows,
            "failed_expectations": ", ".join(result.describe(r) for r in failed) or "none",
            "results": dg.MetadataValue.md(result.markdown()),
        },
    )
