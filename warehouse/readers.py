"""Read one landing file into a DuckDB staging table of text columns, with its physical row numbers.

Everything is read as text so nothing is lost or silently coerced at read time: typing happens in SQL
afterwards, where a bad value becomes a quarantine row naming file, row and column. A file that cannot be
read at all raises `FileRejected` naming the file and what is wrong.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pandas as pd
import xxhash

from warehouse.messages import first_line, looks_like_data
from warehouse.sources import ReadSpec

NATIVE_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "latin-1": "latin-1",
                    "latin1": "latin-1", "iso-8859-1": "latin-1"}
ROW = "_source_row"


class FileRejected(ValueError):
    """The whole file is unreadable; nothing from it is loaded."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


@dataclass
class Staged:
    table: str  # temp table name: source columns as VARCHAR (plus _source_row when it had to be stored)
    columns: list[str]  # source column names, in file order
    rows: int  # data rows staged (readable rows)
    malformed: list[tuple[int, str, str]]  # (row, reason, raw line) for lines the parser rejected
    row_offset: int | None = None  # physical row = rowid + row_offset, when no line was skipped
    note: str = ""  # what a user should know when the rows do not fit (e.g. which sheet was read)

    def relation(self) -> str:
        """The staged rows with their physical row number as column _source_row."""
        if self.row_offset is None:
            return f'"{self.table}"'
        return f'(SELECT *, rowid + {self.row_offset} AS {ROW} FROM "{self.table}")'

    def row_sql(self, alias: str) -> str:
        """SQL for the physical row number of a staged row; computed, not stored, in the common case."""
        if self.row_offset is None:
            return f"{alias}.{ROW}"
        return f"({alias}.rowid + {self.row_offset})"


def file_format(path: Path, spec: ReadSpec) -> str:
    if spec.format != "auto":
        return spec.format
    return "xlsx" if path.suffix.lower() in (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods") else "csv"


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, spec: ReadSpec, table: str,
               lines: int | None = None, sheet_hint: str | None = None) -> Staged:
    """Stage a file's rows as text. `sheet_hint`: the contract table, the sheet to prefer in a workbook of
    several sheets when the source config names none."""
    if not path.exists():
        raise FileRejected(path, "file not found")
    if path.stat().st_size == 0:
        raise FileRejected(path, "file is empty (0 bytes)")
    con.execute(f'DROP TABLE IF EXISTS "{table}"')
    if file_format(path, spec) == "xlsx":
        staged = _stage_xlsx(con, path, spec, table, sheet_hint)
        check_header(path, staged.columns if spec.header and not spec.columns else None)
    else:
        spec = prepare(path, spec)
        if spec.sep == "whitespace":
            staged = _stage_whitespace(con, path, spec, table)
        else:
            staged = _stage_csv(con, path, spec, table, scan_file(path).lines if lines is None else lines)
    if staged.rows == 0 and not staged.malformed:
        raise FileRejected(path, "has a header but no data rows" + (f"; {staged.note}" if staged.note else ""))
    return staged


def _utf8_copy(path: Path, encoding: str) -> Path:
    """Transcode to a temporary UTF-8 file, streaming, for encodings DuckDB does not read itself."""
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise FileRejected(path, f"unknown encoding {encoding!r} in the source config") from e
    out = Path(tempfile.mkstemp(suffix=".csv", prefix="scorehouse-utf8-")[1])
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rt", encoding=encoding, newline="") as src, \
                open(out, "w", encoding="utf-8", newline="") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    except UnicodeDecodeError as e:
        out.unlink(missing_ok=True)
        raise FileRejected(path, f"is not valid {encoding} (byte {e.start}); check `encoding`") from e
    return out


