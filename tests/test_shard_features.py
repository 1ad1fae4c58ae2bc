"""Feature tables built shard by shard on the lake (warehouse/shard_features.py) equal the embedded warehouse's,
row for row, for two snapshot dates kept side by side in the lake; an export writes only the raw tables that
changed."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pyarrow.compute as pc
import pytest

from tests.lakes import assert_same, frame, new_lake
from tests.realdata import build_warehouse
from warehouse import features as F
from warehouse import shard_features as S
from warehouse.db import connect
from warehouse.lake import Lake
from warehouse.synthetic import generate_bank

SHARDS = 4


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """The ingest's warehouse of a generated bank (raw tables only) and its two snapshot dates."""
    root = tmp_path_factory.mktemp("bank")
    generate_bank(root / "landing", customers=1500, seed=5, manager_effect=1)
    db = build_warehouse("synthetic", root / "landing", root / "control.duckdb", features=False)
    with connect(db) as con:
        snap = F.resolve_snapshot(con, None, 90)
    return db, [snap - timedelta(days=61), snap]


def test_shards_build_the_embedded_features_for_each_snapshot(control, postgres_url, tmp_path):
    db, snaps = control
    lake = Lake(new_lake(postgres_url, "shard_features", tmp_path / "lake"))
    embedded, lake_db = tmp_path / "embedded.duckdb", tmp_path / "lake_control.duckdb"
    shutil.copy(db, embedded)
    shutil.copy(db, lake_db)
    with connect(lake_db) as con:
        S.export_raw(con, lake, SHARDS)
        plans = [S.plan(con, snap) for snap in snaps]  # in the order the embedded warehouse builds them
    for p in plans:
        for k in range(SHARDS):
            S.build_shard(lake, k, p)
        assert S.population_step(lake, SHARDS, p.snapshot) > 1000
    pins = lake.pin([f"features.{t}" for t in S.FEATURE_TABLES] + [S.SCORES])

    seen = {}
    for snap in snaps:
        with connect(embedded) as con:
            F.build_all(con, snap)
            expected = {t: frame(con, t) for t in S.FEATURE_TABLES}
        with connect(tmp_path / f"read_{snap}.duckdb") as con:
            S.load_features(con, lake, None, snap, pins)
            for t in S.FEATURE_TABLES:
                assert_same(expected[t], frame(con, t), t)
            assert con.execute("SELECT max(snapshot_date) FROM features.customer_features").fetchone()[0] == snap
            seen[snap] = con.execute("SELECT count(*), sum(txn_count_365d) FROM features.customer_features").fetchone()
        with connect(tmp_path / f"shard_{snap}.duckdb") as con:  # one shard's read: its customers only
            S.load_features(con, lake, 2, snap, pins)
            got = con.execute("SELECT customer_id FROM features.customer_features").fetchall()
            assert 0 < len(got) < len(expected["customer_features"]) / 2
    # the two snapshots' parts are each their own: the later one counts the 61 days between them
    assert seen[snaps[0]] != seen[snaps[1]]


def test_an_export_writes_only_the_raw_tables_that_changed_since_the_last_one(control, postgres_url, tmp_path):
    db, _ = control
    lake = Lake(new_lake(postgres_url, "export_again", tmp_path / "lake"))
    work = tmp_path / "work.duckdb"
    shutil.copy(db, work)
    raw = ["raw.customers_history", "raw.transactions", "raw.accounts_history"]
    with connect(work) as con:
        first = S.export_raw(con, lake, SHARDS)
        pins = lake.pin(raw)
        again = S.export_raw(con, lake, SHARDS)  # a re-run, or a backfill of another date: nothing to write
        assert lake.pin(raw) == pins
        assert all(new for _, new in first.values()) and not any(new for _, new in again.values())
        assert {t: n for t, (n, _) in again.items()} == {t: n for t, (n, _) in first.items()}
        # a corrected amount, one cent on one row: that table, and only that one, is written again
        con.execute("UPDATE raw.transactions SET amount = amount + 0.01 WHERE transaction_id = "
                    "(SELECT min(transaction_id) FROM raw.transactions)")
        corrected = S.export_raw(con, lake, SHARDS)
        assert [t for t, (_, new) in corrected.items() if new] == ["raw.transactions"]
        assert lake.pin(raw)["raw.transactions"] != pins["raw.transactions"]
        (want,), = con.execute("SELECT sum(amount) FROM raw.transactions").fetchall()
    assert abs(pc.sum(lake.read("raw.transactions", columns=["amount"])["amount"]).as_py() - want) < 1e-6
    # a part written since its stamp (by hand, or by an older export): that part, and only it, is written again;
    # the shards are exported as job lake's steps do it, each from a read-only connection of its own
    lake.write_part("raw.customers_history", lake.read("raw.customers_history", shards=[1]).slice(0, 3), shard=1)
    with connect(work) as con:
        raw, shared = S.export_shared(con, lake, SHARDS)
    assert not any(new for _, new in shared.values())
    with connect(work, read_only=True) as con:
        parts = {k: S.export_shard(con, lake, k, raw) for k in range(SHARDS)}
    assert [k for k, w in parts.items() if w] == [1] and list(parts[1]) == ["raw.customers_history"], parts
    with connect(work, read_only=True) as con:
        (want,), = con.execute("SELECT count(*) FROM raw.customers_history").fetchall()
    assert sum(lake.shard_counts("raw.customers_history").values()) == want


