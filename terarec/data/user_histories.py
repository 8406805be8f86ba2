"""Per-user event histories kept across a stream's chunks: each user's last ``max_length`` items and times.

A sequence model on a stream (``terarec stream`` with ``task: sequential``) sees one day at a
time, but predicts from what each user did before: this is that memory. It holds, for every
user seen within the TTL, the most recent ``max_length`` (item id, time) pairs, oldest first.
Memory is bounded by the users active within the TTL, not by the users ever seen: ``expire``
drops a user whose last event is older than the TTL, in event time.

Storage is five arrays (saved as tensors in a streaming run's ``state.pt``, no pickle):
``user_ids`` (U,) sorted, ``item_ids`` and ``timestamps`` (U, max_length) right-aligned (a
user's events are the last ``lengths[u]`` columns, oldest first), ``lengths`` (U,) and
``last_seen`` (U,).

Example:
    >>> histories = UserHistories(max_length=2)
    >>> users, counts = np.array([7, 9]), np.array([3, 1])
    >>> items, times = np.array([1, 2, 3, 4]), np.array([10, 11, 12, 10])
    >>> jagged = histories.extend(users, items, times, counts)
    >>> histories.store(users, jagged)
    >>> values, _, lengths = histories.get(np.array([9, 7, 8]))
    >>> values.tolist(), lengths.tolist()  # user 7 keeps its last 2 items; 8 has none
    ([4, 2, 3], [1, 2, 0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from terarec.data.batches import gather_ranges

STATE_KEYS = ("user_ids", "item_ids", "timestamps", "lengths", "last_seen")


@dataclass
class JaggedHistories:
    """Users' sequences, flat and oldest first: a stored history followed by new events.

    Args:
        item_ids, timestamps: (N,) values.
        lengths: (B,) events per user.
        stored_lengths: (B,) how many of each user's first events came from the stored history
            (the rest are the new events).
    """

    item_ids: np.ndarray
    timestamps: np.ndarray
    lengths: np.ndarray
    stored_lengths: np.ndarray

    @property
    def is_new(self) -> np.ndarray:
        """(N,) True for the values that are new events (not from the stored history)."""
        return gather_ranges(np.zeros_like(self.lengths), self.lengths) >= np.repeat(self.stored_lengths, self.lengths)


class UserHistories:
    """Each user's last ``max_length`` events across chunks, with TTL expiry in event time (module docstring).

    Args:
        max_length: events kept per user.
    """

    def __init__(self, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"UserHistories: max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self.user_ids = np.zeros(0, np.int64)
        self.item_ids = np.zeros((0, max_length), np.int64)
        self.timestamps = np.zeros((0, max_length), np.int64)
        self.lengths = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.user_ids.size)

    def _index(self, users: np.ndarray) -> np.ndarray:
        """Each user's row, -1 for users not held."""
        at = np.searchsorted(self.user_ids, users).clip(max=max(0, len(self) - 1))
        found = (at < len(self)) & (self.user_ids[at] == users) if len(self) else np.zeros(users.size, bool)
        return np.where(found, at, -1)

    def get(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, timestamps, lengths): the stored histories of ``users``, jagged, oldest first
        (length 0 for a user not held)."""
        index = self._index(users)
        lengths = np.zeros(users.size, np.int64)
        lengths[index >= 0] = self.lengths[index[index >= 0]]
        if not lengths.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64), lengths
        rows = index.clip(min=0)
        kept = np.arange(self.max_length)[None, :] >= (self.max_length - lengths)[:, None]  # right-aligned
        return self.item_ids[rows][kept], self.timestamps[rows][kept], lengths

    def extend(self, users: np.ndarray, item_ids: np.ndarray, timestamps: np.ndarray,
               counts: np.ndarray) -> JaggedHistories:
        """Each of ``users``' stored history followed by its new events.

        Args:
            users: (B,) distinct user ids.
            item_ids, timestamps: (N,) the new events, grouped by user in ``users``' order, oldest first.
            counts: (B,) new events per user.
        """
        stored_items, stored_times, stored_lengths = self.get(users)
        lengths = stored_lengths + counts
        starts = np.cumsum(lengths) - lengths
        stored_at = gather_ranges(starts, starts + stored_lengths)
        new_at = gather_ranges(starts + stored_lengths, starts + lengths)
        values, times = np.empty(int(lengths.sum()), np.int64), np.empty(int(lengths.sum()), np.int64)
        values[stored_at], times[stored_at] = stored_items, stored_times
        values[new_at], times[new_at] = item_ids, timestamps
        return JaggedHistories(values, times, lengths, stored_lengths)

    def store(self, users: np.ndarray, sequences: JaggedHistories) -> None:
        """Make each user's stored history the last ``max_length`` events of its sequence (``extend``'s
        answer); the user's last-seen time becomes its last event's."""
        ends = np.cumsum(sequences.lengths)
        tails = np.minimum(sequences.lengths, self.max_length)
        taken = gather_ranges(ends - tails, ends)
        kept = np.arange(self.max_length)[None, :] >= (self.max_length - tails)[:, None]
        items = np.zeros((users.size, self.max_length), np.int64)
        times = np.zeros((users.size, self.max_length), np.int64)
        items[kept], times[kept] = sequences.item_ids[taken], sequences.timestamps[taken]
        last_seen = np.where(tails > 0, times[:, -1], 0)
        index = self._index(users)
        held, rows = index >= 0, index[index >= 0]
        self.item_ids[rows], self.timestamps[rows] = items[held], times[held]
        self.lengths[rows], self.last_seen[rows] = tails[held], last_seen[held]
        new = ~held
        user_ids = np.concatenate([self.user_ids, users[new]])
        order = np.argsort(user_ids, kind="stable")
        self.user_ids = user_ids[order]
        self.item_ids = np.concatenate([self.item_ids, items[new]])[order]
        self.timestamps = np.concatenate([self.timestamps, times[new]])[order]
        self.lengths = np.concatenate([self.lengths, tails[new]])[order]
        self.last_seen = np.concatenate([self.last_seen, last_seen[new]])[order]

    def expire(self, now: int, ttl_seconds: float) -> int:
        """Drop the users whose last event is older than ``ttl_seconds`` before ``now``; returns how many."""
        keep = self.last_seen >= now - ttl_seconds
        for name in STATE_KEYS:
            setattr(self, name, getattr(self, name)[keep])
        return int((~keep).sum())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The arrays as tensors (for ``torch.save``; loadable with ``weights_only=True``)."""
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in STATE_KEYS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name in STATE_KEYS if name not in state]
        if missing:
            raise ValueError(f"UserHistories: the saved state has no {missing}")
        if state["item_ids"].shape[1] != self.max_length:
            raise ValueError(f"UserHistories: saved with max_length {state['item_ids'].shape[1]}, "
                             f"this run keeps {self.max_length} (data.max_length)")
        for name in STATE_KEYS:
            setattr(self, name, state[name].numpy().copy())
