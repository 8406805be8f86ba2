"""Batches for HSTU ranking: users' event series with their actions, and impressions to score.

A ``RankingBatch`` is a set of event series (jagged, oldest first). Every event carries its
item id, per-event categorical features (``item_features``, e.g. category, hour, device), a
timestamp and its actions (e.g. click, like, watch_time); a series may end with one
*candidate*, an event whose actions are to be predicted (its ``actions`` row holds the labels
and the model must not read it). ``terarec.models.hstu_ranking`` turns a series into the
interleaved tokens x_0, a_0, x_1, a_1, ..., candidate.

``RankingDataset`` reads a prepared events dataset:

* ``train``: each user's training events in windows of ``max_events`` (the last window ends at
  the user's last training event; earlier windows before it), no candidate: every event is a
  training target (its item token predicts its own actions).
* ``valid`` / ``test``: one series per impression of the split: the impression's history, as
  the ``hist_*`` list columns of ``add_ranking_history`` hold it (the user's events with a
  strictly earlier timestamp, the last ``max_length``, the same lists DIN reads), then the
  impression itself as the candidate.

Ids are slot-prefixed 64-bit ids (``terarec.features.hashing``) in the slot of the column
(``hist_X`` shares ``X``'s slot), so vocabularies fitted on the training rows
(``terarec.data.vocabularies.vocabulary_ids``) apply to both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset

from terarec.data import schema
from terarec.data.batches import gather_ranges, segment_bounds, split_code
from terarec.data.errors import DataError
from terarec.data.history import add_history, history_column
from terarec.data.schema import DatasetMeta
from terarec.features.hashing import hash_array


@dataclass
class RankingBatch:
    """Event series for HSTU ranking (see the module docstring).

    Args:
        user_ids: (B,) raw user ids.
        lengths: (B,) events per series, the candidate included.
        item_ids: (N,) 64-bit item ids, series concatenated.
        features: name -> (N,) 64-bit ids of a per-event categorical feature.
        user_features: name -> (B,) 64-bit ids of a per-user attribute.
        timestamps: (N,) seconds.
        actions: (N, num_actions) float32 actions (labels, for a candidate).
        is_candidate: (N,) True for a candidate event (at most one per series, last).
        candidate_labels: (C, num_labels) float32 label columns of the candidates (evaluation
            batches of a dataset given ``labels``), or None.
    """

    user_ids: torch.Tensor
    lengths: torch.Tensor
    item_ids: torch.Tensor
    timestamps: torch.Tensor
    actions: torch.Tensor
    is_candidate: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    user_features: dict[str, torch.Tensor] = field(default_factory=dict)
    candidate_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def labels(self) -> torch.Tensor:
        """(C, num_actions) the candidates' actions, in series order."""
        return self.actions[self.is_candidate]


def add_ranking_history(table: pa.Table, columns: Sequence[str], max_length: int) -> pa.Table:
    """``hist_<column>`` lists for the item, timestamp and the given columns (actions, features)."""
    names = list(dict.fromkeys([schema.ITEM_ID, schema.TIMESTAMP, *columns]))
    return add_history(table, names, max_length)


def _interleave(is_candidate: np.ndarray, history: np.ndarray, candidates: np.ndarray) -> torch.Tensor:
    """History rows where ``is_candidate`` is False, candidate rows where it is True."""
    out = np.empty((is_candidate.size,) + history.shape[1:], dtype=history.dtype)
    out[~is_candidate], out[is_candidate] = history, candidates
    return torch.from_numpy(out)


