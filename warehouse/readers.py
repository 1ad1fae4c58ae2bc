"""Read one landing file into a DuckDB staging table of text columns, with its physical row numbers.

Everything is read as text so nothing is lost or silently coerced at read time: typing happens in SQL
afterwards, where a bad value becomes a quarantine row naming file, row and column. A file that cannot be
read at all raises `FileRejected` naming the file and what is wrong.
"""

from __future__ import annotations

import codecs
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import xxhash

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
    elif spec.sep == "whitespace":
        staged = _stage_whitespace(con, path, spec, table)
    else:
        staged = _stage_csv(con, path, spec, table, scan_file(path)[1] if lines is None else lines)
    if staged.rows == 0 and not staged.malformed:
        raise FileRejected(path, "has a header but no data rows" + (f"; {staged.note}" if staged.note else ""))
    return staged


def _utf8_copy(path: Path, encoding: str) -> Path:
    """Transcode to a temporary UTF-8 file, streaming, for encodings DuckDB does not read itself."""
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise FileRejected(path, f"unknown encoding {encoding!r} in the source config") from e
    out = Path(tempfile.mkstemp(suffix=path.suffix, prefix="scorehouse-utf8-")[1])
    try:
        with open(path, encoding=encoding, newline="") as src, open(out, "w", encoding="utf-8", newline="") as dst:
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
        "null_padding=false", f"max_line_size={MAX_LINE}",
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
        raise FileRejected(path, f"no line could be parsed with sep={spec.sep!r}: {rejects[0][2].splitlines()[0]}")
    # Physical row of the k-th good row: k + header lines + skipped lines + rejected or blank lines before it.
    offset = spec.skip_rows + (1 if spec.header else 0)
    # One reject row per error; several errors can name the same line. DuckDB skips blank lines silently.
    skipped = skipped_lines(path, lines, offset, n_good, rejects)
    if not skipped:  # the common case: row = rowid + header + skipped lines + 1, nothing to store or sort
        con.execute(f'ALTER TABLE "{table}_raw" RENAME TO "{table}"')
        return Staged(table, columns, n_good, [], row_offset=offset + 1)
    con.execute('CREATE OR REPLACE TEMP TABLE "_rej" (j BIGINT, g BIGINT)')
    if lines:
        # g = good rows before the j-th rejected line; as-of join finds how many rejects precede row k.
        con.executemany('INSERT INTO "_rej" VALUES (?, ?)', skip_table(skipped, offset))
    con.execute(
        f'''CREATE TEMP TABLE "{table}" AS
        WITH s AS (SELECT *, rowid + 1 AS _k FROM "{table}_raw")
        SELECT s.* EXCLUDE (_k), s._k + {offset} + coalesce(r.j, 0) AS {ROW}
        FROM s ASOF LEFT JOIN "_rej" r ON s._k > r.g ORDER BY s._k'''
    )
    con.execute(f'DROP TABLE "{table}_raw"; DROP TABLE "_rej"')
    seen: dict[int, tuple[int, str, str]] = {}
    for line, _etype, msg, raw in rejects:
        seen.setdefault(int(line), (int(line), f"malformed line: {_first_line(msg)}", raw or ""))
    return Staged(table, columns, n_good, list(seen.values()))


def scan_file(path: Path, chunk_size: int = 1 << 24) -> tuple[str, int]:
    """One streaming pass: the file's checksum (XXH3-128, for the ledger: it tells a changed file from a
    touched one, no security role) and its number of lines. Comparing the lines with what DuckDB read tells
    whether it skipped blank lines, which only then are looked for."""
    digest, newlines, last = xxhash.xxh3_128(), 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return digest.hexdigest(), newlines + (0 if last == b"\n" else 1)


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
            delim='\x1f', quote='', escape='', header=false, skip={spec.skip_rows}, all_varchar=true)"""
        )
    except duckdb.Error as e:
        raise FileRejected(path, f"cannot be read as text: {_first_line(e)}") from e
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
        raise FileRejected(path, f"is not a readable spreadsheet ({type(e).__name__}: {_first_line(e)})") from e
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


def _csv_problem(path: Path, e: Exception) -> str:
    """DuckDB's reading error in a user's words: the first line, or which row is too long."""
    if "Maximum line size" not in str(e) and "sniffing" not in str(e):
        return _first_line(e)
    with open(path, "rb") as f:
        row = next((i for i, line in enumerate(f, start=1) if len(line) > MAX_LINE), None)
    return (f"row {row} is longer than {MAX_LINE:,} bytes: a field with no closing quote, or not a CSV file"
            if row else _first_line(e))


def skipped_lines(path: Path, lines: int, offset: int, n_read: int, rejects: list[tuple]) -> list[int]:
    """Lines after the header that hold no row read: rejected lines, and blank lines when the counts show
    some (a file whose lines = header + rows read + rejected lines has none)."""
    rejected = {int(r[0]) for r in rejects}
    if lines <= offset + n_read + len(rejected):
        return sorted(rejected)
    return sorted(rejected | {b for b in blank_lines(path) if b > offset})


def skip_table(skipped: list[int], offset: int) -> list[tuple[int, int]]:
    """Rows (j, g) for the as-of join that turns the k-th row read into its physical row number:
    g = rows read before the j-th skipped line; row k lies after the largest j with g < k, so its
    physical row is k + offset + j. Consecutive skipped lines share g: keep the largest j."""
    by_g: dict[int, int] = {}
    for j, line in enumerate(sorted(skipped), start=1):
        by_g[line - offset - j] = j
    return sorted((j, g) for g, j in by_g.items())


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
