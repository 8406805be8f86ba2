"""Next-item retrieval on a stream (``terarec stream`` with ``task: sequential``): histories carried across chunks.

A chunk (a day) of events is read as each user's positive events (``data.keep_if > 0``, e.g.
clicks; every event without it), in time order. The stream keeps each user's last
``data.max_length`` positives across chunks (``terarec.data.user_histories``; a user without a
positive for ``stream.history_ttl_days`` of event time is dropped) and a managed item vocabulary
(``embedding.vocabulary: managed``): an item enters the catalogue when it is trained on as a
positive and leaves it by the vocabulary's eviction (``ttl``: unseen as a positive for
``embedding.ttl_days``). For every chunk:

1. **progressive validation** (``evaluate``): every user with a positive in the chunk and a
   stored history is asked for their first positive of the chunk from the history before it,
   ranked against the rows the vocabulary holds now (the others score ``-inf``), under
   ``eval.protocol`` with the stored history as what the user has seen. A target the catalogue
   does not hold (a new item, or one evicted) is a miss at the last place and counted in
   ``targets_not_held``; ``users_without_history`` counts the users it could not ask;
2. **training** (``batches`` / ``before_step``): each user's stored history followed by the
   chunk's positives, the last ``data.max_length`` of them, predicts only the chunk's positives
   (``SequenceBatch.target_mask``). Before each step the batch's new positives are looked up in
   training mode, which admits new items and renews their TTL, and the rows given to new items
   restart (weights and Adam state); the forward pass then reads the vocabulary without
   admitting, so an aged-out item in a stored history is an input on the default row, never
   admitted again;
3. **after the chunk** (``after_chunk``, trained on or not): the positives are appended to the
   stored histories, and expired users dropped.

Training negatives are drawn uniformly from every table row (``terarec.layers.retrieval``),
held or free; a free row holds the weights of the item that left it, or its initial ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.config import ConfigError, ExperimentConfig
from terarec.data import schema
from terarec.data.batches import SequenceBatch, gather_ranges
from terarec.data.user_histories import UserHistories
from terarec.embedding.collection import SequenceEmbeddings
from terarec.embedding.exact_vocabulary import DEFAULT_ROW
from terarec.eval.protocols import rank_targets
from terarec.eval.ranking import ranking_metrics
from terarec.features.hashing import hash_array

SECONDS_PER_DAY = 86_400


def check_streaming(config: ExperimentConfig) -> None:
    """Refuse, before a run starts, a sequential config the stream cannot run (a ConfigError naming the field)."""
    options = config.embedding
    if options.vocabulary != "managed" or options.capacity <= 0:
        raise ConfigError("embedding: a streaming sequential run needs vocabulary: managed and a capacity > 0 "
                          f"(got vocabulary: {options.vocabulary}, capacity: {options.capacity})")
    if options.sized:
        raise ConfigError("embedding.dims / bands / residual: a streaming sequential run keeps one d-wide item table")
    if config.data.actions:
        raise ConfigError(f"data.actions: a streaming sequential run carries items and times only, "
                          f"got {config.data.actions}")
    if config.eval.protocol == "sampled":
        raise ConfigError("eval.protocol: a streaming sequential run ranks against the held catalogue "
                          "(exclude_history or allow_repeats), not sampled negatives")
    if config.stream.delta_every:
        raise ConfigError("stream.delta_every: embedding deltas are published for ctr streams only; "
                          "set stream.delta_every: 0 for a sequential stream")


def stream_columns(config: ExperimentConfig) -> list[str]:
    """The columns a sequential stream reads."""
    keep_if = [config.data.keep_if] if config.data.keep_if else []
    return list(dict.fromkeys([schema.USER_ID, schema.ITEM_ID, config.stream.time_column, *keep_if]))


class SequenceStream:
    """The stream-side state and steps of a sequential task (module docstring).

    Args:
        config: the run's config.
        model: a next-item model (``items``, ``score_catalogue``, ``item_rows``).
        vocabulary: the model's managed item vocabulary.
    """

    def __init__(self, config: ExperimentConfig, model: torch.nn.Module, vocabulary: torch.nn.Module) -> None:
        self.config, self.model, self.vocabulary = config, model, vocabulary
        self.histories = UserHistories(config.data.max_length)
        days = config.stream.history_ttl_days or config.embedding.ttl_days
        self.history_ttl_seconds = days * SECONDS_PER_DAY

    # -- a chunk's positives

    def _positives(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user ids, hashed item ids, times) of the chunk's positive events, by user, then time."""
        keep_if = self.config.data.keep_if
        if keep_if:
            table = table.filter(pc.greater(table.column(keep_if), 0))
        users = table.column(schema.USER_ID).to_numpy().astype(np.int64)
        times = table.column(self.config.stream.time_column).to_numpy().astype(np.int64)
        items = hash_array(table.column(schema.ITEM_ID), schema.ITEM_ID)
        order = np.lexsort((times, users))  # stable: events of one user and time keep the file's order
        return users[order], items[order], times[order]

    @staticmethod
    def _batch(users: np.ndarray, item_ids: np.ndarray, timestamps: np.ndarray, lengths: np.ndarray,
               **targets: torch.Tensor) -> SequenceBatch:
        history = KeyedJaggedTensor.from_lengths_sync([schema.ITEM_ID], torch.from_numpy(item_ids),
                                                      torch.from_numpy(lengths))
        return SequenceBatch(user_ids=torch.from_numpy(users), item_ids=history,
                             timestamps=torch.from_numpy(timestamps),
                             actions=torch.zeros((item_ids.size, 0), dtype=torch.float32), **targets)

    # -- 1. progressive validation

    @torch.no_grad()
    def evaluate(self, table: pa.Table) -> dict[str, float]:
        """Each user's first positive of the chunk ranked from the stored history (module docstring)."""
        users, items, times = self._positives(table)
        day_users, first = np.unique(users, return_index=True)
        history_items, history_times, lengths = self.histories.get(day_users)
        starts = np.cumsum(lengths) - lengths
        asked = np.flatnonzero(lengths > 0)
        self.model.eval()
        held = self.vocabulary.held()
        options, size = self.config.eval, self.config.data.eval_batch_size
        ranks, repeated_targets, not_held = [], 0, 0
        for start in range(0, asked.size, size):
            chosen = asked[start:start + size]
            rows = gather_ranges(starts[chosen], starts[chosen] + lengths[chosen])
            target_ids = torch.from_numpy(items[first[chosen]])
            batch = self._batch(day_users[chosen], history_items[rows], history_times[rows], lengths[chosen],
                                target_item_ids=target_ids, target_timestamps=torch.from_numpy(times[first[chosen]]))
            scores = self.model.score_catalogue(batch).masked_fill(~held, -torch.inf)
            target_rows = self.model.item_rows(target_ids)
            batch_ranks, repeated = rank_targets(scores, target_rows, self.model.item_rows(batch.item_ids.values()),
                                                 batch.lengths, options.protocol)
            missing = (target_rows == DEFAULT_ROW).numpy()
            batch_ranks[missing] = scores.shape[1] - 1  # not in the catalogue: a miss, counted below
            ranks.append(batch_ranks)
            repeated_targets += int(repeated.sum())
            not_held += int(missing.sum())
        metrics: dict[str, float] = {}
        if ranks:  # none on the first chunk: no history yet (the count says so)
            metrics.update(ranking_metrics(np.concatenate(ranks), options.ks))
        metrics.update(count=int(asked.size), targets_not_held=not_held, repeated_targets=repeated_targets,
                       users_without_history=int(day_users.size - asked.size), catalogue=int(held.sum()))
        return metrics

    # -- 2. training

    def batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[tuple[int, SequenceBatch]]:
        """(latest event time, batch) of users' stored histories followed by the chunk's positives, the
        last ``data.max_length`` of each; users with no positive to predict are left out."""
        users, items, times = self._positives(table)
        day_users, counts = np.unique(users, return_counts=True)
        sequences = self.histories.extend(day_users, items, times, counts)
        ends = np.cumsum(sequences.lengths)
        windows = np.minimum(sequences.lengths, self.config.data.max_length)
        # A window's first value predicts nothing before it: a user trains when a new positive follows it.
        new_in_window = np.minimum(counts, windows)
        predicted = new_in_window - (new_in_window == windows)
        trained = np.flatnonzero(predicted > 0)
        order = trained if rng is None else rng.permutation(trained)
        is_new = sequences.is_new
        size = self.config.data.batch_size
        for start in range(0, order.size, size):
            chosen = order[start:start + size]
            rows = gather_ranges(ends[chosen] - windows[chosen], ends[chosen])
            batch = self._batch(day_users[chosen], sequences.item_ids[rows], sequences.timestamps[rows],
                                windows[chosen], target_mask=torch.from_numpy(is_new[rows]))
            yield int(sequences.timestamps[rows].max()), batch

    def before_step(self, batch: SequenceBatch, optimizer: torch.optim.Optimizer) -> SequenceBatch:
        """Admit the batch's new positives (training-mode lookup), restart the rows given to new items,
        and mask out targets that got no row; the forward then reads the vocabulary without admitting."""
        new = batch.target_mask
        self.vocabulary.train()
        rows = self.vocabulary(batch.item_ids.values()[new], batch.timestamps[new])
        weight = self.model.items.weight
        self.vocabulary.reinitialize(weight, optimizer.state.get(weight), std=SequenceEmbeddings.INIT_STD)
        self.vocabulary.eval()
        mask = new.clone()
        mask[new] = rows != DEFAULT_ROW  # not admitted (embedding.min_count): nothing to learn it into
        batch.target_mask = mask
        return batch

    # -- 3. after the chunk

    def after_chunk(self, table: pa.Table) -> dict[str, int]:
        """Append the chunk's positives to the stored histories and drop expired users; returns counts."""
        users, items, times = self._positives(table)
        day_users, counts = np.unique(users, return_counts=True)
        self.histories.store(day_users, self.histories.extend(day_users, items, times, counts))
        now = pc.max(table.column(self.config.stream.time_column)).as_py()
        expired = 0 if now is None else self.histories.expire(int(now), self.history_ttl_seconds)
        return {"users": len(self.histories), "expired": expired, "positives": int(users.size)}
