"""The iceberg backend's tables (warehouse/lake.py) on a real PostgreSQL catalog and a local warehouse folder:
a part is replaced whole or not at all, writers of different shards commit side by side, a pinned reader
keeps its snapshot, and a writer killed mid-write leaves the table as it was until it is run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import date

import duckdb
import pytest

from tests.lake_writer import write_rounds
from tests.lakes import new_lake
from warehouse.lake import Lake, LakeError, LakeLocation
from warehouse.shards import check, shard_of, shard_sql

SNAP = date(2026, 10, 31)

def _expected(round_of: dict[int, int]) -> Counter:
    """The table's rows when shard k was last written in round round_of[k]."""
    return Counter((f"C{i:06d}", i * round_of[shard_of(f"C{i:06d}", 4)] + 0.5) for i in range(2000)
                   if shard_of(f"C{i:06d}", 4) in round_of)


def _rows(lake: Lake, **kw) -> Counter:
    t = lake.read("features.balances", **kw)
    return Counter(zip(t["customer_id"].to_pylist(), [float(v) for v in t["balance"].to_pylist()], strict=True))


def _write(location: LakeLocation, shard: int, last: int, first: int = 1, kill_at: str | None = None
           ) -> subprocess.Popen:
    env = {**os.environ, **({"SCOREHOUSE_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.Popen([sys.executable, "-m", "tests.lake_writer", location.catalog, location.warehouse,
                             str(shard), str(first), str(last)], env=env, stderr=subprocess.PIPE, text=True)


def _write_all(location: LakeLocation) -> Lake:
    """Round 1 of every shard, in this process."""
    lake = Lake(location)
    for k in range(4):
        write_rounds(lake, k, 1)
    return lake


@pytest.fixture
def location(postgres_url, tmp_path, request):
    # One database per test: the tests share the session's server, not each other's tables.
    return new_lake(postgres_url, f"lake_{abs(hash(request.node.name)) % 10**8}", tmp_path / "warehouse")


def test_shard_is_the_same_in_python_and_duckdb_and_spreads_customers():
    ids = [f"C{i:06d}" for i in range(4000)]
    con = duckdb.connect()
    con.execute("CREATE TABLE c AS SELECT unnest(?) AS customer_id", [ids])
    in_sql = dict(con.execute(f"SELECT customer_id, {shard_sql('customer_id', 8)} FROM c").fetchall())
    assert in_sql == {i: shard_of(i, 8) for i in ids}
    sizes = Counter(in_sql.values())
    assert sorted(sizes) == list(range(8)) and min(sizes.values()) > 400 and max(sizes.values()) < 600
    assert shard_of(12345, 4) == shard_of("12345", 4)  # a numeric id shards as its text
    with pytest.raises(ValueError, match="from 1 to 4096"):
        check(0)


def test_each_shard_replaces_only_its_own_part_and_a_pinned_reader_keeps_its_snapshot(location):
    lake = _write_all(location)
    assert _rows(lake) == _expected({0: 1, 1: 1, 2: 1, 3: 1})
    assert sum(lake.shard_counts("features.balances").values()) == 2000
    pinned = lake.pin(["features.balances", "features.missing"])
    assert pinned["features.missing"] is None

    write_rounds(lake, 2, 3)  # shard 2 rewritten three times: its last round stands
    assert _rows(lake) == _expected({0: 1, 1: 1, 2: 3, 3: 1})
    assert _rows(lake, shards=[2]) == _expected({2: 3})
    assert _rows(lake, at=pinned["features.balances"]) == _expected({0: 1, 1: 1, 2: 1, 3: 1})
    assert _rows(lake, snapshot=date(2026, 9, 30)) == Counter()


def test_writers_of_different_shards_commit_side_by_side(location):
    writers = [_write(location, k, 3) for k in range(2)]  # two processes, as on this machine's two cores
    lake = Lake(location)
    write_rounds(lake, 2, 3)
    assert [w.wait() for w in writers] == [0, 0], [w.stderr.read()[-500:] for w in writers]
    assert _rows(lake) == _expected({0: 3, 1: 3, 2: 3})


def test_a_writer_killed_before_its_commit_leaves_the_table_as_it_was_and_a_rerun_converges(location):
    lake = _write_all(location)
    killed = _write(location, 1, 2, first=2, kill_at="lake_write")
    assert killed.wait() == -signal.SIGKILL
    assert _rows(lake) == _expected({0: 1, 1: 1, 2: 1, 3: 1})  # the killed round's files are not in any snapshot
    write_rounds(lake, 1, 2)
    assert _rows(lake) == _expected({0: 1, 1: 2, 2: 1, 3: 1})


def test_a_new_column_is_added_and_older_parts_read_it_as_null(location):
    lake = Lake(location)
    con = duckdb.connect()
    lake.write_part("features.pivots", con.sql("SELECT 'a' AS customer_id, 1::UBIGINT AS n").to_arrow_table(), shard=0)
    sid = lake.write_part("features.pivots", con.sql("SELECT 'b' AS customer_id, 2 AS n, NULL AS extra")
                          .to_arrow_table(), shard=1)
    assert lake.pin(["features.pivots"]) == {"features.pivots": sid}  # the id of the write's own commit
    rows = lake.read("features.pivots").sort_by("customer_id").to_pylist()
    assert rows == [{"customer_id": "a", "n": 1, "extra": None}, {"customer_id": "b", "n": 2, "extra": None}]


def test_a_bad_catalog_is_one_line_without_the_password(tmp_path):
    with pytest.raises(LakeError, match="expected postgresql://"):
        Lake(LakeLocation("mysql://u@h/db", str(tmp_path)))
    with pytest.raises(LakeError) as e:
        Lake(LakeLocation("postgresql://scorehouse:s3cret@127.0.0.1:1/none", str(tmp_path)))
    assert "s3cret" not in str(e.value) and "***" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LakeError, match="<schema>.<table>"):
        Lake._check("Features.x; DROP")