def _csv_args(spec: ReadSpec, encoding: str, types: dict[str, str] | None = None,
              columns: list[str] | None = None) -> str:
    """read_csv arguments. With `types`, the named columns are parsed by DuckDB (a value that does not
    parse makes a reject naming line and column) and the rest stay text; without, everything is text."""
    q = spec.quote.replace("'", "''") if spec.quote else ""
    sep = spec.sep.replace("'", "''")
    if types is not None and columns is not None:
        typing = "columns={" + ", ".join(
            f"'{c.replace(chr(39), chr(39) * 2)}': '{types.get(c, 'VARCHAR')}'" for c in columns) + "}"
        if spec.decimal != ".":
            typing += f", decimal_separator='{spec.decimal}'"
        nulls = ", ".join("'" + v.replace("'", "''") + "'" for v in spec.na_values)
        typing += f", nullstr=[{nulls}]"
    else:
        typing = "all_varchar=true"
    args = [
        typing, f"delim='{sep}'", f"quote='{q}'", f"escape='{q}'", f"header={str(spec.header).lower()}",
        f"skip={spec.skip_rows}", f"encoding='{encoding}'", "ignore_errors=true", "store_rejects=true",
        "null_padding=false", f"max_line_size={MAX_LINE}", f"buffer_size={BUFFER}",
        f"compression='{'gzip' if spec.compression == 'gzip' else 'none'}'",
    ]
    if spec.columns and types is None:
        names = ", ".join("'" + c.replace("'", "''") + "'" for c in spec.columns)
        args.append(f"names=[{names}]")
    return ", ".join(args)


@dataclass
class DirectCsv:
    """A CSV file read in the same query that maps it: no staging copy (the path for big files)."""

    path: Path  # the file DuckDB reads (a UTF-8 copy for other encodings)
    spec: ReadSpec
    columns: list[str]
    tmp: Path | None = None

    def relation(self, types: dict[str, str]) -> str:
        lit = str(self.path).replace("'", "''")
        return f"read_csv('{lit}', {_csv_args(self.spec, 'utf-8' if self.tmp else _native(self.spec), types, self.columns)})"

    def close(self) -> None:
        if self.tmp:
            self.tmp.unlink(missing_ok=True)


def _native(spec: ReadSpec) -> str:
    return NATIVE_ENCODINGS.get(spec.encoding.lower(), "utf-8")


def open_direct_csv(con: duckdb.DuckDBPyConnection, path: Path, spec: ReadSpec) -> DirectCsv:
    """Sniff the header of a CSV to be read directly; raises FileRejected when it cannot be read."""
    if not path.exists():
        raise FileRejected(path, "file not found")
    if path.stat().st_size == 0:
        raise FileRejected(path, "file is empty (0 bytes)")
    src, tmp = path, None
    if spec.encoding.lower() not in NATIVE_ENCODINGS:
        src = tmp = _utf8_copy(path, spec.encoding)
    lit = str(src).replace("'", "''")
    try:
        cols = con.execute(f"DESCRIBE SELECT * FROM read_csv('{lit}', {_csv_args(spec, 'utf-8' if tmp else _native(spec))})").fetchall()
    except duckdb.Error as e:
        if tmp:
            tmp.unlink(missing_ok=True)
        raise FileRejected(path, f"cannot be read as CSV with sep={spec.sep!r}: {_csv_problem(path, e)}") from e
    names = list(spec.columns) or [c[0] for c in cols]
    if spec.columns and len(spec.columns) != len(cols):
        raise FileRejected(path, f"`columns` names {len(spec.columns)} columns, the file has {len(cols)}")
    return DirectCsv(src, spec, names, tmp)


