"""Eviction policies of the managed vocabulary: what usage each keeps, and which rows it frees first.

``lfu``: lowest decayed count (counts halve every ``count_half_life`` looked-up ids);
``lru``: oldest last-seen time (event time when lookups carry timestamps, else the step);
``ttl``: as LRU, and after every training lookup the rows last seen more than ``ttl_seconds``
before the clock are freed. A policy reads and writes the vocabulary's buffers
(``row_counts``, ``row_last_seen``, ``ids_since_decay``, ``clock``, ``row_ids``), so its
state is checkpointed with the vocabulary; ``lowest_rows`` picks the victims.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from terarec.embedding.vocabulary import ManagedVocabulary

EMPTY = -(2**63)  # a row (or hash slot) that holds no id
NEVER_SEEN = -(2**63)  # last-seen time of a free row
_SAMPLED_SELECTION_ROWS = 1 << 18  # from this many rows, victims are picked by a sampled threshold


class EvictionPolicy:
    """What every policy offers: the scores it evicts by (lowest first), its usage record, expiry."""

    name = ""

    def scores(self, vocab: ManagedVocabulary) -> torch.Tensor:
        raise NotImplementedError

    def record(self, vocab: ManagedVocabulary, rows, num_ids, timestamps, new_rows, new_prior) -> None:
        """Note a training batch's lookups: its rows, how many ids, their times, the rows just assigned."""
        raise NotImplementedError

    def expired_rows(self, vocab: ManagedVocabulary) -> torch.Tensor | None:
        """Rows to free after a training lookup whatever the room left (None: none)."""
        return None


class LFU(EvictionPolicy):
    """Least frequently used: the lowest decayed counts go first."""

    name = "lfu"

    def __init__(self, count_half_life: int) -> None:
        self.count_half_life = count_half_life

    def scores(self, vocab: ManagedVocabulary) -> torch.Tensor:
        return vocab.row_counts

    def record(self, vocab: ManagedVocabulary, rows, num_ids, timestamps, new_rows, new_prior) -> None:
        """Count this batch's lookups (after decaying); new rows start from the sightings that earned them."""
        if self.count_half_life > 0:
            vocab.ids_since_decay += num_ids
            # Decay in coarse steps (a full pass over the counts costs ~capacity operations).
            if int(vocab.ids_since_decay) * 64 >= self.count_half_life:
                vocab.row_counts.mul_(0.5 ** (int(vocab.ids_since_decay) / self.count_half_life))
                vocab.ids_since_decay.zero_()
        if new_prior is not None:
            vocab.row_counts.index_copy_(0, new_rows, new_prior)
        vocab.row_counts.index_add_(0, rows, torch.ones(rows.numel(), dtype=torch.float32))


class LRU(EvictionPolicy):
    """Least recently used: the oldest last-seen times go first."""

    name = "lru"

    def scores(self, vocab: ManagedVocabulary) -> torch.Tensor:
        return vocab.row_last_seen

    def record(self, vocab: ManagedVocabulary, rows, num_ids, timestamps, new_rows, new_prior) -> None:
        vocab.row_counts.index_add_(0, rows, torch.ones(rows.numel(), dtype=torch.float32))
        if isinstance(timestamps, torch.Tensor) and timestamps.dim() > 0:
            vocab.row_last_seen.scatter_reduce_(0, rows, timestamps.reshape(-1).to(torch.int64), "amax")
        else:
            vocab.row_last_seen.index_fill_(0, rows, int(vocab.clock))


class TTL(LRU):
    """Rows older than ``ttl_seconds`` are freed after every training lookup; oldest first when full."""

    name = "ttl"

    def __init__(self, ttl_seconds: float) -> None:
        super().__init__()
        self.ttl_seconds = ttl_seconds

    def expired_rows(self, vocab: ManagedVocabulary) -> torch.Tensor:
        limit = int(vocab.clock) - self.ttl_seconds
        return ((vocab.row_last_seen < limit) & (vocab.row_ids != EMPTY)).nonzero().squeeze(1)


def make_policy(evict: str, count_half_life: int, ttl_seconds: float | None) -> EvictionPolicy:
    """The policy named ``evict`` (``lfu``, ``lru`` or ``ttl``)."""
    if evict == "lfu":
        return LFU(count_half_life)
    if evict == "lru":
        return LRU()
    if evict == "ttl":
        return TTL(ttl_seconds)
    raise ValueError(f"ManagedVocabulary: evict must be 'lfu', 'lru' or 'ttl', got {evict!r}")


def lowest_rows(scores: torch.Tensor, evictable: torch.Tensor, count: int, generator_seed: int) -> torch.Tensor:
    """The ``count`` evictable rows of lowest score (ties in any order).

    A full ``topk`` over the capacity costs ~10 ms per million rows; instead a threshold is
    read off a sample of 65,536 scores a little above the wanted share, and ``topk`` runs over
    the rows at or below it only. If they are too few (unlucky sample), the full ``topk``.
    The sample is drawn from ``torch.Generator().manual_seed(generator_seed)``.
    """
    available = int(evictable.sum())
    count = min(count, available)
    if count <= 0:
        return torch.zeros(0, dtype=torch.int64)
    if count < available and scores.numel() >= _SAMPLED_SELECTION_ROWS:
        generator = torch.Generator().manual_seed(generator_seed)
        sample_rows = torch.randint(0, scores.numel(), (1 << 16,), generator=generator)
        sample = scores.index_select(0, sample_rows)[evictable.index_select(0, sample_rows)]
        if sample.numel() >= 1024:
            share = min(1.0, 1.5 * count / available + 4.0 / math.sqrt(sample.numel()))
            threshold = torch.kthvalue(sample, max(1, math.ceil(share * sample.numel()))).values
            candidates = ((scores <= threshold) & evictable).nonzero().squeeze(1)
            if candidates.numel() >= count:
                chosen = torch.topk(scores.index_select(0, candidates), count, largest=False, sorted=False).indices
                return candidates.index_select(0, chosen)
    never = float("inf") if scores.is_floating_point() else torch.iinfo(scores.dtype).max
    return torch.topk(scores.masked_fill(~evictable, never), count, largest=False, sorted=False).indices
