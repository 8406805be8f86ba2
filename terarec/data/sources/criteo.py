"""Criteo display-advertising logs (Kaggle ``train.txt``, Terabyte ``day_0`` ... ``day_23``) as a CTR table.

Format: one impression a line, tab-separated, no header, 40 fields: ``label`` (0 or 1), 13
integer count features ``I1`` ... ``I13`` (may be empty, may be negative) and 26 categorical
features ``C1`` ... ``C26``, each an anonymised hash written as hexadecimal (8 digits in the
published files; 1 to 16 are accepted) or empty.

Output: kind ``ctr``, yielded in chunks of ``chunk_rows`` rows (the file is streamed, never
held whole): ``label`` (float32), ``I1`` ... ``I13`` (float32 dense, null where empty) and
``C1`` ... ``C26`` (int64, the hexadecimal value; null where empty; a 16-digit value above
2**63 keeps its 64 bits as a negative int64). ``sparse`` = C1..C26, ``dense`` = I1..I13,
``labels = ["label"]``. The dataset name is ``criteo`` for ``train.txt``, else
``criteo-<file stem>``.

A line with the wrong number of fields, a label other than 0/1, a non-integer I field or a
non-hexadecimal C field is malformed; it is reported (file and line) through the
``on_bad_line`` policy as the chunks are read, so the skipped count in ``bad_lines`` is final
once the chunks have been consumed. Blank lines are ignored.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from terarec.data.errors import BadLineCounter, BadLinePolicy, DataError
from terarec.data.sources.base import SourceData
from terarec.data.sources.text import (
    LineMap,
    Problems,
    TextScan,
    check_not_empty,
    convert_strings,
    ends_with_newline,
    is_null_mask,
    no_records,
    require_path,
    scan_text,
    warn_unterminated,
)

LABEL = "label"
DENSE: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
SPARSE: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
COLUMNS: tuple[str, ...] = (LABEL, *DENSE, *SPARSE)
_BLOCK_BYTES = 1 << 22  # pyarrow parses 2-8 MB blocks fastest
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _digit, _char in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_char] = _digit
for _digit, _char in enumerate(b"ABCDEF", start=10):
    _HEX_VALUE[_char] = _digit


def load_criteo(
    path: str | Path, *, on_bad_line: BadLinePolicy = "error", chunk_rows: int = 500_000
) -> SourceData:
    """Stream a Criteo display-ads file as ctr chunks.

    Args:
        path: ``train.txt``, ``day_N`` (``.gz`` and other compressions are read by extension).
        on_bad_line: ``"error"`` raises on the first malformed line, ``"skip"`` skips and counts.
        chunk_rows: rows per yielded chunk (the last one may be shorter).

    Returns:
        SourceData(kind="ctr") whose ``chunks`` is a generator (iterate it once).

    Example:
        >>> data = load_criteo("day_0")  # doctest: +SKIP
        >>> first = next(iter(data.chunks))  # doctest: +SKIP
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path = require_path(path, "a Criteo display-ads file (train.txt or day_N)")
    check_not_empty(path)
    counter = BadLineCounter(on_bad_line, path)
    stem = path.name.split(".")[0]
    return SourceData(
        name="criteo" if stem == "train" else f"criteo-{stem}",
        source="criteo",
        kind="ctr",
        chunks=_chunks(path, counter, chunk_rows),
        sparse=list(SPARSE),
        dense=list(DENSE),
        labels=[LABEL],
        bad_lines=[counter],
    )