def take_rejects(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(line, column_name, error_type, error_message, csv_line) of the last read, then forget them."""
    rows = con.execute(
        "SELECT line, column_name, error_type, error_message, csv_line FROM reject_errors ORDER BY line, column_idx"
    ).fetchall()
    con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    return rows


def _stage_csv(con: duckdb.DuckDBPyConnection, path: Path, spec: ReadSpec, table: str, lines: int) -> Staged:
    enc = spec.encoding.lower()
    src, tmp = path, None
    if enc not in NATIVE_ENCODINGS:
        src = tmp = _utf8_copy(path, spec.encoding)
        enc = "utf-8"
    try:
        lit = str(src).replace("'", "''")
        try:
            con.execute(
                f'CREATE TEMP TABLE "{table}_raw" AS SELECT * FROM read_csv(\'{lit}\', {_csv_args(spec, NATIVE_ENCODINGS.get(enc, enc))})'
            )
        except duckdb.Error as e:
            raise FileRejected(path, f"cannot be read as CSV with sep={spec.sep!r}: {_csv_problem(path, e)}") from e
        rejects = con.execute(
            "SELECT line, error_type, error_message, csv_line FROM reject_errors ORDER BY line"
        ).fetchall()
        con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    finally:
        if tmp:
            tmp.unlink(missing_ok=True)
    columns = [r[0] for r in con.execute(f'DESCRIBE "{table}_raw"').fetchall()]
    n_good = con.execute(f'SELECT count(*) FROM "{table}_raw"').fetchone()[0]
    bad_unicode = [r for r in rejects if "UNICODE" in f"{r[1]} {r[2]}".upper() or "ENCODING" in str(r[1]).upper()]
    if bad_unicode:
        raise FileRejected(
            path, f"is not valid {spec.encoding} text (line {bad_unicode[0][0]}); set `encoding:` in the source config"
        )
    if rejects and n_good == 0:
        raise FileRejected(path, f"no line could be parsed with sep={spec.sep!r}: {first_line(rejects[0][2])}")
    # Physical row of the k-th good row: k + header lines + skipped lines + rejected or blank lines before it.
    offset = spec.skip_rows + (1 if spec.header else 0)
    # One reject row per error; several errors can name the same line. DuckDB skips blank lines silently.
    rows = row_map(path, spec, lines, offset, n_good, rejects)
    if not rows.pairs:  # the common case: row = rowid + header + skipped lines + 1, nothing to store or sort
        con.execute(f'ALTER TABLE "{table}_raw" RENAME TO "{table}"')
        return Staged(table, columns, n_good, _malformed(rejects, rows), row_offset=offset + 1)
    con.execute('CREATE OR REPLACE TEMP TABLE "_rej" (j BIGINT, g BIGINT)')
    # g = good rows before the j-th skipped line; as-of join finds how many lines were skipped before row k.
    con.executemany('INSERT INTO "_rej" VALUES (?, ?)', rows.pairs)
    con.execute(
        f'''CREATE TEMP TABLE "{table}" AS
        WITH s AS (SELECT *, rowid + 1 AS _k FROM "{table}_raw")
        SELECT s.* EXCLUDE (_k), s._k + {offset} + coalesce(r.j, 0) AS {ROW}
        FROM s ASOF LEFT JOIN "_rej" r ON s._k > r.g ORDER BY s._k'''
    )
    con.execute(f'DROP TABLE "{table}_raw"; DROP TABLE "_rej"')
    return Staged(table, columns, n_good, _malformed(rejects, rows))


def _malformed(rejects: list[tuple], rows: RowMap) -> list[tuple[int, str, str]]:
    """(physical row, reason, raw line) per rejected line: one per line though DuckDB may report several."""
    seen: dict[int, tuple[int, str, str]] = {}
    for line, _etype, msg, raw in rejects:
        row = rows.physical(int(line))
        seen.setdefault(row, (row, f"malformed line: {first_line(msg)}", raw or ""))
    return list(seen.values())


@dataclass(frozen=True)
class FileScan:
    checksum: str  # XXH3-128 of the bytes as delivered
    lines: int  # physical lines of the (decompressed) text
    terminated: bool  # the last line ends with a line break (a cut-off copy usually does not)


def scan_file(path: Path, chunk_size: int = 1 << 24) -> FileScan:
    """One streaming pass: the file's checksum (XXH3-128, for the ledger: it tells a changed file from a
    touched one, no security role), its number of lines and whether the last one is terminated. Comparing the
    lines with what DuckDB read tells whether it skipped blank lines, which only then are looked for."""
    digest, newlines, last = xxhash.xxh3_128(), 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    if is_gzip(path):
        digest_hex = digest.hexdigest()
        newlines, last = 0, b"\n"
        with gzip.open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
        return FileScan(digest_hex, newlines + (0 if last == b"\n" else 1), last == b"\n")
    return FileScan(digest.hexdigest(), newlines + (0 if last == b"\n" else 1), last == b"\n")


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def sniff(path: Path, spec: ReadSpec) -> str:
    """What a delimited-text file really is, from its first bytes: 'gzip' or 'none' (the compression to read it
    with), or FileRejected saying what the file is and what to set."""
    with open(path, "rb") as f:
        head = f.read(8192)
    if head.startswith(GZIP_MAGIC):
        if spec.compression == "none":
            raise FileRejected(path, "is gzip-compressed while the source config says `compression: none`")
        if spec.compression == "auto" and not path.name.lower().endswith(".gz"):
            raise FileRejected(path, "is gzip-compressed, not plain text: name it *.gz or set `compression: gzip` "
                               "in the source config")
        return "gzip"
    if spec.compression == "gzip":
        raise FileRejected(path, "is not gzip-compressed although the source config says `compression: gzip`")
    if head.startswith(b"PK\x03\x04"):
        raise FileRejected(path, "is a ZIP archive (a zipped export, or an .xlsx workbook under another name): "
                           "unzip it into the landing folder, or set `format: xlsx` if it is a workbook")
    if head.startswith(b"%PDF"):
        raise FileRejected(path, "is a PDF document, not a data export: ask for the CSV or Excel export")
    if head.startswith(OLE_MAGIC):
        raise FileRejected(path, "is an old-style Office file (.xls or .doc): save it as .xlsx or CSV")
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
    if utf16 and not spec.encoding.lower().replace("_", "-").startswith("utf-16"):
        raise FileRejected(path, "is UTF-16 text (it starts with a UTF-16 byte-order mark): set `encoding: utf-16` "
                           "in the source config")
    if b"\x00" in head and not spec.encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32")):
        if head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4:
            raise FileRejected(path, "looks like UTF-16 text without a byte-order mark: set `encoding: utf-16-le` "
                               "(or utf-16-be) in the source config")
        raise FileRejected(path, "is a binary file, not delimited text")
    return "none"


def prepare(path: Path, spec: ReadSpec) -> ReadSpec:
    """A delimited-text file checked before DuckDB reads it: what it is (FileRejected for a compressed,
    binary, PDF or UTF-16 file the config does not expect) and a header without repeated names. Returns the
    spec with the compression to read it with."""
    if spec.compression not in ("gzip", "none"):
        spec = replace(spec, compression=sniff(path, spec))
    check_header(path, header_fields(path, spec, spec.compression))
    return spec


def _text_stream(path: Path, spec: ReadSpec, compression: str):
    raw = gzip.open(path, "rb") if compression == "gzip" else open(path, "rb")  # noqa: SIM115 - wrapped below
    return io.TextIOWrapper(raw, encoding=spec.encoding, errors="replace", newline="")


def header_fields(path: Path, spec: ReadSpec, compression: str = "none") -> list[str] | None:
    """The header line's fields as the file has them (before DuckDB renames duplicates), or None without one."""
    if not spec.header or spec.sep == "whitespace":
        return None
    with _text_stream(path, spec, compression) as f:
        for _ in range(spec.skip_rows):
            f.readline()
        reader = csv.reader(f, delimiter=spec.sep, quotechar=spec.quote or '"',
                            quoting=csv.QUOTE_MINIMAL if spec.quote else csv.QUOTE_NONE)
        return next(reader, [])


