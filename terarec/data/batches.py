"""Batches streamed from a prepared dataset: CTR rows and user sequences as KeyedJaggedTensors.

Sparse values in every KeyedJaggedTensor are slot-prefixed 64-bit ids from
``terarec.features.hashing``: the embedding layer, not the data layer, decides which row an
id lands in (exact vocabulary, hashing trick or a managed vocabulary), so the same batches
feed unsharded, sharded and managed tables.

Both datasets are ``torch.utils.data.IterableDataset``s that build whole batches inside the
worker processes; wrap them with ``make_loader`` (``DataLoader(batch_size=None)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data import schema
from terarec.data.errors import DataError
from terarec.data.schema import DatasetMeta
from terarec.features.crosses import apply_crosses
from terarec.features.hashing import hash_array, hash_ints


@dataclass
class CTRBatch:
    """One batch of impressions.

    Args:
        sparse_features: one key per categorical feature; values are 64-bit ids, lengths are
            1 for single-valued features and the list length for multi-hot ones.
        dense_features: (B, num_dense) float32; missing values are 0.
        labels: (B, num_labels) float32.
        user_ids: (B,) raw user ids for gAUC, or -1 where the data has none.
    """

    sparse_features: KeyedJaggedTensor
    dense_features: torch.Tensor
    labels: torch.Tensor
    user_ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CTRBatch":
        return CTRBatch(
            self.sparse_features.to(device, non_blocking=non_blocking),
            self.dense_features.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.user_ids.to(device, non_blocking=non_blocking),
        )


@dataclass
class SequenceBatch:
    """One batch of user histories (jagged, oldest first).

    Args:
        user_ids: (B,) raw user ids.
        item_ids: KeyedJaggedTensor with the single key ``item_id``: each user's history as
            64-bit item ids (the same ids CTR batches use for ``item_id``).
        timestamps: int64 values aligned with ``item_ids.values()``.
        actions: (N, num_actions) float32 aligned with ``item_ids.values()`` (empty second
            dimension when no action columns are configured).
        target_item_ids: (B,) 64-bit id of the item to predict after the history, for
            evaluation batches; None for training batches (every position predicts the next).
        target_timestamps: (B,) time of the target event, or None.
        seen_item_ids: evaluation batches: KeyedJaggedTensor with the single key ``item_id``
            holding each user's FULL history before the target (every earlier event, oldest
            first, however long ``item_ids``' window is): what an evaluation protocol excludes
            from the candidates (``terarec.eval.protocols``). None for training batches.
    """

    user_ids: torch.Tensor
    item_ids: KeyedJaggedTensor
    timestamps: torch.Tensor
    actions: torch.Tensor
    target_item_ids: torch.Tensor | None = None
    target_timestamps: torch.Tensor | None = None
    seen_item_ids: KeyedJaggedTensor | None = None

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        return self.item_ids.lengths()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SequenceBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return SequenceBatch(
            move(self.user_ids),
            self.item_ids.to(device, non_blocking=non_blocking),
            move(self.timestamps),
            move(self.actions),
            move(self.target_item_ids),
            move(self.target_timestamps),
            move(self.seen_item_ids),
        )


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


def _split_code(split: str) -> int:
    if split not in schema.SPLIT_CODES:
        raise ValueError(f"split must be one of {list(schema.SPLIT_CODES)}, got {split!r}")
    return schema.SPLIT_CODES[split]


def _worker_slice() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class CTRDataset(IterableDataset):
    """Streams CTRBatches of one split from a prepared dataset, row group by row group.

    Memory is O(batch_size + one row group per worker). With ``shuffle`` the row groups are
    visited in a seeded random order per epoch and rows are shuffled within a buffer of
    ``shuffle_row_groups`` row groups. Row groups are dealt round-robin to DataLoader workers.

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
        self.folder = Path(folder)
        self.meta = DatasetMeta.load(self.folder)
        self.spec = spec or FeatureSpec.from_meta(self.meta)
        self.spec.check(self.meta)
        self.split_code = _split_code(split)
        self.split = split
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle_row_groups = max(1, shuffle_row_groups)
        self.epoch = 0
        self.units = [
            (part, group)
            for part in self.meta.parts
            for group in range(pq.ParquetFile(self.folder / part).num_row_groups)
        ]
        columns = self.spec.input_columns
        if self.spec.user_column in self.meta.columns and self.spec.user_column not in columns:
            columns.append(self.spec.user_column)
        self.columns = columns + [schema.SPLIT]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_rows(self) -> int:
        """Rows in this split (from dataset.yaml)."""
        return int(self.meta.split["counts"][self.split])

    def __len__(self) -> int:
        rows = self.num_rows
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def _tables(self, rng: np.random.Generator | None) -> Iterator[pa.Table]:
        worker, num_workers = _worker_slice()
        order = np.arange(len(self.units))
        if rng is not None:
            order = rng.permutation(order)
        mine = [self.units[i] for i in order[worker::num_workers]]
        files: dict[str, pq.ParquetFile] = {}
        for part, group in mine:
            file = files.setdefault(part, pq.ParquetFile(self.folder / part))
            table = file.read_row_group(group, columns=self.columns)
            mask = pc.equal(table.column(schema.SPLIT), self.split_code)
            yield table.filter(mask)

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


