"""User histories as batches: how histories are read (``SequenceSpec``) and ``SequenceDataset``
streaming them from an events dataset (training windows, or histories before a held-out target)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data import schema
from terarec.data.batches import SequenceBatch, SplitDataset, gather_ranges, segment_bounds
from terarec.data.errors import DataError
from terarec.data.schema import DatasetMeta
from terarec.features.hashing import hash_array


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


class SequenceDataset(SplitDataset):
    """Streams SequenceBatches of user histories from an events dataset.

    ``split="train"``: each user's training events (split 0), the last ``max_length + 1``.
    ``split="valid"`` / ``"test"``: history = the user's events of earlier splits (the last
    ``max_length``), target = the user's first event of that split; users with no such event
    or no history are skipped. Under leave-one-out that is exactly "second to last" /
    "last"; under a time split it is the first event after the cut-off. These batches also
    carry ``seen_item_ids``, every event before the target whatever ``max_length`` is.

    ``batch_size`` is the batch of all processes of a distributed run together: every process
    cuts the same batches of every part (the same seeded order) and takes its even slice of each
    (process r of N: users ``r n / N`` to ``(r + 1) n / N`` of a batch of n), so N processes' step
    holds exactly the users of one process's batch at that step, and the shares are disjoint and
    cover the split. DataLoader workers deal a process's batches in turn (worker w of W builds
    batches w, w + W, ...; the loader yields them in that order), so every worker reads every part
    but builds only its own batches, and the batches are the same with or without workers.

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
        super().__init__(folder, split, batch_size, shuffle, seed)
        self.spec = spec or SequenceSpec()
        self.spec.check(self.meta)
        if bucket_window < 0:
            raise ValueError(f"bucket_window must be >= 0, got {bucket_window}")
        self.bucket_window = bucket_window
        extra = ([self.spec.keep_if] if self.spec.keep_if else []) + list(self.spec.actions)
        self.columns = list(
            dict.fromkeys([schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP, schema.SPLIT] + extra)
        )

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
            starts, _ = segment_bounds(users)
            if starts.size == 0:
                continue
            has_target = np.maximum.reduceat(split == self.split_code, starts)
            has_history = split[starts] < self.split_code  # earlier splits' rows come first
            evaluated += int((has_target & has_history).sum())
            without_history += int((has_target & ~has_history).sum())
        return evaluated, without_history

    def _own_shares(self, batches: list[np.ndarray], counter: Iterator[int]) -> list[np.ndarray]:
        """This reader's users of the (all-process) ``batches``: this process's even slice of each
        batch (none when a batch has fewer users than processes), and of those, this DataLoader
        worker's turns (``counter`` numbers the process's batches over the parts)."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        own = []
        for chosen in batches:
            first, last = (chosen.size * np.array([self.rank, self.rank + 1])) // self.world_size
            if last > first and next(counter) % workers == worker:
                own.append(chosen[first:last])
        return own

    def _user_batches(self, table: pa.Table, rng: np.random.Generator | None,
                      counter: Iterator[int]) -> Iterator[SequenceBatch]:
        if self.spec.keep_if:
            table = table.filter(pc.greater(table.column(self.spec.keep_if), 0))
        split = table.column(schema.SPLIT).to_numpy()
        table = table.filter(pa.array(split <= self.split_code))
        split = split[split <= self.split_code]
        users = table.column(schema.USER_ID).to_numpy()
        starts, ends = segment_bounds(users)
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
        batches = self._own_shares(batches, counter)
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
            rows = gather_ranges(seg_start, seg_end)
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
                    values=torch.from_numpy(item_ids[gather_ranges(seen_start, seg_end)]),
                    lengths=torch.from_numpy(seg_end - seen_start),
                )
            yield batch

    def __iter__(self) -> Iterator[SequenceBatch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        parts = list(self.meta.parts)
        if rng is not None:
            parts = [parts[i] for i in rng.permutation(len(parts))]
        counter = itertools.count()
        for part in parts:
            table = pq.read_table(self.folder / part, columns=self.columns)
            yield from self._user_batches(table, rng, counter)
