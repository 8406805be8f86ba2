"""The batch types every dataset yields, and what the datasets share: split codes, worker slices,
user segments and the DataLoader.

Sparse values in every KeyedJaggedTensor are slot-prefixed 64-bit ids from
``terarec.features.hashing``: the embedding layer, not the data layer, decides which row an
id lands in (exact vocabulary, hashing trick or a managed vocabulary), so the same batches
feed unsharded, sharded and managed tables.

The datasets (``terarec.data.ctr_dataset.CTRDataset``, ``terarec.data.sequence_dataset.SequenceDataset``,
``terarec.data.ranking.RankingDataset``) are ``torch.utils.data.IterableDataset``s that build whole
batches inside the worker processes; wrap them with ``make_loader`` (``DataLoader(batch_size=None)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data import schema
from terarec.data.schema import DatasetMeta


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
        target_mask: training batches: (N,) bool aligned with ``item_ids.values()``, the values the
            loss may predict (a stream trains on the day's events only, its stored history being
            input); None: every value but each user's first.
    """

    user_ids: torch.Tensor
    item_ids: KeyedJaggedTensor
    timestamps: torch.Tensor
    actions: torch.Tensor
    target_item_ids: torch.Tensor | None = None
    target_timestamps: torch.Tensor | None = None
    seen_item_ids: KeyedJaggedTensor | None = None
    target_mask: torch.Tensor | None = None

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
            move(self.target_mask),
        )


def split_code(split: str) -> int:
    if split not in schema.SPLIT_CODES:
        raise ValueError(f"split must be one of {list(schema.SPLIT_CODES)}, got {split!r}")
    return schema.SPLIT_CODES[split]


def process_slice() -> tuple[int, int]:
    """(rank, world size) of this process in a ``torch.distributed`` run, (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_slice(rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """(index, count) of this reader among every reader of a split: the DataLoader workers of
    each of ``world_size`` processes, rank-major. Each reader takes every ``count``-th unit of
    work (row group, user bucket) from ``index`` on, so no example is read twice or dropped.

    Example:
        >>> worker_slice(rank=1, world_size=2)  # no DataLoader worker: one reader per process
        (1, 2)
    """
    info = get_worker_info()
    worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
    return rank * workers + worker, world_size * workers


def segment_bounds(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each run of equal user ids in a sorted array."""
    if user_ids.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    change = np.flatnonzero(user_ids[1:] != user_ids[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [user_ids.size]]).astype(np.int64)
    return starts, ends


def gather_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


class SplitDataset(IterableDataset):
    """What every dataset of one split of a prepared folder shares: its metadata, the split's code,
    the batch size, and a seeded shuffle that ``set_epoch`` moves to the next epoch's order.

    Args:
        folder: a prepared dataset folder (dataset.yaml beside Parquet parts).
        split: ``train``, ``valid`` or ``test``.
        batch_size: rows (CTR) or users (sequences) per batch.
        shuffle: shuffle (use for training); seeded by ``seed`` and the epoch.

    In a ``torch.distributed`` run each process reads its own share (``readers``); the seeded order
    is the same in every process, so the shares are disjoint and cover the split.
    """

    def __init__(self, folder: str | Path, split: str, batch_size: int, shuffle: bool, seed: int) -> None:
        self.folder = Path(folder)
        self.meta = DatasetMeta.load(self.folder)
        self.split_code = split_code(split)
        self.split = split
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        # Read in the process that builds the dataset: DataLoader workers inherit it as it was.
        self.rank, self.world_size = process_slice()

    def readers(self) -> tuple[int, int]:
        """(index, count) of this reader over every process and DataLoader worker (``worker_slice``)."""
        return worker_slice(self.rank, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


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