@dataclass
class SequenceSpec:
    """How user histories are read from an events table.

    Args:
        max_length: keep the most recent ``max_length`` events of a history (training
            sequences keep ``max_length + 1`` so every kept position has a next item).
        keep_if: an optional column; only events where it is > 0 enter sequences (e.g.
            ``click`` for histories of clicked items). Rows failing it are not targets either.
        actions: columns carried per event as the ``actions`` tensor (e.g. click, like).
        min_length: training sequences shorter than this (after filtering) are skipped.
    """

    max_length: int = 50
    keep_if: str | None = None
    actions: list[str] = field(default_factory=list)
    min_length: int = 2

    def check(self, meta: DatasetMeta) -> None:
        if meta.kind != "events":
            raise DataError("sequence batches need an events dataset", path=meta.name)
        for name in ([self.keep_if] if self.keep_if else []) + list(self.actions):
            if name not in meta.columns:
                raise DataError(
                    f"column '{name}' is not in the dataset (columns: {sorted(meta.columns)})",
                    path=meta.name,
                    field=name,
                )
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")


def _segment_bounds(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each run of equal user ids in a sorted array."""
    if user_ids.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    change = np.flatnonzero(user_ids[1:] != user_ids[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [user_ids.size]]).astype(np.int64)
    return starts, ends


def _gather_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def _length_buckets(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, window: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The users of ``order`` as batches of similar length: within each window of ``window``
    batches, users sorted by length (longest first) and cut into as many batches as the window
    would have had, each with about the same number of events (a batch of short histories holds
    more users), so that every event weighs in the loss as it does under a plain shuffle; the
    window's batches in random order."""
    batches = []
    for window_start in range(0, order.size, batch_size * window):
        users = order[window_start : window_start + batch_size * window]
        users = users[np.argsort(-lengths[users], kind="stable")]
        count = -(-users.size // batch_size)
        events = np.cumsum(lengths[users])
        cuts = np.searchsorted(events, events[-1] * np.arange(1, count) / count, side="right")
        window_batches = [b for b in np.split(users, cuts) if b.size]
        batches.extend(window_batches[i] for i in rng.permutation(len(window_batches)))
    return batches


class SequenceDataset(IterableDataset):
    """Streams SequenceBatches of user histories from an events dataset.

    ``split="train"``: each user's training events (split 0), the last ``max_length + 1``.
    ``split="valid"`` / ``"test"``: history = the user's events of earlier splits (the last
    ``max_length``), target = the user's first event of that split; users with no such event
    or no history are skipped. Under leave-one-out that is exactly "second to last" /
    "last"; under a time split it is the first event after the cut-off. These batches also
    carry ``seen_item_ids``, every event before the target whatever ``max_length`` is.

    Users are dealt to DataLoader workers by a hash of their id, so every worker reads every
    part but builds batches for its own users only.

    With ``shuffle`` and ``bucket_window`` > 0, the shuffled users are sorted by history length
    within each window of ``bucket_window`` batches and cut into the same number of batches of
    about equal event counts (so a batch of short histories holds more users, and each event
    weighs in a per-event mean loss as under a plain shuffle), the window's batches shuffled: a
    batch holds users of similar length (attention pads to its longest), and the order stays
    random and fixed by the seed and epoch.
    """

    def __init__(
        self,
        folder: str | Path,
        split: str,
        spec: SequenceSpec | None = None,
        batch_size: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        bucket_window: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.meta = DatasetMeta.load(self.folder)
        self.spec = spec or SequenceSpec()
        self.spec.check(self.meta)
        self.split_code = _split_code(split)
        self.split = split
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        if bucket_window < 0:
            raise ValueError(f"bucket_window must be >= 0, got {bucket_window}")
        self.bucket_window = bucket_window
        self.epoch = 0
        extra = ([self.spec.keep_if] if self.spec.keep_if else []) + list(self.spec.actions)
        self.columns = list(
            dict.fromkeys([schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP, schema.SPLIT] + extra)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def target_users(self) -> tuple[int, int]:
        """valid / test: (users whose target has an earlier event, users whose target has none).

        A user's first event may fall in this split (a user new after a time split's cut-off):
        with no history there is nothing to predict from, so such users are left out of the
        batches; this counts them, so evaluation can say how many (one pass over two columns).
        """
        if self.split_code == 0:
            raise ValueError("target_users: the train split has no held-out targets")
        columns = [schema.USER_ID, schema.SPLIT] + ([self.spec.keep_if] if self.spec.keep_if else [])
        evaluated = without_history = 0
        for part in self.meta.parts:
            table = pq.read_table(self.folder / part, columns=columns)
            if self.spec.keep_if:
                table = table.filter(pc.greater(table.column(self.spec.keep_if), 0))
            split = table.column(schema.SPLIT).to_numpy()
            users = table.column(schema.USER_ID).to_numpy()[split <= self.split_code]
            split = split[split <= self.split_code]
            starts, _ = _segment_bounds(users)
            if starts.size == 0:
                continue
            has_target = np.maximum.reduceat(split == self.split_code, starts)
            has_history = split[starts] < self.split_code  # earlier splits' rows come first
            evaluated += int((has_target & has_history).sum())
            without_history += int((has_target & ~has_history).sum())
        return evaluated, without_history

    def _user_batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[SequenceBatch]:
        if self.spec.keep_if:
            table = table.filter(pc.greater(table.column(self.spec.keep_if), 0))
        split = table.column(schema.SPLIT).to_numpy()
        table = table.filter(pa.array(split <= self.split_code))
        split = split[split <= self.split_code]
        users = table.column(schema.USER_ID).to_numpy()
        worker, num_workers = _worker_slice()
        if num_workers > 1:
            mine = (hash_ints(users, "worker").view(np.uint64) % np.uint64(num_workers)) == worker
            table, users, split = table.filter(pa.array(mine)), users[mine], split[mine]
        starts, ends = _segment_bounds(users)
        if self.split_code == 0:
            hist_end = ends
            has_target = np.zeros(starts.size, dtype=bool)
            keep = (ends - starts) >= self.spec.min_length
            first_kept = np.maximum(starts, ends - (self.spec.max_length + 1))
        else:
            # Rows are sorted by time within a user, and split codes of earlier splits come first
            # under both leave-one-out and time splits: the first row of this split is the target.
            is_target_split = split == self.split_code
            target_pos = np.full(starts.size, -1, dtype=np.int64)
            rows = np.flatnonzero(is_target_split)
            if rows.size:
                segment_of_row = np.searchsorted(starts, rows, side="right") - 1
                first_rows = np.ones(rows.size, dtype=bool)
                first_rows[1:] = segment_of_row[1:] != segment_of_row[:-1]
                target_pos[segment_of_row[first_rows]] = rows[first_rows]
            has_target = target_pos >= 0
            hist_end = np.where(has_target, target_pos, ends)
            keep = has_target & (hist_end > starts)
            first_kept = np.maximum(starts, hist_end - self.spec.max_length)
            target_pos = target_pos[keep]
        history_start = starts[keep]
        first_kept, hist_end = first_kept[keep], hist_end[keep]
        order = np.arange(first_kept.size)
        if rng is not None:
            order = rng.permutation(order)
        if rng is not None and self.bucket_window > 0:
            batches = _length_buckets(order, hist_end - first_kept, self.batch_size, self.bucket_window, rng)
        else:
            batches = [order[start : start + self.batch_size] for start in range(0, order.size, self.batch_size)]
        item_ids = hash_array(table.column(schema.ITEM_ID), schema.ITEM_ID)
        timestamps = table.column(schema.TIMESTAMP).to_numpy()
        user_col = table.column(schema.USER_ID).to_numpy()
        actions = (
            np.stack([pc.fill_null(table.column(a), 0).to_numpy().astype(np.float32) for a in self.spec.actions], 1)
            if self.spec.actions
            else np.zeros((table.num_rows, 0), np.float32)
        )
        for chosen in batches:
            seg_start, seg_end = first_kept[chosen], hist_end[chosen]
            rows = _gather_ranges(seg_start, seg_end)
            batch = SequenceBatch(
                user_ids=torch.from_numpy(user_col[seg_start].astype(np.int64)),
                item_ids=KeyedJaggedTensor.from_lengths_sync(
                    keys=[schema.ITEM_ID],
                    values=torch.from_numpy(item_ids[rows]),
                    lengths=torch.from_numpy(seg_end - seg_start),
                ),
                timestamps=torch.from_numpy(timestamps[rows].astype(np.int64)),
                actions=torch.from_numpy(actions[rows]),
            )
            if self.split_code != 0:
                targets = target_pos[chosen]
                batch.target_item_ids = torch.from_numpy(item_ids[targets])
                batch.target_timestamps = torch.from_numpy(timestamps[targets].astype(np.int64))
                seen_start = history_start[chosen]
                batch.seen_item_ids = KeyedJaggedTensor.from_lengths_sync(
                    keys=[schema.ITEM_ID],
                    values=torch.from_numpy(item_ids[_gather_ranges(seen_start, seg_end)]),
                    lengths=torch.from_numpy(seg_end - seen_start),
                )
            yield batch

    def __iter__(self) -> Iterator[SequenceBatch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        parts = list(self.meta.parts)
        if rng is not None:
            parts = [parts[i] for i in rng.permutation(len(parts))]
        for part in parts:
            table = pq.read_table(self.folder / part, columns=self.columns)
            yield from self._user_batches(table, rng)


def make_loader(dataset: IterableDataset, num_workers: int = 0) -> DataLoader:
    """A DataLoader over a batch-building dataset (batches are built in the workers).

    The loader draws its workers' base seed from a generator of its own: the global one is the
    model's (dropout, negatives), and a loader started mid-epoch by a resumed run must not move it.
    """
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
