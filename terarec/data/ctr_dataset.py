"""CTR rows as batches: which columns feed the model (``FeatureSpec``), one table of rows to a
``CTRBatch`` of 64-bit ids, and ``CTRDataset`` streaming a prepared dataset by row group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data import schema
from terarec.data.batches import CTRBatch, SplitDataset
from terarec.data.errors import DataError
from terarec.data.schema import DatasetMeta
from terarec.features.crosses import apply_crosses
from terarec.features.hashing import hash_array


@dataclass
class FeatureSpec:
    """Which columns of a CTR table feed the model, and as what.

    Args:
        sparse: categorical columns (int, string or list columns for multi-hot).
        dense: float columns; nulls become 0.
        labels: label columns, 0/1 floats (regression targets allowed).
        dense_transform: ``none`` or ``log1p`` (sign(x) * log(1 + |x|), the usual Criteo one).
        crosses: declared crosses (``terarec.features.crosses.CrossSpec``), each added as one
            more sparse key after the plain ones.
        user_column: the column that names the user, for gAUC (Frappe calls it ``user``).
    """

    sparse: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    dense_transform: str = "none"
    crosses: list = field(default_factory=list)
    user_column: str = schema.USER_ID

    @property
    def sparse_keys(self) -> list[str]:
        """The KeyedJaggedTensor's keys: plain sparse features, then crosses."""
        return list(self.sparse) + [cross.name for cross in self.crosses]

    @property
    def input_columns(self) -> list[str]:
        """Every table column the batches read."""
        cross_columns = [name for cross in self.crosses for name in cross.input_columns]
        return list(dict.fromkeys(self.sparse + cross_columns + self.dense + self.labels))

    @classmethod
    def from_meta(cls, meta: DatasetMeta) -> "FeatureSpec":
        return cls(sparse=list(meta.sparse), dense=list(meta.dense), labels=list(meta.labels))

    def check(self, meta: DatasetMeta) -> None:
        for role in ("sparse", "dense", "labels"):
            for name in getattr(self, role):
                if name not in meta.columns:
                    raise DataError(
                        f"{role} column '{name}' is not in the dataset (columns: {sorted(meta.columns)})",
                        path=meta.name,
                        field=name,
                    )
        for cross in self.crosses:
            for name in cross.input_columns:
                if name not in meta.columns:
                    raise DataError(
                        f"cross '{cross.name}' needs column '{name}', which is not in the dataset "
                        f"(columns: {sorted(meta.columns)})",
                        path=meta.name,
                        field=name,
                    )
        duplicated = sorted({k for k in self.sparse_keys if self.sparse_keys.count(k) > 1})
        if duplicated:
            raise ValueError(f"sparse feature / cross names must be distinct, repeated: {duplicated}")
        if self.dense_transform not in ("none", "log1p"):
            raise ValueError(f"dense_transform must be 'none' or 'log1p', got {self.dense_transform!r}")


HISTORY_PREFIX = "hist_"
# A distributed run deals whole row groups to its readers when each gets at least this many.
ROW_GROUPS_PER_READER = 8


def id_slot(column: str) -> str:
    """The slot a column's ids are hashed in: its name, except that a history column ``hist_X``
    (``terarec.data.history``) shares ``X``'s slot, so its ids equal the target's ids."""
    if column.startswith(HISTORY_PREFIX) and len(column) > len(HISTORY_PREFIX):
        return column[len(HISTORY_PREFIX):]
    return column


def _sparse_column(column: pa.ChunkedArray | pa.Array, slot: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths) of one categorical column; list columns give multi-hot lengths."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
        return hash_array(pc.list_flatten(column), slot), lengths
    return hash_array(column, slot), np.ones(len(column), dtype=np.int64)


def ctr_batch_from_table(table: pa.Table, spec: FeatureSpec) -> CTRBatch:
    """Build one CTRBatch from a table of rows (vectorised; one hash per distinct string)."""
    values, lengths = [], []
    for name in spec.sparse:
        ids, lens = _sparse_column(table.column(name), id_slot(name))
        values.append(ids)
        lengths.append(lens)
    if spec.crosses:
        for ids, lens in apply_crosses(table, spec.crosses).values():
            values.append(ids)
            lengths.append(lens)
    num_rows = table.num_rows
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.sparse_keys,
        values=torch.from_numpy(np.concatenate(values) if values else np.empty(0, np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths) if lengths else np.empty(0, np.int64)),
    )
    if spec.dense:
        dense = np.stack(
            [pc.fill_null(table.column(n), 0).to_numpy().astype(np.float32) for n in spec.dense], axis=1
        )
        if spec.dense_transform == "log1p":
            dense = np.sign(dense) * np.log1p(np.abs(dense))
    else:
        dense = np.zeros((num_rows, 0), dtype=np.float32)
    labels = np.stack([table.column(n).to_numpy().astype(np.float32) for n in spec.labels], axis=1) if spec.labels else np.zeros((num_rows, 0), np.float32)
    if spec.user_column in table.column_names:
        column = table.column(spec.user_column)
        if pa.types.is_integer(column.type):
            user_ids = pc.fill_null(column, -1).to_numpy().astype(np.int64)
        else:  # string ids: any stable integer per user serves gAUC's grouping
            user_ids = np.abs(hash_array(column, schema.USER_ID))
            user_ids[pc.is_null(column).to_numpy(zero_copy_only=False)] = -1
    else:
        user_ids = np.full(num_rows, -1, dtype=np.int64)
    return CTRBatch(sparse, torch.from_numpy(dense), torch.from_numpy(labels), torch.from_numpy(user_ids))


