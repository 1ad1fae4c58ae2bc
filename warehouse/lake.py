"""Tables in an Apache Iceberg catalog: the storage of the iceberg warehouse backend (docs/scale-out.md).

DuckDB still does the work: a step reads its part of the inputs as Arrow (`read`), runs the pipeline's own
SQL in a local DuckDB, and writes its output back with `write_part`, which replaces exactly one part (a
customer shard, and a snapshot date for the tables built as of one) in a single catalog commit. A re-run
replaces what the killed or earlier run wrote (idempotent); other shards' writers commit beside it (the
catalog serialises commits and pyiceberg retries the ones that raced); a reader sees a table's current
snapshot, before or after a part's commit, never between (`pin` fixes those snapshots for a reader that reads
several tables, as publishing does).

The catalog is pyiceberg's SQL catalog (PostgreSQL for several processes or machines; a SQLite file for one
process); the data lives under the warehouse location (a folder, or an object store pyiceberg supports).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from warehouse import failpoints

SHARD = "_shard"
SNAPSHOT = "_snapshot_date"
PARTS = (SHARD, SNAPSHOT)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
# Each commit writes a new metadata file: the old ones are deleted as commits go, the last 50 kept (a reader's
# pinned snapshot lives in the current file until `expire` removes it).
# What a part's rows were written from (`write_part(stamp=...)`), a table property per shard set in the commit
# that writes the part: a writer killed before it leaves both the old rows and the old stamp.
STAMP = "scorehouse.written-from"
CHUNK_ROWS = 1 << 20  # rows per data file written from a stream: what a writer holds at a time
TABLE_PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "50"}
_CATALOG_SCHEMES = {"postgresql": "postgresql+psycopg2", "postgresql+psycopg2": "postgresql+psycopg2",
                    "sqlite": "sqlite"}


class LakeError(ValueError):
    """A lake location or table name that cannot be used, said in one line."""


@dataclass(frozen=True)
class LakeLocation:
    catalog: str  # postgresql://user[:password]@host:port/database, or sqlite:////path/catalog.db
    warehouse: str  # a local folder, file:///folder or s3://bucket/prefix

    def catalog_url(self) -> str:
        scheme, sep, rest = self.catalog.partition("://")
        if not sep or scheme not in _CATALOG_SCHEMES:
            raise LakeError(f"catalog {_redact(self.catalog)!r}: expected postgresql://user@host:port/database or "
                            f"sqlite:////path/catalog.db")
        return f"{_CATALOG_SCHEMES[scheme]}://{rest}"

    def warehouse_url(self) -> str:
        if "://" in self.warehouse:
            return self.warehouse
        path = Path(self.warehouse).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path.as_uri()


def _redact(url: str) -> str:
    """A catalog URL without its password: error messages go to logs and alerts."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _iceberg_types(rows: pa.Table) -> pa.Table:
    """Arrow columns Iceberg can hold: unsigned integers as signed 64-bit (a value that does not fit fails the
    cast, it is not wrapped), and DuckDB's untyped NULL columns as text."""
    fields = []
    for f in rows.schema:
        t = f.type
        if pa.types.is_unsigned_integer(t):
            t = pa.int64()
        elif pa.types.is_null(t):
            t = pa.string()
        fields.append(pa.field(f.name, t))
    target = pa.schema(fields)
    return rows if target == rows.schema else rows.cast(target)


def _chunks(rows: pa.Table | pa.RecordBatchReader) -> Iterator[pa.Table]:
    """`rows` as tables of at most CHUNK_ROWS rows, read from a stream as they are needed; one empty table for
    no rows (an empty part is a commit too)."""
    batches = rows.to_batches(max_chunksize=CHUNK_ROWS) if isinstance(rows, pa.Table) else rows
    pending, n, any_ = [], 0, False
    for batch in batches:
        pending.append(batch)
        n += batch.num_rows
        if n >= CHUNK_ROWS:
            yield pa.Table.from_batches(pending, rows.schema)
            pending, n, any_ = [], 0, True
    if pending or not any_:
        yield pa.Table.from_batches(pending, rows.schema)


def _stamp_key(shard: int) -> str:
    return f"{STAMP}.{shard}"


def _with_parts(rows: pa.Table, shard: int, snapshot: date | None) -> pa.Table:
    rows = rows.drop_columns([c for c in PARTS if c in rows.column_names])
    rows = rows.append_column(pa.field(SHARD, pa.int32(), nullable=False),
                              pa.array([shard] * rows.num_rows, pa.int32()))
    if snapshot is not None:
        rows = rows.append_column(pa.field(SNAPSHOT, pa.date32(), nullable=False),
                                  pa.array([snapshot] * rows.num_rows, pa.date32()))
    return rows