def check_header(path: Path, names: list[str] | None) -> None:
    """Two columns under one name would load one and silently rename the other (`amount_1`): refuse the file."""
    if not names:
        return
    seen: dict[str, int] = {}
    for i, n in enumerate(names, start=1):
        k = n.strip().lower()
        if k in seen and k:
            if looks_like_data(names):
                raise FileRejected(path, "the first line looks like data, not a header, and repeats a value: set "
                                   "`header: false` and `columns:` in the source config")
            raise FileRejected(path, f"columns {seen[k]} and {i} are both named {n.strip()!r}: rename one in the "
                               "export, or name the columns with `columns:` in the source config")
        seen.setdefault(k, i)


def logical_starts(path: Path, spec: ReadSpec, compression: str) -> list[int]:
    """Physical line on which each logical line starts: [0] for line 1, ... A logical line is a record (a
    quoted field may hold line breaks) or a blank line; DuckDB numbers its rejects by logical line."""
    starts = []
    with _text_stream(path, spec, compression) as f:
        for _ in range(spec.skip_rows):
            f.readline()
            starts.append(len(starts) + 1)
        reader = csv.reader(f, delimiter=spec.sep, quotechar=spec.quote or '"',
                            quoting=csv.QUOTE_MINIMAL if spec.quote else csv.QUOTE_NONE)
        prev = spec.skip_rows
        for record in reader:
            starts.append(prev + 1 if record else -(prev + 1))  # blank lines: negative, DuckDB reads no row there
            prev = spec.skip_rows + reader.line_num
    return starts