class CTRDataset(SplitDataset):
    """Streams CTRBatches of one split from a prepared dataset, row group by row group.

    Memory is O(batch_size + one row group per worker). With ``shuffle`` the row groups are
    visited in a seeded random order per epoch and rows are shuffled within a buffer of
    ``shuffle_row_groups`` row groups. Row groups are dealt round-robin to DataLoader workers and
    to the processes of a distributed run (``SplitDataset.readers``); a distributed run with fewer
    than ``ROW_GROUPS_PER_READER`` row groups per reader gives each reader a contiguous slice of
    every row group instead. Either way every row of the split is read by exactly one reader.

    Args:
        folder: a prepared dataset folder (dataset.yaml beside Parquet parts).
        split: ``train``, ``valid`` or ``test``.
        spec: the columns to use; defaults to the dataset's own roles.
        batch_size: rows per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: shuffle (use for training).
        seed: base seed; epoch ``e`` uses ``seed + e`` (call ``set_epoch``).

    Example:
        >>> loader = make_loader(CTRDataset("data/syn", "train", batch_size=1024, shuffle=True))  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | Path,
        split: str,
        spec: FeatureSpec | None = None,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        shuffle_row_groups: int = 4,
    ) -> None:
        super().__init__(folder, split, batch_size, shuffle, seed)
        self.spec = spec or FeatureSpec.from_meta(self.meta)
        self.spec.check(self.meta)
        self.drop_last = drop_last
        self.shuffle_row_groups = max(1, shuffle_row_groups)
        self.units = [
            (part, group)
            for part in self.meta.parts
            for group in range(pq.ParquetFile(self.folder / part).num_row_groups)
        ]
        columns = self.spec.input_columns
        if self.spec.user_column in self.meta.columns and self.spec.user_column not in columns:
            columns.append(self.spec.user_column)
        self.columns = columns + [schema.SPLIT]

    @property
    def num_rows(self) -> int:
        """Rows in this split (from dataset.yaml)."""
        return int(self.meta.split["counts"][self.split])

    def __len__(self) -> int:
        rows = self.num_rows
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def _tables(self, rng: np.random.Generator | None) -> Iterator[pa.Table]:
        reader, num_readers = self.readers()
        order = np.arange(len(self.units))
        if rng is not None:
            order = rng.permutation(order)
        # Whole row groups dealt round-robin; in a distributed run with few row groups per reader,
        # every reader takes its slice of each row group instead, so the processes' shares (and
        # their steps, which must match) stay equal.
        sliced = self.world_size > 1 and len(self.units) < ROW_GROUPS_PER_READER * num_readers
        mine = order if sliced else order[reader::num_readers]
        files: dict[str, pq.ParquetFile] = {}
        for index in mine:
            part, group = self.units[index]
            file = files.setdefault(part, pq.ParquetFile(self.folder / part))
            table = file.read_row_group(group, columns=self.columns)
            table = table.filter(pc.equal(table.column(schema.SPLIT), self.split_code))
            if sliced:
                begin, end = (table.num_rows * share // num_readers for share in (reader, reader + 1))
                table = table.slice(begin, end - begin)
            yield table

    def __iter__(self) -> Iterator[CTRBatch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        pending: list[pa.Table] = []
        pending_rows = 0

        def flush(tables: list[pa.Table]) -> pa.Table:
            table = pa.concat_tables(tables)
            if rng is not None:
                table = table.take(rng.permutation(table.num_rows))
            return table

        for table in self._tables(rng):
            if table.num_rows == 0:
                continue
            pending.append(table)
            pending_rows += table.num_rows
            # Shuffling mixes rows of several row groups; either way, emit only full batches here.
            enough_groups = rng is None or len(pending) >= self.shuffle_row_groups
            if not enough_groups or pending_rows < self.batch_size:
                continue
            table = flush(pending)
            full = (table.num_rows // self.batch_size) * self.batch_size
            for start in range(0, full, self.batch_size):
                yield ctr_batch_from_table(table.slice(start, self.batch_size), self.spec)
            pending = [table.slice(full)] if full < table.num_rows else []
            pending_rows = table.num_rows - full
        if pending_rows:
            table = flush(pending)
            for start in range(0, table.num_rows, self.batch_size):
                piece = table.slice(start, self.batch_size)
                if self.drop_last and piece.num_rows < self.batch_size:
                    break
                yield ctr_batch_from_table(piece, self.spec)
