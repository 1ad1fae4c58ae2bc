"""The one Definitions entry point loads, and every asset carries what a user looks at in the UI."""

import dagster as dg

from orchestration.definitions import defs
from warehouse.contract import TABLES


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {f"raw/{t}" for t in TABLES} <= keys
    assert {"features/population", "features/rfm", "features/balances", "features/holdings",
            "features/labels", "features/customer_features"} <= keys


def test_every_asset_has_docstring_group_kinds_and_pool():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name in {"ingest", "features", "training", "scoring"}, key
        assert node.kinds, f"{key} has no kinds"
        assert node.pools == {"warehouse"}, f"{key} does not run in the warehouse pool"


def test_jobs_sensor_and_checks():
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"scorehouse", "ingest"}
    sensor = defs.resolve_sensor_def("landing_files")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("raw/transactions", "rows_reconcile") in checks
    assert ("raw/transactions", "gx_contract") in checks
    assert ("features/customer_features", "features_unique_customers") in checks
    for name in ("scorehouse", "ingest"):
        job = defs.resolve_job_def(name)
        assert job.run_tags.get("scorehouse/warehouse") == "write", name  # queued one writing run at a time
        # every step opens the DuckDB file, checks included: all hold the one `warehouse` slot
        assert {n.definition.pool for n in job.graph.nodes} == {"warehouse"}, name
