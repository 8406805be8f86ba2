"""Generic event logs: a CSV (with a header) or Parquet file with one row per user action.

``load_events`` reads any table with a user column, an item column and a time column and
produces the canonical ``events`` table (see :mod:`terarec.data.schema`):

* the three columns are renamed to ``user_id``, ``item_id`` and ``timestamp``;
* integer user / item ids are kept as they are; string ids are hashed to stable int64 ids
  with :func:`terarec.features.hashing.hash_array` (slots ``"user_id"`` / ``"item_id"``).
  A CSV column is a string column as soon as one of its values is not an integer;
* the timestamp may be integers, floats with no fractional part, or date-times (Parquet
  timestamps, ISO-8601 text in a CSV), which become whole seconds since the epoch (floored);
  negative, fractional or missing timestamps are errors;
* the columns named in ``sparse`` (kept as they are: int64 or string, nulls allowed),
  ``dense`` (float32, nulls allowed) and ``labels`` (numeric, cast to float32, no nulls)
  follow; every other column of the file is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.errors import BadLineCounter, BadLinePolicy, DataError
from terarec.data.schema import ITEM_ID, TIMESTAMP, USER_ID, check_events_table, check_finite
from terarec.data.sources.base import SourceData
from terarec.data.sources.parquet import parquet_schema, read_parquet
from terarec.data.sources.text import (
    PARQUET_SUFFIXES,
    convert_strings,
    flag_bad_timestamps,
    flag_non_finite,
    is_null_mask,
    no_records,
    read_delimited,
    require_path,
)
from terarec.features.hashing import hash_array



# --------------------------------------------------------------------------------------------
# load_events
# --------------------------------------------------------------------------------------------


def load_events(
    path: str | Path,
    *,
    user_column: str = USER_ID,
    item_column: str = ITEM_ID,
    time_column: str = TIMESTAMP,
    sparse: Sequence[str] = (),
    dense: Sequence[str] = (),
    labels: Sequence[str] = (),
    delimiter: str = ",",
    on_bad_line: BadLinePolicy = "error",
) -> SourceData:
    """Read a generic event log (CSV with a header, or Parquet) into the canonical events table.

    Args:
        path: a ``.parquet`` / ``.pq`` file or a folder of Parquet files; anything else is read
            as delimited text with a header line (``.gz`` etc. decompressed by extension).
        user_column, item_column, time_column: the columns renamed to ``user_id``, ``item_id``,
            ``timestamp``. Integer ids are kept; string ids are hashed to int64.
        sparse: categorical feature columns to keep (int64 or string).
        dense: numeric feature columns to keep, as float32.
        labels: numeric target columns to keep, as float32.
        delimiter: the field separator of a text file (one character).
        on_bad_line: ``"error"`` raises on the first malformed line, ``"skip"`` skips and counts.

    Returns:
        SourceData of kind "events", named after the file stem; one chunk.

    Example:
        >>> data = load_events("clicks.csv", user_column="uid", item_column="sku", time_column="ts",
        ...                    sparse=["country"], labels=["clicked"])  # doctest: +SKIP
    """
    path = require_path(path, "a CSV or Parquet file of events")
    roles = [user_column, item_column, time_column, *sparse, *dense, *labels]
    out_names = [USER_ID, ITEM_ID, TIMESTAMP, *sparse, *dense, *labels]
    duplicated = sorted({name for name in out_names if out_names.count(name) > 1})
    if duplicated or len(set(roles)) != len(roles):
        raise ValueError(
            f"each column may have one role and the output names must be distinct; "
            f"got user={user_column!r}, item={item_column!r}, time={time_column!r}, "
            f"sparse={list(sparse)}, dense={list(dense)}, labels={list(labels)}"
        )
    counter = BadLineCounter(on_bad_line, path)
    is_parquet = path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES
    if is_parquet:
        table = _read_events_parquet(path, roles, user_column, item_column, time_column, dense, labels)
    else:
        table = _read_events_text(
            path, counter, delimiter, user_column, item_column, time_column, sparse, dense, labels
        )
    if table.num_rows == 0:
        raise no_records("events", counter)
    columns = [
        _ids(table.column(user_column), USER_ID, path),
        _ids(table.column(item_column), ITEM_ID, path),
        table.column(time_column),
    ]
    columns += [table.column(name) for name in sparse]
    columns += [table.column(name).cast(pa.float32()) for name in dense]
    columns += [table.column(name).cast(pa.float32()) for name in labels]
    result = check_events_table(pa.table(columns, names=out_names), path)
    stem = path.name.split(".")[0] if not path.is_dir() else path.name
    return SourceData(
        name=stem,
        source="events",
        kind="events",
        chunks=[result],
        sparse=list(sparse),
        dense=list(dense),
        labels=list(labels),
        bad_lines=[counter],
    )


def _ids(column: pa.ChunkedArray, slot: str, path: Path) -> pa.Array | pa.ChunkedArray:
    """Integer ids as they are; string ids hashed (nulls were rejected before)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.array(hash_array(column, slot), type=pa.int64())
    if pa.types.is_dictionary(column.type):
        return column.cast(kind)
    return column