def test_a_bank_sharded_more_coarsely_then_as_before_gets_every_part_back(control, postgres_url, tmp_path):
    """Re-sharding drops the parts of the shards that no longer exist with their stamps: sharded as before again,
    the same rows are written to those shards again rather than taken as already there."""
    db, _ = control
    lake = Lake(new_lake(postgres_url, "reshard", tmp_path / "lake"))
    with connect(db, read_only=True) as con:
        (want,), = con.execute("SELECT count(*) FROM raw.transactions").fetchall()
    with connect(tmp_path / "work.duckdb") as con:
        con.execute(f"ATTACH '{db}' AS src (READ_ONLY)")
        con.execute("COPY FROM DATABASE src TO work")
        con.execute("DETACH src")
        for shards in (SHARDS, 2, SHARDS):
            S.export_raw(con, lake, shards)
            counts = lake.shard_counts("raw.transactions")
            assert set(counts) == set(range(shards)) and sum(counts.values()) == want, (shards, counts)


def test_on_the_iceberg_backend_the_duckdb_file_builds_a_sample_stratified_by_shard(control, tmp_path):
    """warehouse.lake.sample_customers: the DuckDB file's features, which the models train, are gated and watched on
    while the lake builds every customer's, hold about that many customers, the same share of each shard, the same
    customers every build; a sampled customer's own columns equal the full build's (the columns over the
    population are the sample's)."""
    import dagster as dg

    from assets.features import feature_assets
    from assets.resources import Settings, Source, Warehouse
    from warehouse.shards import shard_of

    db, snaps = control
    full = tmp_path / "full.duckdb"
    shutil.copy(db, full)
    with connect(full) as con:
        F.build_all(con, snaps[1])
        everyone = frame(con, "customer_features")
    home = tmp_path / "home"
    home.mkdir()
    (home / "scorehouse.yaml").write_text(f"warehouse:\n  backend: iceberg\n  lake:\n    location: {tmp_path / 'lake'}\n"
                                          f"    shards: {SHARDS}\n    sample_customers: 500\n")
    resources = {"warehouse": Warehouse(home=str(home)), "source": Source(source="synthetic", landing=str(tmp_path)),
                 "settings": Settings(home=str(home), source="synthetic")}
    seen = []
    for _ in range(2):
        shutil.copy(db, home / "warehouse.duckdb")
        result = dg.materialize(feature_assets, resources=resources)
        assert result.success
        with connect(home / "warehouse.duckdb", read_only=True) as con:
            seen.append(frame(con, "customer_features"))
    first, again = seen
    assert_same(first, again, "the same sample twice")
    per_shard = {k: 0 for k in range(SHARDS)}
    for cid in everyone["customer_id"]:
        per_shard[shard_of(cid, SHARDS)] += 1
    sampled = {k: 0 for k in range(SHARDS)}
    for cid in first["customer_id"]:
        sampled[shard_of(cid, SHARDS)] += 1
    n = len(everyone)
    assert n > 1400 and sampled == {k: round(m * 500 / n) for k, m in per_shard.items()}, (sampled, per_shard)
    own = [c for c in first.columns if c not in F.POPULATION_COLUMNS]
    mine = everyone[everyone["customer_id"].isin(first["customer_id"])].reset_index(drop=True)
    assert_same(mine[own], first[own], "a sampled customer's own columns")
    pop = next(e.materialization.metadata for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey(["features", "population"]))
    assert pop["dagster/row_count"].value == len(first) and pop["customers_known"].value == n
    assert pop["sample"].value.startswith(f"{len(first):,} of the {n:,} customers, the same share of each of the "
                                          f"{SHARDS} shards")
