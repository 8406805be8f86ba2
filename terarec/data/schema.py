"""Canonical tables every data source normalises into, and the dataset.yaml that describes them.

Two kinds of table (see docs/data.md for the full schema):

* ``events``: one row per user action. Required columns ``user_id`` (int64), ``item_id``
  (int64) and ``timestamp`` (int64, non-negative: seconds since the epoch, or the action's
  position in the user's sequence where the source has no clock). Any other column is a
  feature (int64 / string categorical, float dense, list multi-hot) or a target
  (``rating``, ``click``, ...). Stored sorted by (user_id, timestamp), each Parquet row
  group holding whole users, so a user's history can be streamed without a global sort.
* ``ctr``: one row per impression. One or more label columns (float32, 0/1), categorical
  feature columns (int64 or string, possibly null; list columns for multi-hot) and dense
  columns (float32).

Both carry an int8 ``split`` column once split (0 = train, 1 = valid, 2 = test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import yaml

from terarec.data.errors import DataError

TableKind = Literal["events", "ctr"]
TABLE_KINDS: tuple[str, ...] = ("events", "ctr")

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
SPLIT = "split"
SPLIT_CODES: dict[str, int] = {"train": 0, "valid": 1, "test": 2}
EVENTS_REQUIRED: dict[str, pa.DataType] = {
    USER_ID: pa.int64(),
    ITEM_ID: pa.int64(),
    TIMESTAMP: pa.int64(),
}
DATASET_FILE = "dataset.yaml"
# Written into every dataset folder terarec writes: `--overwrite` replaces only such a folder.
DATASET_MARKER = ".terarec-dataset"
FORMAT_VERSION = 1


@dataclass
class DatasetMeta:
    """What a prepared dataset folder holds; written as ``dataset.yaml`` beside the Parquet parts.

    Args:
        name: dataset name (e.g. ``ml-100k``).
        source: the source format it was prepared from (``movielens``, ``synthetic``, ...).
        kind: ``events`` or ``ctr``.
        num_rows: rows in the main table.
        sparse: categorical feature columns.
        dense: dense float feature columns.
        labels: label / target columns.
        columns: column name -> Arrow type string, for the record.
        parts: Parquet files of the main table, relative to the folder.
        split: how the split column was made, and the row count of each split.
        stats: counts worth knowing (users, items, ...).
        side_tables: other tables in the folder (``users``, ``items``) -> file name.
    """

    name: str
    source: str
    kind: str
    num_rows: int
    sparse: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    side_tables: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / DATASET_FILE
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(asdict(self), sort_keys=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "DatasetMeta":
        path = Path(folder) / DATASET_FILE
        if not path.exists():
            raise DataError(
                "not a prepared dataset: dataset.yaml is missing "
                "(make one with `terarec data prepare` or `terarec data synth`)",
                path=Path(folder),
            )
        raw = yaml.safe_load(path.read_text()) or {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DataError(f"unknown keys {unknown}", path=path)
        if raw.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise DataError(
                f"format_version {raw['format_version']} is newer than this terarec reads "
                f"({FORMAT_VERSION}); upgrade terarec",
                path=path,
            )
        return cls(**raw)


def check_events_table(table: pa.Table, path: str | Path | None = None) -> pa.Table:
    """Check the required events columns and cast them to int64; bad values are DataErrors.

    Timestamps must be non-negative integers: a float timestamp with a fractional part, a
    negative one or a null is an error naming the column and the first offending row.
    """
    import numpy as np
    import pyarrow.compute as pc

    for name in EVENTS_REQUIRED:
        if name not in table.column_names:
            raise DataError(
                f"missing required column '{name}' (have {table.column_names})", path=path, field=name
            )
    columns = {}
    for name in EVENTS_REQUIRED:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
            raise DataError(f"null value in row {row}", path=path, field=name)
        if pa.types.is_floating(column.type):
            values = column.to_numpy()
            bad = np.flatnonzero(values != np.floor(values))
            if bad.size:
                raise DataError(
                    f"expected integers, row {int(bad[0])} has {float(values[bad[0]])!r}", path=path, field=name
                )
        elif not pa.types.is_integer(column.type):
            raise DataError(f"expected an integer column, got {column.type}", path=path, field=name)
        try:
            columns[name] = column.cast(pa.int64())
        except (pa.ArrowInvalid, OverflowError) as error:  # inf, or beyond the int64 range
            raise DataError(f"values do not fit in int64 ({error})", path=path, field=name) from error
    negative = np.flatnonzero(columns[TIMESTAMP].to_numpy() < 0)
    if negative.size:
        row = int(negative[0])
        raise DataError(
            f"timestamps must be non-negative, row {row} has {columns[TIMESTAMP][row].as_py()}",
            path=path,
            field=TIMESTAMP,
        )
    for name, column in columns.items():
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def check_finite(table: pa.Table, columns: list[str] | tuple[str, ...], path: str | Path | None = None) -> None:
    """Raise a DataError naming the column and first row of a NaN or infinite value (nulls are allowed).

    Labels and dense features must be finite: training on a NaN fails an epoch later, far from the row.
    """
    import numpy as np
    import pyarrow.compute as pc

    for name in columns:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if not pa.types.is_floating(column.type):
            continue
        bad = pc.fill_null(pc.invert(pc.is_finite(column)), False).to_numpy(zero_copy_only=False)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"expected finite numbers, row {row} has {column[row].as_py()!r}", path=path, field=name)