def parse_hex(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Hexadecimal strings (nulls allowed) -> (int64 values, bad mask); vectorised over the rows.

    Example:
        >>> values, bad = parse_hex(pa.array(["0000000a", "FF", None, "xyz"]))
        >>> values[:2].tolist(), bad.tolist()
        ([10, 255], [False, False, False, True])
    """
    n = len(column)
    if column.type != pa.string():
        column = column.cast(pa.string())
    null = is_null_mask(column)
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=column.offset * 4).astype(np.int64)
    if data_buffer is None or data_buffer.size == 0:
        data = np.zeros(1, np.uint8)
    else:
        data = np.frombuffer(data_buffer, dtype=np.uint8)
    lengths = np.where(null, 0, np.diff(offsets))
    present = ~null
    values = np.zeros(n, dtype=np.uint64)
    count = int(present.sum())
    if count and (lengths[present] == 8).all() and offsets[-1] - offsets[0] == 8 * count:
        # The published files: every value is 8 digits, so the present values lie end to end.
        digits = _HEX_VALUE[data[offsets[0] : offsets[0] + 8 * count]].reshape(count, 8)
        bad_present = (digits == 255).any(axis=1)
        packed = np.ascontiguousarray((digits[:, 0::2] << 4) | (digits[:, 1::2] & 15))
        values[present] = packed.view(">u4").reshape(count)
        bad = np.zeros(n, dtype=bool)
        bad[present] = bad_present
        return values.view(np.int64), bad
    bad = (lengths > 16) | (present & (lengths == 0))
    ends = offsets[1:]
    for j in range(int(min(lengths.max(initial=0), 16))):  # j-th digit from the right
        has = lengths > j
        digit = _HEX_VALUE[data[np.where(has, ends - 1 - j, 0)]]
        bad |= has & (digit == 255)
        values |= np.where(has & (digit != 255), digit, 0).astype(np.uint64) << np.uint64(4 * j)
    return values.view(np.int64), bad


def _chunks(path: Path, counter: BadLineCounter, chunk_rows: int) -> Iterator[pa.Table]:
    """The file's chunks; a line longer than a parse block makes it start again with bigger blocks.

    pyarrow.csv cannot parse a line longer than its block. Criteo lines are short, so the
    file is streamed with a small block, and only when a long line turns up (a malformed
    one, to be named or skipped) is it measured and read again from the start; the rows
    already yielded are not yielded twice and the bad-line count starts over.
    """
    block_size, yielded = _BLOCK_BYTES, 0
    while True:
        counter.reset()
        already_given = yielded  # rows of the first pass, not to be yielded again
        try:
            for table in _chunks_in_blocks(path, counter, chunk_rows, block_size):
                if already_given >= table.num_rows:
                    already_given -= table.num_rows
                    continue
                table, already_given = table.slice(already_given), 0
                yielded += table.num_rows
                yield table
            if not yielded:
                raise no_records("impressions", counter)
            return
        except pa.ArrowInvalid as error:
            if "straddling" not in str(error) or block_size > _BLOCK_BYTES:
                raise DataError(f"cannot parse the file: {error}", path=path) from error
            block_size = max(block_size, scan_text(path).block_size)


def _chunks_in_blocks(path: Path, counter: BadLineCounter, chunk_rows: int, block_size: int) -> Iterator[pa.Table]:
    invalid: list[tuple[int | None, int, str]] = []

    def remember(row) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    reader = pacsv.open_csv(
        str(path),
        # Single-threaded parsing so that pyarrow reports the line number of a wrong-length line.
        # Latin-1 maps every byte to a character: a line of binary garbage is then a malformed
        # line like any other (named, skippable), where strict UTF-8 would stop the read.
        read_options=pacsv.ReadOptions(
            use_threads=False, block_size=block_size, column_names=list(COLUMNS), encoding="latin-1"
        ),
        parse_options=pacsv.ParseOptions(
            delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False, invalid_row_handler=remember
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in COLUMNS}, null_values=[""], strings_can_be_null=True
        ),
    )
    line_map = LineMap(1, [])
    state = {"rows_read": 0, "reported": 0}  # raw rows converted; invalid lines handed to the counter

    def convert(batches: list[pa.RecordBatch]) -> pa.Table:
        raw = pa.Table.from_batches(batches).combine_chunks()
        line_map.skipped = [number for number, *_ in invalid if number is not None]
        problems = Problems(counter, line_map, row_offset=state["rows_read"])
        last_line = int(line_map.lines(state["rows_read"] + raw.num_rows - 1)) if raw.num_rows else 0
        while state["reported"] < len(invalid) and (invalid[state["reported"]][0] or 0) <= last_line:
            _report_invalid(problems, *invalid[state["reported"]])
            state["reported"] += 1
        table = problems.apply(_convert(raw, problems))
        state["rows_read"] += raw.num_rows
        return table

    raw_batches: list[pa.RecordBatch] = []
    raw_rows = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    for batch in itertools.chain(reader, [None]):
        if batch is not None:
            raw_batches.append(batch)
            raw_rows += batch.num_rows
            if raw_rows < chunk_rows:
                continue
        if raw_batches:
            table = convert(raw_batches)
            raw_batches, raw_rows = [], 0
            if table.num_rows:
                pending.append(table)
                pending_rows += table.num_rows
        while pending_rows >= chunk_rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, chunk_rows).combine_chunks()
            rest = merged.slice(chunk_rows)
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    problems = Problems(counter, line_map, row_offset=state["rows_read"])
    for entry in invalid[state["reported"] :]:
        _report_invalid(problems, *entry)
    problems.apply(pa.table({}))
    if ends_with_newline(path) is False:
        lines = state["rows_read"] + raw_rows + len(invalid)
        warn_unterminated(TextScan(lines, False, 0), counter)
    if pending_rows:
        yield pa.concat_tables(pending).combine_chunks()


def _report_invalid(problems: Problems, number: int | None, actual: int, text: str) -> None:
    if not text.strip():
        return  # a blank line
    hint = " (an unlabelled test file?)" if actual == len(COLUMNS) - 1 else ""
    shown = text if len(text) <= 80 else text[:77] + "..."
    problems.add_line(number, f"expected {len(COLUMNS)} tab-separated fields, got {actual}{hint}: {shown!r}")


def _convert(batch: pa.Table, problems: Problems) -> pa.Table:
    """String columns of a group of rows -> typed columns; bad values are flagged (their rows dropped later)."""
    columns = {name: batch.column(name).combine_chunks() for name in COLUMNS}
    blank = np.ones(batch.num_rows, dtype=bool)
    for column in columns.values():
        blank &= is_null_mask(column)
    problems.drop_rows(np.flatnonzero(blank))

    label = columns[LABEL]
    is_one = pc.fill_null(pc.equal(label, "1"), False).to_numpy(zero_copy_only=False)
    is_zero = pc.fill_null(pc.equal(label, "0"), False).to_numpy(zero_copy_only=False)
    problems.add_mask(
        ~(is_one | is_zero) & ~blank,
        lambda row: f"label must be 0 or 1, got {label[row].as_py() or 'an empty field'!r}",
        LABEL,
    )
    arrays = [pa.array(is_one.astype(np.float32))]
    for name in DENSE:
        ints = convert_strings(columns[name], pa.int64(), problems, name, "an integer")
        arrays.append(ints.cast(pa.float32()))
    for name in SPARSE:
        column = columns[name]
        values, bad = parse_hex(column)
        problems.add_mask(bad, lambda row, c=column: f"expected hexadecimal, got {c[row].as_py()!r}", name)
        arrays.append(pa.array(values, pa.int64(), mask=is_null_mask(column) | bad))
    return pa.Table.from_arrays(arrays, names=list(COLUMNS))
