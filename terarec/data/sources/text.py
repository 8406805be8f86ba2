"""Delimited-text reading shared by the loaders: pyarrow.csv first, then a second look for the bad line.

Files are parsed by ``pyarrow.csv`` (multi-threaded, typed); only when that fails, or a record
is out of range, is the file looked at again to find which line is at fault, so the error
names file and line and ``--on-bad-line skip`` can drop exactly that record.
"""

from __future__ import annotations

import contextlib
import csv as pycsv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from terarec.data.errors import BadLineCounter, DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
_DELIMITER_NAMES = {"\t": "tabs", ",": "commas", " ": "spaces", "|": "'|'", ";": "';'"}
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
_MIN_BLOCK_BYTES = 1 << 20  # pyarrow.csv's own default
_SCAN_BYTES = 1 << 24
INT64_LIMIT = 2**63


@dataclass
class TextScan:
    """What one pass over a text file's bytes tells: its lines and how long the longest is.

    Args:
        lines: the number of lines (a last line without a line end counts).
        ends_with_newline: the last byte is a line end (or the file is empty).
        longest: bytes in the longest line, without its line end.
    """

    lines: int
    ends_with_newline: bool
    longest: int

    @property
    def block_size(self) -> int:
        """A pyarrow.csv block size that holds the longest line (one line may not straddle two blocks)."""
        return max(_MIN_BLOCK_BYTES, 2 * self.longest + 64)


def scan_text(path: Path, data: bytes | None = None) -> TextScan:
    """Count the lines of a text file (decompressed by extension) and measure the longest, in one pass."""
    newlines = longest = run = total = 0
    last = b""

    def blocks():
        if data is not None:
            yield data
            return
        with pa.input_stream(str(path), compression="detect") as stream:
            while block := stream.read(_SCAN_BYTES):
                yield block

    for block in blocks():
        array = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(array == 10)
        if ends.size:
            gaps = np.diff(ends) - 1
            longest = max(longest, run + int(ends[0]), int(gaps.max(initial=0)))
            run = array.size - int(ends[-1]) - 1
        else:
            run += array.size
        newlines += int(ends.size)
        total += len(block)
        last = block[-1:]
    longest = max(longest, run)
    ends_with_newline = total == 0 or last == b"\n"
    return TextScan(newlines + (0 if ends_with_newline else 1), ends_with_newline, longest)


_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".br", ".snappy")


def ends_with_newline(path: Path) -> bool | None:
    """Whether an uncompressed file's last byte is a line end (None for a compressed file: not
    known without reading it all)."""
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return None
    size = path.stat().st_size
    if size == 0:
        return True
    with open(path, "rb") as file:
        file.seek(size - 1)
        return file.read(1) == b"\n"


def warn_unterminated(scan: TextScan, counter: BadLineCounter) -> None:
    """Warn, naming the last line, when a file does not end with a line end (it may have been cut short)."""
    if not scan.ends_with_newline:
        counter.warn(
            scan.lines,
            "the file does not end with a line end: this last line may have been cut short "
            "(a copy or download that stopped part way); check it",
        )


