"""The one vocabulary builder: the distinct ids of each key over a prepared dataset, in one streaming pass.

Every run fits its vocabularies here: a CTR task's sparse keys (crosses and list columns
included) over the training rows, a sequential task's item catalogue over every row, HSTU
ranking's item and feature columns over the training rows, and a managed vocabulary's
default capacity (from the distinct training ids). A key's ids are whatever ``ids_of`` makes
of a table of rows (by default: its column hashed in its own slot), so the vocabularies match
the ids the batches will carry. The vocabulary modules built from them (ids -> table rows) live
with the tables (``terarec.embedding.exact_vocabulary``); this layer reads data only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from terarec.data import schema
from terarec.data.schema import DatasetMeta
from terarec.features.hashing import hash_array
from terarec.features.vocabulary import DistinctIds


def column_ids(table: pa.Table, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Each key's distinct values in ``table``, hashed in the key's own slot."""
    return {key: hash_array(pc.unique(table.column(key)), key) for key in keys}


def vocabulary_ids(
    folder: str | Path,
    keys: Sequence[str],
    *,
    split: str | None = "train",
    columns: Sequence[str] | None = None,
    ids_of: Callable[[pa.Table], Mapping[str, np.ndarray]] | None = None,
    meta: DatasetMeta | None = None,
) -> dict[str, np.ndarray]:
    """The sorted distinct ids of each of ``keys`` over the rows of one split of a prepared dataset.

    Args:
        folder: the prepared dataset.
        keys: the vocabularies to fit (feature keys).
        split: ``train`` / ``valid`` / ``test``, or None for every row.
        columns: the columns ``ids_of`` reads (default ``keys``).
        ids_of: a table of rows (one Parquet row group of the split) -> key -> int64 ids of
            that key in those rows; default ``column_ids`` (each key's column in its own slot).
        meta: the dataset's metadata, if already loaded.

    Returns:
        key -> sorted distinct int64 ids (what an ``ExactVocabulary`` is built from).

    Example:
        >>> ids = vocabulary_ids("data/synthetic", ["item_id", "category"])  # doctest: +SKIP
    """
    keys = list(keys)
    ids_of = ids_of or (lambda table: column_ids(table, keys))
    seen = {key: DistinctIds() for key in keys}
    for table in split_tables(folder, keys if columns is None else columns, split, meta):
        ids = ids_of(table)
        for key in keys:
            seen[key].update(ids[key])
    return {key: distinct.values() for key, distinct in seen.items()}


def split_tables(
    folder: str | Path, columns: Sequence[str], split: str | None = "train", meta: DatasetMeta | None = None
) -> Iterator[pa.Table]:
    """The rows of one split (None: every row) of a prepared dataset, one Parquet row group at a time, in order."""
    folder = Path(folder)
    meta = meta or DatasetMeta.load(folder)
    read = list(dict.fromkeys([*columns, *([schema.SPLIT] if split else [])]))
    for part in meta.parts:
        file = pq.ParquetFile(folder / part)
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=read)
            if split is not None:
                table = table.filter(pc.equal(table.column(schema.SPLIT), schema.SPLIT_CODES[split]))
            yield table


def user_histories(
    folder: str | Path,
    key: str,
    user_column: str,
    ids_of: Callable[[pa.Table], tuple[np.ndarray, np.ndarray]],
    *,
    columns: Sequence[str],
    split: str | None = "train",
    meta: DatasetMeta | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's ids of one key over a split, in row order: what item co-occurrence is counted over.

    Args:
        folder: the prepared dataset (rows sorted by user and time, as ``prepare`` writes them).
        key: names the key in errors only.
        user_column: the column naming the user.
        ids_of: a table of rows -> (int64 ids of ``key``, ids per row).
        columns: the columns ``ids_of`` reads.
        split: the split read (None: every row).

    Returns:
        (the user of each history, the ids, their lengths): history u is
        ``ids[offsets[u]:offsets[u + 1]]``, ordered as the rows are.
    """
    users, ids = [], []
    for table in split_tables(folder, [*columns, user_column], split, meta):
        values, per_row = ids_of(table)
        if per_row.sum() != values.size:
            raise ValueError(f"user_histories: {key}: ids per row sum to {per_row.sum()}, got {values.size} ids")
        users.append(np.repeat(np.asarray(table.column(user_column).to_numpy()), per_row))
        ids.append(np.asarray(values, dtype=np.int64))
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    user, values = np.concatenate(users), np.concatenate(ids)
    order = np.argsort(user, kind="stable")  # rows of one user together, in their order
    names, lengths = np.unique(user[order], return_counts=True)
    return names, values[order], lengths