@dataclass
class RankingColumns:
    """Which columns a ranking series is made of, and how one is built from a table of rows.

    Args:
        actions: per-event action columns (float; nulls are 0).
        item_features: per-event categorical columns added to the item token.
        user_features: per-user categorical columns (one value per user).
        labels: columns of an impression carried as ``candidate_labels``.
    """

    actions: list[str]
    item_features: list[str] = field(default_factory=list)
    user_features: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def events(self, table: pa.Table, rows: np.ndarray | None, prefix: str = "") -> dict:
        """Per-event arrays (ids hashed in their column's slot) of ``rows`` or flattened lists."""

        def column(name: str) -> pa.Array:
            values = table.column(prefix + name).combine_chunks()
            return pc.list_flatten(values) if prefix else values.take(pa.array(rows))

        out = {
            "item_ids": hash_array(column(schema.ITEM_ID), schema.ITEM_ID),
            "timestamps": column(schema.TIMESTAMP).to_numpy(zero_copy_only=False).astype(np.int64),
            "features": {name: hash_array(column(name), name) for name in self.item_features},
        }
        actions = [pc.fill_null(column(name), 0).to_numpy(zero_copy_only=False).astype(np.float32)
                   for name in self.actions]
        out["actions"] = np.stack(actions, 1) if actions else np.zeros((len(out["item_ids"]), 0), np.float32)
        return out

    def history_batch(self, piece: pa.Table) -> RankingBatch:
        """One series per row of ``piece`` made of its ``hist_*`` lists alone, without a candidate: the
        history M-FALCON caches before scoring candidates (``HSTURanking.score_candidates``)."""
        history = self.events(piece, None, prefix="hist_")
        lengths = pc.list_value_length(piece.column(history_column(schema.ITEM_ID)).combine_chunks())
        lengths = pc.fill_null(lengths, 0).to_numpy().astype(np.int64)
        return RankingBatch(
            user_ids=torch.from_numpy(piece.column(schema.USER_ID).to_numpy(zero_copy_only=False).astype(np.int64)),
            lengths=torch.from_numpy(lengths),
            item_ids=torch.from_numpy(history["item_ids"]),
            timestamps=torch.from_numpy(history["timestamps"]),
            actions=torch.from_numpy(history["actions"]),
            is_candidate=torch.zeros(int(lengths.sum()), dtype=torch.bool),
            features={k: torch.from_numpy(history["features"][k]) for k in self.item_features},
            user_features={k: torch.from_numpy(hash_array(piece.column(k), k)) for k in self.user_features},
        )

    def impression_batch(self, piece: pa.Table) -> RankingBatch:
        """One series per row of ``piece``: the row's ``hist_*`` lists (its history), then the row
        itself as the candidate (its action columns, if present, are labels the model never reads)."""
        size = piece.num_rows
        history = self.events(piece, None, prefix="hist_")
        candidate = self.events(piece, np.arange(size))
        history_lengths = pc.list_value_length(piece.column(history_column(schema.ITEM_ID)).combine_chunks())
        history_lengths = pc.fill_null(history_lengths, 0).to_numpy().astype(np.int64)
        # Interleave: series i = its history, then its candidate.
        series_end = np.cumsum(history_lengths + 1)
        is_candidate = np.zeros(int(series_end[-1]) if size else 0, dtype=bool)
        is_candidate[series_end - 1] = True
        merged = partial(_interleave, is_candidate)
        return RankingBatch(
            user_ids=torch.from_numpy(piece.column(schema.USER_ID).to_numpy().astype(np.int64)),
            lengths=torch.from_numpy(history_lengths + 1),
            item_ids=merged(history["item_ids"], candidate["item_ids"]),
            timestamps=merged(history["timestamps"], candidate["timestamps"]),
            actions=merged(history["actions"], candidate["actions"]),
            is_candidate=torch.from_numpy(is_candidate),
            features={k: merged(history["features"][k], candidate["features"][k]) for k in self.item_features},
            user_features={k: torch.from_numpy(hash_array(piece.column(k), k)) for k in self.user_features},
            candidate_labels=torch.from_numpy(np.stack(
                [pc.fill_null(piece.column(name), 0).to_numpy().astype(np.float32) for name in self.labels], 1
            )) if self.labels else None,
        )


