"""dg.materialize on a temp home, checks called as functions, and the landing sensor."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.features import feature_assets, features_in_range, features_not_null, features_unique_customers
from assets.ingest import raw_assets
from assets.resources import Settings, Source, Warehouse
from orchestration.definitions import defs
from warehouse.synthetic import generate_bank


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    landing, home = tmp / "landing", tmp / "home"
    counts = generate_bank(landing, customers=800, seed=5)
    resources = {"warehouse": Warehouse(home=str(home)), "source": Source(source="synthetic", landing=str(landing)),
                 "settings": Settings(home=str(home), source="synthetic")}
    result = dg.materialize([*raw_assets, *feature_assets], resources=resources)  # an in-memory instance
    return result, resources, counts, landing, home


def test_materialize_loads_every_row_and_builds_features(materialized):
    result, resources, counts, _, home = materialized
    assert result.success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for table, n in counts.items():
            assert con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0] == n, table
        population = con.execute("SELECT count(*) FROM features.population").fetchone()[0]
        assert con.execute("SELECT count(*) FROM features.customer_features").fetchone()[0] == population
        # point in time: nobody enters the population after the snapshot, no transaction after it counts
        snap = con.execute("SELECT max(snapshot_date) FROM features.population").fetchone()[0]
        late = con.execute("SELECT count(*) FROM raw.customers WHERE joined_date > ?", [snap]).fetchone()[0]
        assert population == counts["customers"] - late
        last_tx = con.execute("SELECT max(transaction_date)::DATE FROM raw.transactions").fetchone()[0]
        assert (last_tx - snap).days == 90
        assert con.execute("SELECT min(recency_days) FROM features.rfm").fetchone()[0] >= 0


def test_materialization_metadata_reconciles(materialized):
    result = materialized[0]
    mats = {m.asset_key.to_user_string(): m.metadata
            for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
    tx = mats["raw/transactions"]
    assert tx["rows_read"].value == tx["rows_loaded"].value + tx["rows_quarantined"].value > 0
    assert "preview" in mats["features/customer_features"]
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[("raw/transactions", "gx_contract")].passed
    assert checks[("raw/transactions", "rows_reconcile")].passed
    assert checks[("raw/customers", "gx_contract")].metadata["rows_validated"].value == 800


def test_feature_checks_called_as_functions(materialized):
    _, resources, _, _, home = materialized
    wh, settings = resources["warehouse"], resources["settings"]
    assert features_unique_customers(warehouse=wh).passed
    assert features_not_null(warehouse=wh, settings=settings).passed
    assert features_in_range(warehouse=wh, settings=settings).passed
    # a duplicated customer and an out-of-range score are caught, with actual and threshold reported
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("INSERT INTO features.customer_features SELECT * FROM features.customer_features LIMIT 1")
        con.execute("UPDATE features.customer_features SET financial_health_score = 101 WHERE rowid = 0")
    dup = features_unique_customers(warehouse=wh)
    assert not dup.passed and set(dup.metadata) >= {"actual", "threshold"}
    rng = features_in_range(warehouse=wh, settings=settings)
    assert not rng.passed and "financial_health_score" in rng.metadata["actual"].value


@pytest.fixture
def landing_sensor(tmp_path):
    """A small landing folder, the landing sensor, its Source resource and a fresh Dagster instance."""
    landing = tmp_path / "landing"
    generate_bank(landing, customers=50, seed=1)
    with dg.instance_for_test() as instance:
        yield landing, defs.resolve_sensor_def("landing_files"), Source(source="synthetic", landing=str(landing)), instance


def test_landing_sensor_requests_a_run_only_for_new_or_changed_files(landing_sensor):
    landing, sensor, source, instance = landing_sensor

    def tick(cursor=None):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"source": source})
        return sensor(ctx), ctx.cursor

    first, cursor = tick()
    assert isinstance(first, dg.RunRequest)
    assert first.tags["scorehouse/files"] == str(len(list(landing.glob("*.csv"))))
    assert isinstance(tick(cursor)[0], dg.SkipReason)
    stat = (landing / "customers.csv").stat()
    os.utime(landing / "customers.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    # rewritten after the ready marker: not ready yet, so no run
    assert isinstance(tick(cursor)[0], dg.SkipReason)
    os.utime(landing / "_SUCCESS", ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # the export is done
    again, _ = tick(cursor)
    assert isinstance(again, dg.RunRequest) and again.run_key != first.run_key
    assert again.tags["scorehouse/files"] == "1"


def test_landing_sensor_first_tick_skips_files_already_ingested(landing_sensor):
    """Switching the UI on after `scorehouse run` does not re-run the pipeline for the same files."""
    landing, sensor, source, instance = landing_sensor
    for a in raw_assets[:-1]:
        instance.report_runless_asset_event(dg.AssetMaterialization(a.key))
    ctx = dg.build_sensor_context(instance=instance, resources={"source": source})
    assert isinstance(sensor(ctx), dg.RunRequest)  # one raw table never ingested: everything is new
    instance.report_runless_asset_event(dg.AssetMaterialization(raw_assets[-1].key))
    ctx = dg.build_sensor_context(instance=instance, resources={"source": source})
    assert isinstance(sensor(ctx), dg.SkipReason)
    (landing / "customers.csv").write_text((landing / "customers.csv").read_text())  # rewritten after
    (landing / "_SUCCESS").touch()  # and marked ready again
    ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources={"source": source})
    request = sensor(ctx)
    assert isinstance(request, dg.RunRequest) and request.tags["scorehouse/files"] == "1"


def test_settings_override_from_home(tmp_path: Path):
    (tmp_path / "scorehouse.yaml").write_text("ingest:\n  max_quarantine_share: 0.5\n")
    s = Settings(home=str(tmp_path))
    assert s.get("ingest", "max_quarantine_share") == 0.5
    assert s.get("features", "ranges")["rfm_r"] == [1, 5]  # untouched defaults stay


def test_a_snapshot_before_every_transaction_says_how_to_fix_it(tmp_path):
    """Two days of transactions and no customers file (a card processor's export): the default outcome window (90
    days) puts the snapshot before every transaction, so no customer is known at it. The run says so and what to
    set, instead of failing later in features.rfm with a date conversion error."""
    landing, home = tmp_path / "landing", tmp_path / "home"
    landing.mkdir()
    (landing / "transactions.csv").write_text(
        "transaction_id,customer_id,transaction_date,amount\n"
        "t1,c1,2013-09-01 10:00:00,-12.5\nt2,c2,2013-09-02 11:00:00,-40\n")
    cfg = tmp_path / "cards.yaml"
    cfg.write_text(f"name: cards\nlanding: {landing}\ndelivery: {{settle_seconds: 0}}\n"
                   "tables:\n  transactions:\n    path: transactions.csv\n")
    resources = {"warehouse": Warehouse(home=str(home)), "source": Source(source=str(cfg), landing=str(landing)),
                 "settings": Settings(home=str(home), source=str(cfg))}
    result = dg.materialize([*raw_assets, *feature_assets], resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "features__population"
    message = failure.step_failure_data.user_failure_data.description
    assert "snapshot 2013-06-04" in message and "2013-09-01 .. 2013-09-02" in message, message
    assert "snapshot.holdout_days" in message and str(cfg) in message, message