@contextlib.contextmanager
def quiet_decode_errors():
    """Keep pyarrow.csv's "Exception ignored" reports off the terminal.

    pyarrow decodes an invalid row's text as UTF-8 before calling the invalid-row handler;
    for bytes that are not UTF-8 that decode fails inside pyarrow, is printed as
    "Exception ignored ..." and the read then fails with an ArrowInvalid, which the callers
    turn into a DataError naming the file and line. The report itself is noise.
    """
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def unreadable_lines(raw: bytes, quoting: bool) -> list[tuple[int, str]]:
    """(1-based line, reason) of the lines pyarrow.csv cannot be trusted with: bytes that are
    not UTF-8, a carriage return inside a line (a line end to pyarrow, not to us) and, in a
    quoted format, an odd number of quotes (an unclosed quote would swallow the lines after it).
    """
    array = np.frombuffer(raw, dtype=np.uint8)
    line_ends = np.flatnonzero(array == 10)
    num_lines = int(line_ends.size) + 1
    reasons: dict[int, str] = {}

    def line_of(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(line_ends, positions)  # 0-based

    following = np.append(array[1:], 10)  # a \r that ends the file is harmless: as if a \n followed
    for line in np.unique(line_of(np.flatnonzero((array == 13) & (following != 10)))).tolist():
        reasons[line] = "a carriage return inside the line (line ends are \\n or \\r\\n)"
    if quoting:
        quotes = np.bincount(line_of(np.flatnonzero(array == 34)), minlength=num_lines)
        for line in np.flatnonzero(quotes % 2).tolist():
            reasons.setdefault(line, "an unclosed quote (a quoted value may not span lines)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        # Line by line from the first bad byte on: linear however many lines are bad.
        lines = raw.split(b"\n")
        for line in range(int(line_of(np.array([error.start]))[0]), len(lines)):
            try:
                lines[line].decode("utf-8")
            except UnicodeDecodeError as bad:
                reasons.setdefault(line, f"not UTF-8 text (byte {lines[line][bad.start]:#04x} at column "
                                         f"{bad.start + 1}; a binary file?)")
    return [(line + 1, reason) for line, reason in sorted(reasons.items())]


def blank_lines(raw: bytes, lines: list[int]) -> bytes:
    """``raw`` with the given 1-based lines emptied (line numbers of the others unchanged)."""
    if not lines:
        return raw
    parts = raw.split(b"\n")
    for line in lines:
        parts[line - 1] = b""
    return b"\n".join(parts)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed by extension."""
    with pa.input_stream(str(path), compression="detect") as stream:
        return stream.read()


def require_path(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise a DataError saying it does not exist and what was expected."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file or folder (looked for {what})", path=path)
    return path


def check_not_empty(path: Path) -> None:
    """Raise DataError("empty file") when the file (decompressed, for .gz and the like) holds no bytes."""
    if path.is_dir():
        raise DataError("expected a file, got a folder", path=path)
    with pa.input_stream(str(path), compression="detect") as stream:
        if not stream.read(1):
            raise DataError("empty file", path=path)


def read_text(path: Path) -> str:
    """The whole file as text: UTF-8, or Latin-1 where it is not valid UTF-8 (older MovieLens files)."""
    with pa.input_stream(str(path), compression="detect") as stream:
        raw = stream.read()
    if not raw:
        raise DataError("empty file", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.removeprefix("\ufeff")


def text_lines(path: Path, counter: BadLineCounter | None = None) -> list[str]:
    """The file's lines, without line ends (only '\\n' and '\\r\\n' end a line; a Latin-1 \\x85 does not).

    With a ``counter``, a file whose last line has no line end is warned about through it.
    """
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif counter is not None:
        warn_unterminated(TextScan(len(lines), False, 0), counter)
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_header(path: Path, delimiter: str, quoting: bool) -> list[str]:
    """The column names on the first line of a delimited file."""
    with pa.input_stream(str(path), compression="detect") as stream:
        head = b""
        while b"\n" not in head:
            block = stream.read(1 << 16)
            if not block:
                break
            head += block
    if not head.strip():
        raise DataError("empty file", path=path)
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").removeprefix("\ufeff")
    return _split_header(line, delimiter, quoting, path)


def _split_header(line: str, delimiter: str, quoting: bool, path: Path) -> list[str]:
    try:
        names = next(pycsv.reader([line], delimiter=delimiter, strict=True)) if quoting else line.split(delimiter)
    except pycsv.Error as error:
        raise DataError(f"cannot read the header line: {error}", path=path, line=1) from error
    return [name.strip() for name in names]


def delimiter_name(delimiter: str) -> str:
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


@dataclass
class LineMap:
    """Maps row numbers of a parsed table back to 1-based line numbers of the file.

    Args:
        first_line: the line of row 0 (2 after a one-line header).
        skipped: lines the parser dropped (wrong field count), which hold no row.
    """

    first_line: int = 1
    skipped: list[int] = field(default_factory=list)

    def lines(self, rows: np.ndarray | int) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        skipped = np.unique(np.asarray(self.skipped, dtype=np.int64))
        shifted = skipped - np.arange(skipped.size) - self.first_line  # rows that precede each skipped line
        return self.first_line + rows + np.searchsorted(shifted, rows, side="right")


class Problems:
    """Malformed records of one table, applied through a BadLineCounter in line order.

    Rows flagged here (and blank rows) are removed by :meth:`apply`; under the "error" policy
    the first malformed line of the file raises a DataError naming the file, line and field.
    """

    def __init__(self, counter: BadLineCounter, line_map: LineMap, row_offset: int = 0) -> None:
        self.counter = counter
        self.line_map = line_map
        self.row_offset = row_offset
        self._entries: list[tuple[int, int, str, str | None]] = []  # (line, row or -1, message, field)
        self._drop: list[np.ndarray] = []

    def add_rows(self, rows: np.ndarray, message: str | Callable[[int], str], field: str | None = None) -> None:
        """Flag table rows; ``message`` is a string or a function of the row giving one."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        lines = self.line_map.lines(rows + self.row_offset)
        for row, line in zip(rows.tolist(), lines.tolist()):
            text = message(row) if callable(message) else message
            self._entries.append((line, row, text, field))

    def add_mask(self, mask: np.ndarray, message: str | Callable[[int], str], field: str | None = None) -> None:
        self.add_rows(np.flatnonzero(mask), message, field)

    def add_line(self, line: int | None, message: str, field: str | None = None) -> None:
        """Flag a line that holds no row of the table (the parser rejected it)."""
        self._entries.append((line if line is not None else -1, -1, message, field))

    def drop_rows(self, rows: np.ndarray) -> None:
        """Remove rows without reporting them (blank lines)."""
        self._drop.append(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, table: pa.Table) -> pa.Table:
        """Report every flagged line once, first line first, and return the table without them."""
        seen: set[int] = set()
        bad_rows = list(self._drop)
        for line, row, message, field_name in sorted(self._entries, key=lambda e: (e[0], e[1])):
            if line in seen and line != -1:
                continue
            seen.add(line)
            self.counter.record(line if line != -1 else None, message, field_name)
            if row >= 0:
                bad_rows.append(np.array([row], dtype=np.int64))
        self._entries.clear()
        self._drop.clear()
        if not bad_rows:
            return table
        rows = np.unique(np.concatenate(bad_rows))
        if rows.size == 0:
            return table
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        return table.filter(pa.array(keep))


def failing_rows(array: pa.Array | pa.ChunkedArray, to: pa.DataType) -> np.ndarray:
    """Rows of a string column that do not cast to ``to`` (found by halving, so few casts when few fail)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    bad: list[int] = []
    stack = [(0, len(array))]
    while stack:
        start, stop = stack.pop()
        if stop <= start:
            continue
        try:
            pc.cast(array.slice(start, stop - start), to)
            continue
        except _CAST_ERRORS:
            pass
        if stop - start == 1:
            bad.append(start)
        else:
            middle = (start + stop) // 2
            stack.append((middle, stop))
            stack.append((start, middle))
    return np.array(sorted(bad), dtype=np.int64)


def null_rows(rows: np.ndarray, column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The column with the given rows set to null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if rows.size == 0:
        return column
    mask = np.zeros(len(column), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)


def convert_strings(
    column: pa.Array | pa.ChunkedArray,
    to: pa.DataType,
    problems: Problems,
    field_name: str,
    expected: str,
) -> pa.Array:
    """Cast a string column; rows that do not convert are flagged and become null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type == to:
        return column
    try:
        return pc.cast(column, to)
    except _CAST_ERRORS:
        pass
    bad = failing_rows(column, to)
    problems.add_rows(bad, lambda row: f"expected {expected}, got {column[row].as_py()!r}", field_name)
    return pc.cast(null_rows(bad, column), to)


def is_null_mask(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.is_null(column).to_numpy(zero_copy_only=False)


def expected_text(to: pa.DataType) -> str:
    if pa.types.is_integer(to):
        return "an integer (int64: from -2**63 to 2**63 - 1)" if to == pa.int64() else "an integer"
    if pa.types.is_floating(to):
        return "a number"
    return f"a value of type {to}"


def read_delimited(
    path: Path,
    *,
    counter: BadLineCounter,
    types: Mapping[str, pa.DataType | None],
    columns: Sequence[str] | None = None,
    header: bool = False,
    delimiter: str = ",",
    quoting: bool = False,
    required: Collection[str] = (),
    data: bytes | None = None,
    separator: str | None = None,
) -> tuple[pa.Table, Problems]:
    """Parse a delimited text file with pyarrow.csv; malformed lines are collected, not yet applied.

    Args:
        path: the file (``.gz`` and other compressions are read by extension); also the name in messages.
        counter: the bad-line policy of this file.
        types: the columns to keep -> Arrow type (``None``: inferred by pyarrow).
        columns: the column names of a file without a header, in order.
        header: the first line names the columns; every name in ``types`` must be there.
        delimiter: one character.
        quoting: honour double quotes (CSV files); off for tab / space separated formats.
        required: columns that may not be empty (the others become null where empty).
        data: the file's bytes, already rewritten (e.g. ``::`` replaced by a tab); path is then only a name.
        separator: how messages name the file's separator (default: named after ``delimiter``).

    Returns:
        The table (columns in ``types`` order; values that failed to convert are null) and a
        :class:`Problems` with the malformed lines found so far: wrong field counts, values
        that do not convert to their type, empty required values. The caller adds its own
        checks and calls ``problems.apply(table)``. Blank lines are dropped without a report.

    The happy path is one multi-threaded typed pyarrow read. Only if that read fails or the
    parser met lines with the wrong number of fields is the file read again, single-threaded
    (so pyarrow reports line numbers) and as strings, to find each bad line.
    """
    if data is None:
        check_not_empty(path)
    elif not data.strip():
        raise DataError("empty file", path=path)
    scan = scan_text(path, data)
    if header:
        names = read_header(path, delimiter, quoting) if data is None else _header_of_bytes(data, delimiter, quoting, path)
        missing = [name for name in types if name not in names]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; the header has {names}", path=path, field=missing[0]
            )
    else:
        assert columns is not None, "a file without a header needs its column names"
        names = list(columns)
    first_line = 2 if header else 1

    def source():
        return pa.BufferReader(data) if data is not None else str(path)

    def options(use_threads: bool, handler, column_types: Mapping[str, pa.DataType]):
        return dict(
            read_options=pacsv.ReadOptions(
                use_threads=use_threads, column_names=names, skip_rows=1 if header else 0,
                block_size=scan.block_size,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quoting else False,
                double_quote=quoting,
                escape_char=False,
                ignore_empty_lines=False,
                invalid_row_handler=handler,
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(types),
                column_types=dict(column_types),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )

    typed = {name: kind for name, kind in types.items() if kind is not None}
    invalid_seen: list[int] = []

    def count_invalid(row) -> str:
        invalid_seen.append(1)
        return "skip"

    table: pa.Table | None = None
    try:
        with quiet_decode_errors():
            table = pacsv.read_csv(source(), **options(True, count_invalid, typed))
    except pa.ArrowInvalid:
        table = None
    # Every line is a row or an invalid row; fewer rows means a quote swallowed lines, more a stray \r.
    if table is not None and table.num_rows + len(invalid_seen) != scan.lines - (first_line - 1):
        table = None
    if table is not None and not invalid_seen:
        problems = Problems(counter, LineMap(first_line))
        table = _finish_columns(table, types, {}, problems)
    else:
        # Slow path: single-threaded (line numbers known), typed columns read as strings.
        invalid: list[tuple[int | None, int, int, str]] = []

        def remember(row) -> str:
            invalid.append((row.number, row.expected_columns, row.actual_columns, row.text))
            return "skip"

        as_strings = {name: pa.string() for name in typed}
        raw = data if data is not None else read_bytes(path)
        unreadable = unreadable_lines(raw, quoting)
        if header and unreadable and unreadable[0][0] == 1:
            raise DataError(f"the header line is unreadable: {unreadable[0][1]}", path=path, line=1)
        raw = blank_lines(raw, [line for line, _ in unreadable])
        try:
            table = pacsv.read_csv(pa.BufferReader(raw), **options(False, remember, as_strings))
        except pa.ArrowInvalid as error:
            raise DataError(f"cannot parse the file: {error}", path=path) from error
        line_map = LineMap(first_line, [number for number, *_ in invalid if number is not None])
        problems = Problems(counter, line_map)
        for line, reason in unreadable:
            problems.add_line(line, reason)
        for number, expected, actual, text in invalid:
            if not text.strip():
                continue  # a line of spaces only: as blank as an empty line
            shown = text if len(text) <= 80 else text[:77] + "..."
            problems.add_line(
                number,
                f"expected {expected} fields separated by {separator or delimiter_name(delimiter)}, "
                f"got {actual}: {shown!r}",
            )
        table = _finish_columns(table, types, typed, problems)
    # Blank lines: every kept column empty.
    blank = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        blank &= is_null_mask(column)
    if blank.any():
        problems.drop_rows(np.flatnonzero(blank))
    for name in required:
        empty = is_null_mask(table.column(name)) & ~blank
        if empty.any():
            problems.add_mask(empty, "empty value", name)
    warn_unterminated(scan, counter)
    return table, problems


def _header_of_bytes(data: bytes, delimiter: str, quoting: bool, path: Path) -> list[str]:
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").removeprefix("\ufeff")
    return _split_header(line, delimiter, quoting, path)


def _finish_columns(
    table: pa.Table,
    types: Mapping[str, pa.DataType | None],
    to_convert: Mapping[str, pa.DataType],
    problems: Problems,
) -> pa.Table:
    """Order the columns as ``types`` and convert the string columns of the slow path."""
    arrays = []
    for name in types:
        column = table.column(name)
        if name in to_convert:
            column = convert_strings(column, to_convert[name], problems, name, expected_text(to_convert[name]))
        arrays.append(column)
    return pa.table(arrays, names=list(types))


def no_records(what: str, counter: BadLineCounter) -> DataError:
    """The error for a file that yields nothing: header only, blank, or every line skipped."""
    skipped = f" ({counter.skipped} malformed line(s) skipped)" if counter.skipped else ""
    return DataError(f"no {what} in the file{skipped}", path=counter.path)


def numpy_of(column: pa.Array | pa.ChunkedArray, fill: float | int = 0) -> np.ndarray:
    """A numeric column as numpy, nulls replaced by ``fill`` (their rows are flagged elsewhere)."""
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy() if isinstance(column, pa.ChunkedArray) else column.to_numpy(zero_copy_only=False)


def flag_bad_timestamps(table: pa.Table, column: str, problems: Problems) -> None:
    """Flag negative and fractional timestamps (numeric column; nulls are flagged elsewhere)."""
    values = numpy_of(table.column(column))
    if values.dtype.kind == "f":
        fractional = np.isfinite(values) & (values != np.floor(values))
        problems.add_mask(
            fractional | ~np.isfinite(values),
            lambda row: f"timestamps must be whole numbers, got {values[row].item()!r}",
            column,
        )
    negative = values < 0
    problems.add_mask(
        negative,
        lambda row: f"timestamps must be non-negative, got {values[row].item()!r}",
        column,
    )
    if values.dtype.kind in "uf":
        problems.add_mask(
            np.isfinite(values) & (values >= INT64_LIMIT),
            lambda row: f"timestamps must be below 2**63, got {values[row].item()!r}",
            column,
        )


def flag_non_finite(table: pa.Table, columns: Sequence[str], problems: Problems) -> None:
    """Flag NaN and infinite values of float columns (labels, dense features): training would
    fail on them an epoch later, far from the line that held them."""
    for name in columns:
        values = numpy_of(table.column(name))
        if values.dtype.kind == "f":
            problems.add_mask(
                ~np.isfinite(values), lambda row, v=values: f"expected a finite number, got {v[row].item()!r}", name
            )