class RankingDataset(IterableDataset):
    """Streams RankingBatches of one split (see the module docstring); one part at a time.

    Args:
        folder: a prepared events dataset; ``valid`` / ``test`` need ``add_ranking_history``'s
            ``hist_*`` columns for the item, timestamp, actions and item features.
        split: ``train``, ``valid`` or ``test``.
        actions: per-event action columns (float; nulls are 0).
        item_features: per-event categorical columns added to the item token.
        user_features: per-user categorical columns (one value per user).
        max_events: events per training window.
        batch_size: series per batch.
        shuffle: shuffle the series (training); seeded by ``seed`` and the epoch.
        labels: valid / test: columns of each impression carried as ``candidate_labels``
            (e.g. ``long_watch``, a binary label for a regression action).
    """

    def __init__(
        self,
        folder: str | Path,
        split: str,
        actions: Sequence[str],
        item_features: Sequence[str] = (),
        user_features: Sequence[str] = (),
        max_events: int = 100,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        labels: Sequence[str] = (),
    ) -> None:
        self.folder = Path(folder)
        self.meta = DatasetMeta.load(self.folder)
        self.split, self.split_code = split, split_code(split)
        self.labels = list(labels)
        self.actions, self.item_features, self.user_features = list(actions), list(item_features), list(user_features)
        self.columns_spec = RankingColumns(self.actions, self.item_features, self.user_features, self.labels)
        if max_events < 1 or batch_size < 1:
            raise ValueError(f"max_events and batch_size must be >= 1, got {max_events} and {batch_size}")
        self.max_events, self.batch_size, self.shuffle, self.seed, self.epoch = max_events, batch_size, shuffle, seed, 0
        per_event = [schema.ITEM_ID, schema.TIMESTAMP, *self.actions, *self.item_features]
        needed = [schema.USER_ID, schema.SPLIT, *per_event, *self.user_features]
        if self.split_code != 0:
            needed += [history_column(name) for name in per_event] + self.labels
        for name in needed:
            if name not in self.meta.columns:
                hint = " (make them with terarec.data.ranking.add_ranking_history)" if name.startswith("hist_") else ""
                raise DataError(f"ranking batches need column '{name}'{hint}", path=self.meta.name, field=name)
        self.columns = list(dict.fromkeys(needed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _train_batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[RankingBatch]:
        table = table.filter(pc.equal(table.column(schema.SPLIT), 0))
        users = table.column(schema.USER_ID).to_numpy()
        starts, ends = segment_bounds(users)
        # Windows of max_events, the last ending at the user's last training event.
        counts = -(-(ends - starts) // self.max_events)
        user_of = np.repeat(np.arange(starts.size), counts)
        back = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0 = last window
        window_end = ends[user_of] - back * self.max_events
        window_start = np.maximum(starts[user_of], window_end - self.max_events)
        events = self.columns_spec.events(table, np.arange(table.num_rows))
        user_columns = {name: hash_array(table.column(name), name) for name in self.user_features}
        order = np.arange(window_start.size) if rng is None else rng.permutation(window_start.size)
        for start in range(0, order.size, self.batch_size):
            chosen = order[start : start + self.batch_size]
            rows = gather_ranges(window_start[chosen], window_end[chosen])
            yield RankingBatch(
                user_ids=torch.from_numpy(users[window_start[chosen]].astype(np.int64)),
                lengths=torch.from_numpy(window_end[chosen] - window_start[chosen]),
                item_ids=torch.from_numpy(events["item_ids"][rows]),
                timestamps=torch.from_numpy(events["timestamps"][rows]),
                actions=torch.from_numpy(events["actions"][rows]),
                is_candidate=torch.zeros(rows.size, dtype=torch.bool),
                features={k: torch.from_numpy(v[rows]) for k, v in events["features"].items()},
                user_features={k: torch.from_numpy(v[window_start[chosen]]) for k, v in user_columns.items()},
            )

    def _impression_batches(self, table: pa.Table) -> Iterator[RankingBatch]:
        table = table.filter(pc.equal(table.column(schema.SPLIT), self.split_code))
        for start in range(0, table.num_rows, self.batch_size):
            yield self.columns_spec.impression_batch(table.slice(start, self.batch_size))

    def __iter__(self) -> Iterator[RankingBatch]:
        rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
        for part in self.meta.parts:
            table = pq.read_table(self.folder / part, columns=self.columns)
            if self.split_code == 0:
                yield from self._train_batches(table, rng)
            else:
                yield from self._impression_batches(table)


def synthetic_ranking_source(data, history_length: int, history_columns: Sequence[str]):
    """The synthetic log (``terarec.data.sources.synthetic``) as ranking impressions.

    Adds ``action`` (click + like: the earlier actions DIN pools beside its history),
    ``long_watch`` (watch_time above the median watch time of the clicked rows: a binary label
    to judge a watch-time regression by AUC) and ``hist_*`` lists of each row's ``history_length``
    strictly earlier events (``add_ranking_history``) for the item, timestamp, ``history_columns``
    and ``action``. The whole table is held in memory (the median and the histories need it).
    """
    from terarec.data.sources.base import SourceData

    table = pa.concat_tables(list(data.chunks))
    click, like = table.column("click").to_numpy(), table.column("like").to_numpy()
    watch = table.column("watch_time").to_numpy()
    threshold = float(np.median(watch[click > 0])) if (click > 0).any() else 0.0
    table = table.append_column("action", pa.array((click + like).astype(np.int64)))
    table = table.append_column("long_watch", pa.array((watch > threshold).astype(np.float32)))
    table = add_ranking_history(table, [*history_columns, "action"], history_length)
    return SourceData(name=f"{data.name}-ranking", source=data.source, kind="events", chunks=[table],
                      sparse=list(data.sparse), dense=list(data.dense), labels=[*data.labels, "long_watch"],
                      sorted_by_user=data.sorted_by_user, side_tables=data.side_tables)