def _text_ids(column: pa.ChunkedArray, problems, name: str) -> pa.Array:
    """A CSV id column: int64 when every value is a whole number written as one, else text (hashed)."""
    column = column.combine_chunks()
    written_as_integer = pc.match_substring_regex(column, r"^\s*[+-]?[0-9]+\s*$")
    if pc.all(pc.fill_null(written_as_integer, True)).as_py():
        return convert_strings(column, pa.int64(), problems, name, "an integer id from -2**63 to 2**63 - 1 (int64)")
    return column


def _to_seconds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Date-time columns to whole seconds since the epoch (sub-second parts dropped); others unchanged."""
    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
        return pc.divide(column.cast(pa.int64()), per_second)
    if pa.types.is_date(column.type):
        return pc.multiply(column.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), 86_400)
    return column


def _read_events_parquet(
    path: Path,
    roles: list[str],
    user_column: str,
    item_column: str,
    time_column: str,
    dense: Sequence[str],
    labels: Sequence[str],
) -> pa.Table:
    schema = parquet_schema(path, roles)
    for name in [*dense, *labels]:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(f"expected a numeric column, got {kind}", path=path, field=name)
    table = read_parquet(path, roles)
    if table.num_rows == 0:
        raise DataError("empty file (no rows)", path=path)
    for name in [user_column, item_column, time_column, *labels]:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(is_null_mask(column))[0])
            raise DataError(f"null value in row {row}", path=path, field=name)
    check_finite(table, [*dense, *labels], path)
    index = table.column_names.index(time_column)
    return table.set_column(index, time_column, _to_seconds(table.column(time_column)))


def _read_events_text(
    path: Path,
    counter: BadLineCounter,
    delimiter: str,
    user_column: str,
    item_column: str,
    time_column: str,
    sparse: Sequence[str],
    dense: Sequence[str],
    labels: Sequence[str],
) -> pa.Table:
    # Ids are read as text: a column of integers becomes int64 (one beyond int64 is a bad line,
    # named), any other column is hashed; pyarrow's own guess would make 2**63 a float.
    types: dict[str, pa.DataType | None] = {user_column: pa.string(), item_column: pa.string(), time_column: None}
    types.update({name: None for name in sparse})
    types.update({name: pa.float32() for name in dense})
    types.update({name: pa.float32() for name in labels})
    table, problems = read_delimited(
        path,
        counter=counter,
        types=types,
        header=True,
        delimiter=delimiter,
        quoting=True,
        required=[user_column, item_column, time_column, *labels],
    )
    for name in [user_column, item_column]:
        table = table.set_column(table.column_names.index(name), name, _text_ids(table.column(name), problems, name))
    for name in [time_column, *sparse]:
        if pa.types.is_null(table.column(name).type):  # no value at all (inferred type null)
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.int64()))
    time = _to_seconds(table.column(time_column))
    if pa.types.is_string(time.type) or pa.types.is_large_string(time.type):
        time = convert_strings(time, pa.float64(), problems, time_column, "a number")
    if not (pa.types.is_integer(time.type) or pa.types.is_floating(time.type)):
        raise DataError(f"expected numeric timestamps, got {time.type}", path=path, field=time_column)
    table = table.set_column(table.column_names.index(time_column), time_column, time)
    flag_bad_timestamps(table, time_column, problems)
    flag_non_finite(table, [*dense, *labels], problems)
    table = problems.apply(table)
    if pa.types.is_floating(table.column(time_column).type):
        table = table.set_column(
            table.column_names.index(time_column), time_column, table.column(time_column).cast(pa.int64())
        )
    return table
