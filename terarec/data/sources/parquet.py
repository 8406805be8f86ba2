"""Parquet reading shared by the loaders: every failure a DataError naming the file and the column."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from terarec.data.errors import DataError

_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError)


def parquet_schema(path: Path, needed: Sequence[str] = ()) -> pa.Schema:
    """The schema of a Parquet file (or folder of them); unreadable, a column named twice or a
    needed column missing is a DataError naming the file and the column."""
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
    except _READ_ERRORS as error:
        raise DataError(f"not a readable Parquet file: {error}", path=path) from error
    twice = sorted(name for name, count in Counter(schema.names).items() if count > 1)
    if twice:
        raise DataError(f"the column is named twice (columns {schema.names})", path=path, field=twice[0])
    missing = [name for name in needed if name not in schema.names]
    if missing:
        raise DataError(f"missing column(s) {missing}; the file has {schema.names}", path=path, field=missing[0])
    return schema


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The named columns of a Parquet file; a file that fails part way is a DataError naming it."""
    parquet_schema(path, columns or ())
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except _READ_ERRORS as error:
        raise DataError(f"cannot read the Parquet file: {error}", path=path) from error