def _files(location: LakeLocation, suffix: str) -> set[str]:
    from pathlib import Path

    return {str(p) for p in Path(location.warehouse).rglob(f"*{suffix}")}


def test_expiry_drops_old_snapshots_and_their_files_never_the_current_rows_nor_a_writers_young_files(location):
    from datetime import datetime, timedelta
    from pathlib import Path

    lake = _write_all(location)
    write_rounds(lake, 0, 3, first=2)  # shard 0 rewritten twice more: two superseded data files
    before = _files(location, ".parquet")
    # a first write appends; a rewrite is a delete and an append: 4 + 2 x 2 snapshots
    assert len(before) == 6 and len(lake.catalog.load_table("features.balances").snapshots()) == 8
    # a writer killed after its data file, before its commit, a moment ago: no snapshot refers to it
    stray = Path(sorted(before)[0]).with_name("00000-0-killed-writer.parquet")
    stray.write_bytes(Path(sorted(before)[0]).read_bytes())

    # nothing older than the 7 days kept: nothing expired, nothing deleted
    assert lake.expire("features.balances", datetime.now() - timedelta(days=7), timedelta(hours=1)) == (0, 0)
    expired, deleted = lake.expire("features.balances", datetime.now() + timedelta(seconds=1), timedelta(hours=1))
    table = lake.catalog.load_table("features.balances")
    assert expired == 7 and len(table.snapshots()) == 1  # every snapshot but the current one
    assert deleted == 0 and _files(location, ".parquet") == before | {str(stray)}  # all younger than an hour
    assert _rows(lake) == _expected({0: 3, 1: 1, 2: 1, 3: 1})

    manifests = _files(location, ".avro")
    expired, deleted = lake.expire("features.balances", datetime.now(), timedelta(0))
    live, left = _files(location, ".parquet"), _files(location, ".avro")
    assert expired == 0 and len(live) == 4 and str(stray) not in live  # one data file per shard left
    assert left < manifests and deleted == len(before) + 1 - len(live) + len(manifests) - len(left)
    assert _rows(lake) == _expected({0: 3, 1: 1, 2: 1, 3: 1})  # the same rows, read from what is left
    assert lake.tables() == ["features.balances"]


def test_a_shard_with_no_scores_today_empties_its_part_and_keeps_the_tables_types(location):
    from datetime import datetime

    import pandas as pd

    from warehouse.shard_scores import read_scores, write_scores

    lake = Lake(location)
    rows = pd.DataFrame({"transaction_id": ["T1", "T2"], "customer_id": ["C1", "C2"], "fraud_score": [0.9, 0.1]})
    for shard, frame in ((2, rows.iloc[:0].astype(object)),  # the first write of all empty: no table, no types
                         (0, rows), (1, rows.assign(transaction_id=["T3", "T4"])),
                         (1, rows.iloc[:0].astype(object))):  # nothing booked in shard 1 today: untyped, empty
        write_scores(lake, "fraud", frame, shard=shard, snap=SNAP, scored_date=SNAP, version=1, run_id="r",
                     scored_at=datetime(2026, 11, 1, 6))
    out = read_scores(lake, "fraud", SNAP)
    assert sorted(out["transaction_id"]) == ["T1", "T2"] and out["fraud_score"].dtype == "float64"
    assert isinstance(out["snapshot_date"].iloc[0], date) and set(lake.shard_counts("scores.fraud")) == {0}