def blank_lines(path: Path, chunk_size: int = 1 << 24) -> list[int]:
    """1-based numbers of the empty lines, which DuckDB's reader skips without counting."""
    blanks: set[int] = set()
    newlines, tail = 0, b""  # newlines seen before `tail`, the last bytes kept from the previous chunk
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            buf = tail + chunk
            for sep in (b"\n\n", b"\n\r\n"):
                for p in _find_all(buf, sep):
                    blanks.add(newlines + buf.count(b"\n", 0, p + 1) + 1)
            tail = buf[-2:]
            newlines += buf.count(b"\n", 0, len(buf) - len(tail))
    return sorted(blanks)


def _find_all(buf: bytes, sep: bytes):
    pos = buf.find(sep)
    while pos != -1:
        yield pos
        pos = buf.find(sep, pos + 1)


def _stage_whitespace(con: duckdb.DuckDBPyConnection, path: Path, spec: ReadSpec, table: str) -> Staged:
    """Files whose fields are separated by runs of blanks (e.g. CDNOW's .txt logs)."""
    src, tmp = path, None
    if spec.encoding.lower() not in ("utf-8", "utf8"):
        src = tmp = _utf8_copy(path, spec.encoding)
    lit = str(src).replace("'", "''")
    try:
        con.execute(
            f"""CREATE TEMP TABLE "{table}_lines" AS SELECT line FROM read_csv('{lit}', columns={{'line': 'VARCHAR'}},
            delim='\x1f', quote='', escape='', header=false, skip={spec.skip_rows}, all_varchar=true,
            compression='{'gzip' if spec.compression == 'gzip' and not tmp else 'none'}')"""
        )
    except duckdb.Error as e:
        raise FileRejected(path, f"cannot be read as text: {first_line(e)}") from e
    finally:
        if tmp:
            tmp.unlink(missing_ok=True)
    con.execute(
        f'CREATE TEMP TABLE "{table}_split" AS SELECT rowid + 1 AS _k, line, '
        f"regexp_split_to_array(trim(line), '\\s+') AS f FROM \"{table}_lines\" WHERE trim(line) <> ''"
    )
    con.execute(f'DROP TABLE "{table}_lines"')
    header_fields: list[str] = []
    if spec.header:
        row = con.execute(f'SELECT f FROM "{table}_split" ORDER BY _k LIMIT 1').fetchone()
        header_fields = list(row[0]) if row else []
        con.execute(f'DELETE FROM "{table}_split" WHERE _k = (SELECT min(_k) FROM "{table}_split")')
    names = list(spec.columns) or header_fields
    width = con.execute(f'SELECT max(len(f)) FROM "{table}_split"').fetchone()[0] or 0
    if not names:
        names = [f"column{i}" for i in range(width)]
    cols = ", ".join(f'f[{i + 1}] AS "{n}"' for i, n in enumerate(names))
    con.execute(
        f'CREATE TEMP TABLE "{table}" AS SELECT {cols}, _k + {spec.skip_rows} AS {ROW}, len(f) AS _nf, '
        f'line AS _line FROM "{table}_split" ORDER BY _k'
    )
    con.execute(f'DROP TABLE "{table}_split"')
    malformed = [
        (int(r[0]), f"malformed line: {r[1]} fields, expected {len(names)}", r[2])
        for r in con.execute(f'SELECT {ROW}, _nf, _line FROM "{table}" WHERE _nf <> {len(names)}').fetchall()
    ]
    con.execute(f'DELETE FROM "{table}" WHERE _nf <> {len(names)}')
    con.execute(f'ALTER TABLE "{table}" DROP COLUMN _nf; ALTER TABLE "{table}" DROP COLUMN _line')
    n = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return Staged(table, names, n, malformed)


