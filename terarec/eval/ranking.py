"""Full-catalogue ranking metrics for next-item / retrieval evaluation: target ranks, HR, NDCG, MRR.

The score matrices are reduced with torch ops on their own device; the ranks are numpy.

* :func:`rank_of_targets` -- 0-based rank of each row's target item among the row's items,
  ties counted pessimistically (which items are candidates: ``terarec.eval.protocols``).
* :func:`hit_rate_at_k`, :func:`ndcg_at_k`, :func:`mrr`, :func:`ranking_metrics` -- metrics
  computed from those ranks.
* :class:`RankingAccumulator` -- streams batches of score matrices, keeping only the ranks.

Example:
    >>> ranks = rank_of_targets(np.array([[0.9, 0.1, 0.5, 0.7]]), np.array([2]))
    >>> ranks.tolist()
    [2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from terarec.eval.arrays import ArrayLike, as_1d

__all__ = ["rank_of_targets", "hit_rate_at_k", "ndcg_at_k", "mrr", "ranking_metrics", "RankingAccumulator"]


def _as_index_tensor(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise ValueError(f"{name} must be integer indices, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.long)


@torch.no_grad()
def rank_of_targets(scores: torch.Tensor | np.ndarray, targets: ArrayLike) -> np.ndarray:
    """0-based rank of each row's target item among all items of the row.

    ``rank = #{items j != target : score_j > score_target}
           + #{items j != target : score_j == score_target}``

    Ties are counted *pessimistically* (every tied item is ranked above the target), so a
    constant model gets the worst possible rank rather than a perfect one, and an item scored
    ``-inf`` (not a candidate) never ranks above a finite target. Which items are candidates
    (the user's history excluded or not, sampled negatives) is an evaluation protocol's
    decision: see ``terarec.eval.protocols``.

    The work is done with torch ops on the device of ``scores`` (a numpy array is wrapped
    without copying); no score matrix is copied or converted to numpy.

    Args:
        scores: (B, num_items) scores, torch tensor (any device) or numpy array. NaN is rejected.
        targets: (B,) integer index of each row's target item.

    Returns:
        (B,) numpy int64 array of ranks in ``[0, num_items - 1]``; 0 is the best.

    Example:
        >>> s = np.array([[0.9, 0.1, 0.5, 0.7]])
        >>> rank_of_targets(s, [2]).tolist()
        [2]
        >>> rank_of_targets(np.array([[-np.inf, 0.1, 0.5, 0.7]]), [2]).tolist()  # item 0 is no candidate
        [1]
    """
    s = scores.detach() if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    if s.dim() != 2:
        raise ValueError(f"scores must be 2-D (batch, num_items), got shape {tuple(s.shape)}")
    batch, num_items = s.shape
    device = s.device
    t = _as_index_tensor(targets, "targets", device)
    if t.shape[0] != batch:
        raise ValueError(f"targets must have one entry per row: {batch} rows, {t.shape[0]} targets")
    if batch == 0:
        return np.zeros(0, dtype=np.int64)
    if num_items == 0:
        raise ValueError("scores has no items")
    if bool(((t < 0) | (t >= num_items)).any()):
        raise ValueError(f"targets must be in [0, {num_items}), got min {int(t.min())} max {int(t.max())}")
    if s.is_floating_point() and bool(torch.isnan(s).any()):
        raise ValueError("scores contain NaN")

    target_score = s.gather(1, t.unsqueeze(1))  # (B, 1)
    # Items scored above or tied with the target, minus the target itself (an int32 sum of a
    # bool tensor is ~10x faster on CPU than the default int64 one; num_items < 2^31).
    rank = (s >= target_score).sum(dim=1, dtype=torch.int32).to(torch.int64) - 1
    return rank.cpu().numpy().astype(np.int64, copy=False)


def _check_ranks(ranks: ArrayLike) -> np.ndarray:
    arr = as_1d(ranks, "ranks")
    if arr.shape[0] == 0:
        raise ValueError("ranking metrics of an empty set are undefined")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"ranks must be numeric, got dtype {arr.dtype}")
    if np.isnan(arr.astype(np.float64)).any() or (arr < 0).any():
        raise ValueError("ranks must be non-negative (0-based)")
    return arr


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def hit_rate_at_k(ranks: ArrayLike, k: int) -> float:
    """Hit rate (recall with one target) at ``k``: fraction of ranks strictly below ``k``.

    Args:
        ranks: (n,) 0-based ranks, e.g. from :func:`rank_of_targets`.
        k: cutoff, a positive integer.

    Returns:
        ``mean(rank < k)``.

    Example:
        >>> hit_rate_at_k([0, 3, 20], 10)  # doctest: +ELLIPSIS
        0.666...
    """
    r = _check_ranks(ranks)
    k = _check_k(k)
    return float(np.mean(r < k))


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """NDCG at ``k`` with a single relevant item: ``1 / log2(rank + 2)`` if ``rank < k`` else 0.

    Args:
        ranks: (n,) 0-based ranks.
        k: cutoff, a positive integer.

    Returns:
        The mean over rows.

    Example:
        >>> ndcg_at_k([0, 1], 10)  # (1 + 1/log2(3)) / 2
        0.8154648767857288
    """
    r = _check_ranks(ranks).astype(np.float64)
    k = _check_k(k)
    gains = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: ArrayLike, k: int | None = None) -> float:
    """Mean reciprocal rank: mean of ``1 / (rank + 1)``, optionally 0 for ``rank >= k``.

    Args:
        ranks: (n,) 0-based ranks.
        k: optional cutoff; None means no cutoff.

    Returns:
        The mean reciprocal rank.

    Example:
        >>> mrr([0, 3])
        0.625
        >>> mrr([0, 3], k=2)
        0.5
    """
    r = _check_ranks(ranks).astype(np.float64)
    rr = 1.0 / (r + 1.0)
    if k is not None:
        k = _check_k(k)
        rr = np.where(r < k, rr, 0.0)
    return float(np.mean(rr))


def ranking_metrics(ranks: ArrayLike, ks: Sequence[int] = (10, 50, 200)) -> dict[str, float]:
    """HR@k and NDCG@k for each cutoff, plus MRR (no cutoff).

    Args:
        ranks: (n,) 0-based ranks.
        ks: cutoffs.

    Returns:
        ``{"hr@10": ..., "ndcg@10": ..., "hr@50": ..., ..., "mrr": ...}`` (keys in ``ks`` order).

    Example:
        >>> sorted(ranking_metrics([0, 3, 20], ks=(10,)))
        ['hr@10', 'mrr', 'ndcg@10']
    """
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = mrr(ranks)
    return out


# --------------------------------------------------------------------------------------------
# Streaming accumulators
# --------------------------------------------------------------------------------------------


class RankingAccumulator:
    """Streams batches of full-catalogue scores and keeps only the target ranks.

    Memory is O(number of evaluated rows): each batch's score matrix is reduced to ranks by
    :func:`rank_of_targets` and dropped.

    Args:
        ks: cutoffs for HR@k / NDCG@k.

    Example:
        >>> acc = RankingAccumulator(ks=(1, 2))
        >>> acc.update(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([0]))
        >>> acc.update(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([2]))
        >>> acc.compute()
        {'hr@1': 0.5, 'ndcg@1': 0.5, 'hr@2': 1.0, 'ndcg@2': 0.8154648767857288, 'mrr': 0.75}
    """

    def __init__(self, ks: Sequence[int] = (10, 50, 200)) -> None:
        self.ks = tuple(_check_k(k) for k in ks)
        self._ranks: list[np.ndarray] = []

    def update(self, scores: torch.Tensor | np.ndarray, targets: ArrayLike) -> None:
        """Rank one batch over its full catalogue; arguments as in :func:`rank_of_targets`."""
        self.add_ranks(rank_of_targets(scores, targets))

    def add_ranks(self, ranks: ArrayLike) -> None:
        """Add ranks computed elsewhere (e.g. under an evaluation protocol)."""
        self._ranks.append(as_1d(ranks, "ranks").astype(np.int64, copy=False))

    @property
    def ranks(self) -> np.ndarray:
        """All ranks seen so far, in update order."""
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    @property
    def count(self) -> int:
        """Number of ranked rows seen so far."""
        return int(sum(r.shape[0] for r in self._ranks))

    def compute(self) -> dict[str, float]:
        """Metrics over everything seen so far; see :func:`ranking_metrics`."""
        return ranking_metrics(self.ranks, self.ks)

    def reset(self) -> None:
        """Forget all batches."""
        self._ranks.clear()