def test_maintenance_deletes_feature_dates_past_the_retention_and_keeps_the_scores(location):
    from datetime import timedelta

    import pyarrow as pa

    from assets.lake import LakeResource, build_maintenance

    lake = Lake(location)
    dates = [SNAP - timedelta(days=d) for d in (45, 31, 30, 0)]
    for d in dates:
        rows = pa.table({"customer_id": ["C1", "C2"], "balance": [1.0, 2.0]})
        lake.write_part("features.balances", rows, shard=0, snapshot=d)
        lake.write_part("scores.churn", rows, shard=0, snapshot=d)
    job = build_maintenance(7, 24, keep_feature_days=30)
    result = job.execute_in_process(resources={"lake": LakeResource(catalog=location.catalog,
                                                                    location=location.warehouse)})
    assert result.success and result.output_for_node("drop_old_feature_dates") == 4  # two dates of two rows
    kept = {d for d in dates if lake.count("features.balances", d)}
    assert kept == set(dates[2:]) and all(lake.count("scores.churn", d) == 2 for d in dates)
    assert build_maintenance(7, 24).execute_in_process(resources={"lake": LakeResource(
        catalog=location.catalog, location=location.warehouse)}).output_for_node("drop_old_feature_dates") == 0


def test_a_schema_another_writer_creates_at_the_same_moment_is_used_not_an_error(location):
    """pyiceberg's SQL catalog looks for a schema (an Iceberg namespace), then inserts it: two shard steps writing
    the first table of a schema at once both found none, and the slower one failed on the catalog's unique key
    (seen in job lake: 8 shards, 20,000 customers). Here the other writer's insert is held open in a transaction of
    its own until this writer is waiting on it, then committed."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import closing

    import psycopg2

    lake = Lake(location)
    other = psycopg2.connect(location.catalog)
    other.cursor().execute("INSERT INTO iceberg_namespace_properties VALUES ('scorehouse', 'features', 'exists', "
                           "'true')")  # not committed yet: this writer's check does not see it
    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(write_rounds, lake, 0, 1)
        with closing(psycopg2.connect(location.catalog)) as watch, watch.cursor() as cur:
            while not writer.done():  # until the writer's insert waits on the other's row
                cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if cur.fetchone()[0]:
                    break
        other.commit()
        other.close()
        writer.result()  # raised the catalog's IntegrityError before Lake._namespace
    assert _rows(lake) == _expected({0: 1})


def test_a_part_streamed_from_a_query_is_written_a_file_at_a_time_in_one_commit(location, monkeypatch):
    """A stream (a query's batches) is written in data files of at most CHUNK_ROWS rows, so a writer never holds
    the part's rows, and the files land in one commit: a reader pinned before it keeps the old part, and a stream
    that fails half way leaves the old part and its stamp as they were."""
    from warehouse import lake as lake_module

    monkeypatch.setattr(lake_module, "CHUNK_ROWS", 1000)
    lake = Lake(location)
    con = duckdb.connect()

    def stream(n: int, value: float):
        return con.sql(f"SELECT 'C' || lpad(i::VARCHAR, 6, '0') AS customer_id, {value} AS balance "
                       f"FROM range({n}) t(i)").to_arrow_reader(300)

    lake.write_part("features.balances", stream(500, 1.0), shard=0, stamp="first")
    pinned = lake.pin(["features.balances"])["features.balances"]
    commits = len(lake.catalog.load_table("features.balances").metadata.metadata_log)
    lake.write_part("features.balances", stream(2500, 2.0), shard=0, stamp="second")
    table = lake.catalog.load_table("features.balances")
    assert len(table.metadata.metadata_log) == commits + 1  # one commit for the part's three files
    assert len(table.inspect.files()) == 3 and lake.count("features.balances", shard=0) == 2500
    assert set(_rows(lake).values()) == {1} and len(_rows(lake)) == 2500
    assert len(_rows(lake, at=pinned)) == 500 and lake.part_stamped("features.balances", 0, "second")

    def failing():
        yield from stream(1500, 3.0)
        raise OSError("the source went away")

    schema = stream(1, 0.0).read_all().schema
    with pytest.raises(OSError, match="went away"):
        lake.write_part("features.balances", lake_module.pa.RecordBatchReader.from_batches(schema, failing()),
                        shard=0, stamp="third")
    assert len(_rows(lake)) == 2500 and lake.part_stamped("features.balances", 0, "second")
    assert {k for k, _ in _rows(lake)} == {f"C{i:06d}" for i in range(2500)}