class Lake:
    """One catalog and warehouse. Table names are `<schema>.<table>` as in the DuckDB warehouse."""

    def __init__(self, location: LakeLocation):
        from pyiceberg.catalog.sql import SqlCatalog

        self.location = location
        try:
            self.catalog = SqlCatalog("scorehouse", uri=location.catalog_url(), warehouse=location.warehouse_url())
        except Exception as e:  # the driver's message names host and port; the URL's password is left out
            raise LakeError(f"cannot open the Iceberg catalog {_redact(location.catalog)}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    @staticmethod
    def _check(name: str) -> str:
        if not _NAME.match(name):
            raise LakeError(f"table name {name!r}: expected <schema>.<table> in lower case")
        return name

    def exists(self, name: str) -> bool:
        return self.catalog.table_exists(self._check(name))

    def _table(self, name: str, schema: pa.Schema, by_snapshot: bool):
        from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError

        try:
            return self.catalog.load_table(name)
        except NoSuchTableError:
            pass
        self._namespace(name.split(".")[0])
        try:
            with self.catalog.create_table_transaction(name, schema=schema, properties=TABLE_PROPERTIES) as tx, \
                    tx.update_spec() as spec:
                spec.add_identity(SHARD)
                if by_snapshot:
                    spec.add_identity(SNAPSHOT)
        except (CommitFailedException, TableAlreadyExistsError):
            pass  # another shard's writer created it first: the same table
        return self.catalog.load_table(name)

    def _namespace(self, schema: str) -> None:
        """The schema's namespace, created unless there. pyiceberg's SQL catalog looks, then inserts: another
        shard's writer may insert it in between, and the catalog's unique key refuses this one's row."""
        from sqlalchemy.exc import IntegrityError

        try:
            self.catalog.create_namespace_if_not_exists(schema)
        except IntegrityError:
            if not self.catalog.namespace_exists(schema):
                raise

    def _evolve(self, name: str, table, schema: pa.Schema):
        """Columns new in this write (a feature table gains a pivot column) are added; a column this write does
        not have stays, null in its rows. Retried when another writer changed the schema at the same time."""
        from pyiceberg.exceptions import CommitFailedException

        for _ in range(5):
            known = set(table.schema().column_names)
            if all(f.name in known for f in schema):
                return table
            try:
                with table.update_schema() as update:
                    update.union_by_name(schema)
            except CommitFailedException:
                table = self.catalog.load_table(name)
        raise LakeError(f"{name}: its schema kept changing under this write; run the step again")

    def write_part(self, name: str, rows: pa.Table | pa.RecordBatchReader, *, shard: int,
                   snapshot: date | None = None, stamp: str | None = None) -> int:
        """Replace the rows of (shard[, snapshot]) in `name` with `rows`, in one commit; returns the new
        current snapshot id. Every table is partitioned by shard, and by snapshot date when written with one.
        `rows` may be a stream (a query's batches): it is written a data file of at most CHUNK_ROWS rows at a
        time, so a writer holds one file's rows, not the part's. `stamp` records in the same commit what the
        part was written from (`part_stamped`); a part written without one has none."""
        from pyiceberg.expressions import And, EqualTo

        self._check(name)
        schema = _with_parts(_iceberg_types(rows.schema.empty_table()), shard, snapshot).schema
        table = self._evolve(name, self._table(name, schema, snapshot is not None), schema)
        part = EqualTo(SHARD, shard)
        if snapshot is not None:
            part = And(part, EqualTo(SNAPSHOT, snapshot.isoformat()))
        with table.transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match")  # a part's first write
            tx.delete(part)
            for chunk in _chunks(rows):
                tx.append(_with_parts(_iceberg_types(chunk), shard, snapshot))
            if stamp is not None:
                tx.set_properties({_stamp_key(shard): stamp})
            elif _stamp_key(shard) in table.properties:
                tx.remove_properties(_stamp_key(shard))
            failpoints.reached("lake_write")  # the part's data files are written; the catalog commit is not made
        return table.current_snapshot().snapshot_id  # the commit updated `table` to the catalog's metadata

    def drop_shards_from(self, name: str, shards: int) -> None:
        """Delete the parts of shards >= `shards` (what a bank sharded more finely before left behind), and their
        stamps, in one commit."""
        from pyiceberg.expressions import GreaterThanOrEqual

        if not self.exists(name):
            return
        table = self.catalog.load_table(name)
        stale = [k for k in table.properties if k.startswith(f"{STAMP}.") and int(k.rsplit(".", 1)[1]) >= shards]
        with table.transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match")
            tx.delete(GreaterThanOrEqual(SHARD, shards))
            if stale:
                tx.remove_properties(*stale)

    def part_stamped(self, name: str, shard: int, stamp: str) -> bool:
        """Whether shard `shard` of `name` holds what was written with `stamp`, nothing written to it since."""
        return self.exists(name) and self.catalog.load_table(name).properties.get(_stamp_key(shard)) == stamp

    def pin(self, names: Iterable[str]) -> dict[str, int | None]:
        """The current snapshot id of each table (None: empty or missing): read them all `at` these."""
        pins = {}
        for name in names:
            if not self.exists(name):
                pins[name] = None
                continue
            current = self.catalog.load_table(name).current_snapshot()
            pins[name] = current.snapshot_id if current else None
        return pins

    def read(self, name: str, *, shards: Iterable[int] | None = None, snapshot: date | None = None,
             at: int | None = None, columns: Iterable[str] | None = None, with_shard: bool = False) -> pa.Table:
        """Rows of `name` (of the given shards, of one snapshot date, as of snapshot id `at`), without the
        partition columns (`with_shard`: with the shard each row belongs to, as column `_shard`)."""
        from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In

        table = self.catalog.load_table(self._check(name))
        where = AlwaysTrue()
        if shards is not None:
            where = And(where, In(SHARD, sorted(set(shards))))
        if snapshot is not None:
            where = And(where, EqualTo(SNAPSHOT, snapshot.isoformat()))
        selected = (*columns, *((SHARD,) if with_shard else ())) if columns is not None else ("*",)
        rows = table.scan(row_filter=where, snapshot_id=at, selected_fields=selected).to_arrow()
        return rows.drop_columns([c for c in PARTS if c in rows.column_names and not (with_shard and c == SHARD)])

    def count(self, name: str, snapshot: date | None = None, before: date | None = None,
              shard: int | None = None) -> int:
        """Rows of `name` (of one snapshot date, or of the dates before `before`; of one shard), from the data
        files' own counts where the partition decides."""
        from pyiceberg.expressions import AlwaysTrue, And, EqualTo, LessThan

        where = EqualTo(SNAPSHOT, snapshot.isoformat()) if snapshot is not None else \
            LessThan(SNAPSHOT, before.isoformat()) if before is not None else AlwaysTrue()
        if shard is not None:
            where = And(where, EqualTo(SHARD, shard))
        return self.catalog.load_table(self._check(name)).scan(row_filter=where).count()

    def shard_counts(self, name: str, at: int | None = None) -> dict[int, int]:
        """Rows per shard: what a test or an operator checks a run against."""
        rows = self.catalog.load_table(self._check(name)).scan(snapshot_id=at, selected_fields=(SHARD,)).to_arrow()
        if rows.num_rows == 0:
            return {}
        counts = pc.value_counts(rows[SHARD]).to_pylist()
        return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}

    def drop_snapshots_before(self, name: str, cutoff: date) -> int:
        """Delete the rows of snapshot dates before `cutoff` (whole partitions: a metadata-only delete). Returns
        the rows deleted."""
        from pyiceberg.expressions import LessThan

        old = self.count(name, before=cutoff)
        if old:
            self.catalog.load_table(name).delete(LessThan(SNAPSHOT, cutoff.isoformat()))
        return old

    def latest_snapshot(self, name: str, at: int | None = None) -> date | None:
        """The newest snapshot date `name` holds rows of (as of snapshot id `at`); None: none."""
        if not self.exists(name):
            return None
        rows = self.catalog.load_table(self._check(name)).scan(snapshot_id=at, selected_fields=(SNAPSHOT,)).to_arrow()
        return pc.max(rows[SNAPSHOT]).as_py() if rows.num_rows else None

    def tables(self) -> list[str]:
        """Every table of the lake, as `<schema>.<table>`."""
        return sorted(".".join(ident) for ns in self.catalog.list_namespaces()
                      for ident in self.catalog.list_tables(ns))

    def expire(self, name: str, older_than: datetime, grace: timedelta) -> tuple[int, int]:
        """Expire the snapshots of `name` taken before `older_than` (never the current one), then delete the data
        and manifest files that no snapshot left refers to and that are older than `grace` (a writer's files not
        yet committed are younger: they are never taken). Returns (snapshots expired, files deleted)."""
        import pyarrow.fs as pafs

        table = self.catalog.load_table(self._check(name))
        if any(table.properties.get(k) != v for k, v in TABLE_PROPERTIES.items()):
            with table.transaction() as tx:  # a table made before the properties were set
                tx.set_properties(TABLE_PROPERTIES)
        current = table.current_snapshot()
        cutoff_ms = int(older_than.timestamp() * 1000)
        old = [s.snapshot_id for s in table.snapshots()
               if s.timestamp_ms < cutoff_ms and (current is None or s.snapshot_id != current.snapshot_id)]
        if old:
            table.maintenance.expire_snapshots().by_ids(old).commit()
            table = self.catalog.load_table(name)
        keep = set()  # every file a remaining snapshot refers to (read manifest by manifest: the tables' own
        for snap in table.snapshots():  # inspect.all_files cannot join the manifests of two schemas)
            keep.add(_bare(snap.manifest_list))
            for manifest in snap.manifests(table.io):
                path = _bare(manifest.manifest_path)
                if path in keep:  # snapshots share most of their manifests: each is read once
                    continue
                keep.add(path)
                keep |= {_bare(e.data_file.file_path) for e in manifest.fetch_manifest_entry(table.io)}
        fs, root = pafs.FileSystem.from_uri(table.location())
        young = datetime.now(UTC) - grace
        deleted = 0
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
            if info.type != pafs.FileType.File or not info.path.endswith((".parquet", ".avro")):
                continue
            if _bare(info.path) in keep or info.mtime is None or info.mtime >= young:
                continue
            fs.delete_file(info.path)
            deleted += 1
        return len(old), deleted


def _bare(path: str) -> str:
    """A file's path without its scheme: pyiceberg records URIs, a file system lists paths."""
    return path.split("://", 1)[-1].lstrip("/")