def _cell_text(v) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return str(v)


def _stage_xlsx(con: duckdb.DuckDBPyConnection, path: Path, spec: ReadSpec, table: str,
                sheet_hint: str | None = None) -> Staged:
    from python_calamine import CalamineWorkbook  # calamine: streaming Rust reader, far leaner than openpyxl

    with open(path, "rb") as f:
        if f.read(8) == OLE_MAGIC and b"E\x00n\x00c\x00r\x00y\x00p\x00t\x00e\x00d\x00" in f.read(1 << 20):
            raise FileRejected(path, "is a password-protected workbook: export it again without a password")
    note = ""
    try:
        wb = CalamineWorkbook.from_path(str(path))
        sheets = wb.sheet_names
        if spec.sheet is None:
            named = [s for s in sheets if sheet_hint and s.strip().lower() in (sheet_hint, sheet_hint.rstrip("s"))]
            sheet = wb.get_sheet_by_name(named[0]) if named else wb.get_sheet_by_index(0)
            if len(sheets) > 1:
                note = (f"the workbook has sheets {sheets} and sheet {named[0] if named else sheets[0]!r} was read "
                        "(set `sheet:` in the source config to read another)")
        elif isinstance(spec.sheet, int):
            sheet = wb.get_sheet_by_index(spec.sheet)
        elif spec.sheet in sheets:
            sheet = wb.get_sheet_by_name(spec.sheet)
        else:
            raise FileRejected(path, f"has no sheet {spec.sheet!r}; sheets are {sheets}")
        rows = sheet.to_python(skip_empty_area=False)
    except FileRejected:
        raise
    except Exception as e:  # calamine raises its own error types for zip/xml damage
        raise FileRejected(path, f"is not a readable spreadsheet ({type(e).__name__}: {first_line(e)})") from e
    rows = rows[spec.skip_rows:]
    first = spec.skip_rows + 1  # physical row number of rows[0]
    if spec.header:
        if not rows:
            raise FileRejected(path, "sheet is empty")
        names = [_cell_text(v) or f"column{i}" for i, v in enumerate(rows[0])]
        rows, first = rows[1:], first + 1
    else:
        names = [f"column{i}" for i in range(max((len(r) for r in rows), default=0))]
    names = list(spec.columns) or names
    width = len(names)
    data = {n: [] for n in names}
    row_numbers = []
    for i, r in enumerate(rows):
        cells = [_cell_text(v) for v in r]
        if not any(c is not None for c in cells):
            continue  # blank spreadsheet rows are layout, not data
        cells = (cells + [None] * width)[:width]
        for n, c in zip(names, cells, strict=True):
            data[n].append(c)
        row_numbers.append(first + i)
    frame = pd.DataFrame(data, dtype="object")
    frame[ROW] = pd.Series(row_numbers, dtype="int64")
    con.register("_xlsx_frame", frame)
    con.execute(f'CREATE TEMP TABLE "{table}" AS SELECT * FROM _xlsx_frame')
    con.unregister("_xlsx_frame")
    for n in names:  # object columns of None arrive as INTEGER; the contract wants text
        con.execute(f'ALTER TABLE "{table}" ALTER "{n}" TYPE VARCHAR')
    return Staged(table, names, len(row_numbers), [], note=note)


OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # an encrypted .xlsx is an OLE file holding "EncryptedPackage"
MAX_LINE = 10_000_000  # bytes (DuckDB max_line_size): a longer line is a field with no closing quote
# DuckDB's read buffer, by default 16 x max_line_size (160 MB): a compressed file cannot be read in part, so every
# bind of a .gz file (the sniff of its header, each query over it) decompressed 160 MB first. Two lines' worth is
# what a buffer must hold; big plain files read as fast or faster in the smaller buffers (benchmarks/RESULTS.md).
BUFFER = 2 * MAX_LINE


def _csv_problem(path: Path, e: Exception) -> str:
    """DuckDB's reading error in a user's words: the first line, or which row is too long."""
    if "Maximum line size" not in str(e) and "sniffing" not in str(e):
        return first_line(e)
    with open(path, "rb") as f:
        row = next((i for i, line in enumerate(f, start=1) if len(line) > MAX_LINE), None)
    return (f"row {row} is longer than {MAX_LINE:,} bytes: a field with no closing quote, or not a CSV file"
            if row else first_line(e))


@dataclass(frozen=True)
class RowMap:
    """How DuckDB's numbering becomes the physical line an editor shows: `pairs` for the as-of join over rows
    read (see skip_table; empty when row k is simply line k + offset) and the physical line of each logical
    line DuckDB names in its rejects (they differ only after a quoted field that holds line breaks)."""

    pairs: list[tuple[int, int]]
    starts: list[int] | None = None  # physical start of logical line n at [n - 1], when they differ

    def physical(self, logical: int) -> int:
        return abs(self.starts[logical - 1]) if self.starts and 0 < logical <= len(self.starts) else logical


def row_map(path: Path, spec: ReadSpec, lines: int, offset: int, n_read: int, rejects: list[tuple]) -> RowMap:
    """Lines after the header that hold no row read: rejected lines, and blank lines when the counts show
    some (a file whose lines = header + rows read + rejected lines has none); and, when even those do not
    account for every line, quoted fields spanning lines, found by reading the file as CSV records."""
    rejected = {int(r[0]) for r in rejects}
    if lines <= offset + n_read + len(rejected):
        return RowMap(skip_table(sorted(rejected), offset))
    blanks = {b for b in blank_lines(path) if b > offset} if spec.compression != "gzip" else set()
    if lines <= offset + n_read + len(rejected | blanks):
        return RowMap(skip_table(sorted(rejected | blanks), offset))
    starts = logical_starts(path, spec, spec.compression)
    pairs, extra = [], 0
    k = 0  # rows read so far
    for n, start in enumerate(starts, start=1):
        if n <= offset or n in rejected or start < 0:
            continue
        k += 1
        if start - k - offset != extra:
            extra = start - k - offset
            pairs.append((extra, k - 1))
    return RowMap(pairs, starts)


def skip_table(skipped: list[int], offset: int) -> list[tuple[int, int]]:
    """Rows (j, g) for the as-of join that turns the k-th row read into its physical row number:
    g = rows read before the j-th skipped line; row k lies after the largest j with g < k, so its
    physical row is k + offset + j. Consecutive skipped lines share g: keep the largest j."""
    by_g: dict[int, int] = {}
    for j, line in enumerate(sorted(skipped), start=1):
        by_g[line - offset - j] = j
    return sorted((j, g) for g, j in by_g.items())

