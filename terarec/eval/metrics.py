"""Evaluation metrics for CTR prediction (AUC, log loss, gAUC) and full-catalogue ranking (HR, NDCG, MRR).

Everything here is vectorised numpy (or torch for the big score matrices of full-catalogue
ranking): there is no Python loop over examples or users.

Binary (CTR) metrics:

* :func:`auc` -- ROC AUC, ties scored as half (average ranks, same value as
  ``sklearn.metrics.roc_auc_score``).
* :func:`logloss` -- mean binary cross-entropy on clipped probabilities.
* :func:`gauc` / :func:`gauc_with_count` -- per-user AUC weighted by the user's number of
  impressions, over the users that have both a positive and a negative label.
* :class:`BinaryAccumulator` -- collects batches and computes all of the above at the end.

Full-catalogue ranking metrics (next-item / retrieval evaluation):

* :func:`rank_of_targets` -- 0-based rank of each row's target item among all items, with the
  user's history excluded and ties counted pessimistically.
* :func:`hit_rate_at_k`, :func:`ndcg_at_k`, :func:`mrr`, :func:`ranking_metrics` -- metrics
  computed from those ranks.
* :class:`RankingAccumulator` -- streams batches of score matrices, keeping only the ranks.

Example:
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> ranks = rank_of_targets(np.array([[0.9, 0.1, 0.5, 0.7]]), np.array([2]))
    >>> ranks.tolist()
    [2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "auc",
    "logloss",
    "gauc",
    "gauc_with_count",
    "rank_of_targets",
    "hit_rate_at_k",
    "ndcg_at_k",
    "mrr",
    "ranking_metrics",
    "RankingAccumulator",
    "BinaryAccumulator",
]

ArrayLike = Any  # np.ndarray, torch.Tensor, list, ... anything np.asarray understands


# --------------------------------------------------------------------------------------------
# Input helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Convert a torch tensor (any device, with or without grad) or array-like to numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_binary_labels(labels: ArrayLike) -> np.ndarray:
    """Return ``labels`` as a 1-D int8 array, raising ValueError if any value is not 0 or 1."""
    arr = _as_1d(labels, "labels")
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if arr.dtype.kind not in "iuf":
        bad = arr[0] if arr.size else None
        raise ValueError(f"labels must be 0/1, got value {bad!r} (dtype {arr.dtype})")
    bad_mask = (arr != 0) & (arr != 1)  # NaN compares unequal to both, so it is caught too
    if bad_mask.any():
        bad = arr[np.argmax(bad_mask)]
        raise ValueError(f"labels must be 0/1, got value {bad.item()!r}")
    return arr.astype(np.int8)


def _check_scores(scores: ArrayLike, n: int, name: str = "scores") -> np.ndarray:
    arr = _as_1d(scores, name)
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.shape[0] != n:
        raise ValueError(f"labels and {name} must have the same length, got {n} and {arr.shape[0]}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contain NaN")
    return arr


def _user_codes(user_ids: ArrayLike, n: int) -> np.ndarray:
    """Return user ids as a 1-D integer array usable as a sort key (factorising other dtypes)."""
    arr = _as_1d(user_ids, "user_ids")
    if arr.shape[0] != n:
        raise ValueError(f"labels and user_ids must have the same length, got {n} and {arr.shape[0]}")
    if arr.dtype.kind in "iub":
        return arr
    # strings, objects, floats: factorise into dense integer codes
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


# --------------------------------------------------------------------------------------------
# Binary metrics
# --------------------------------------------------------------------------------------------


def _grouped_auc(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank-sum (Mann-Whitney) AUC of every group, with average ranks for ties inside a group.

    Args:
        groups: (n,) integer group ids (need not be sorted or contiguous).
        labels: (n,) 0/1 labels.
        scores: (n,) float scores without NaN.

    Returns:
        ``(auc, n_pos, n_neg, size)``, one entry per distinct group (in sorted group order);
        ``auc`` is NaN for groups lacking a positive or a negative.
    """
    n = labels.shape[0]
    order = np.lexsort((scores, groups))  # primary key: group, secondary: score
    g = groups[order]
    s = scores[order]
    y = labels[order].astype(np.float64)

    # Group boundaries.
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.flatnonzero(new_group)
    group_size = np.diff(np.append(group_start, n))
    group_of = np.cumsum(new_group) - 1  # group index of each sorted position

    # Tie groups: runs of equal (group, score) pairs in the sorted order.
    new_tie = new_group.copy()
    new_tie[1:] |= s[1:] != s[:-1]
    tie_start = np.flatnonzero(new_tie)
    tie_size = np.diff(np.append(tie_start, n))
    tie_of = np.cumsum(new_tie) - 1

    # 1-based average rank inside the group: positions p..p+c-1 (0-based) -> p + (c + 1) / 2.
    tie_pos_in_group = tie_start - group_start[group_of[tie_start]]
    tie_rank = tie_pos_in_group + (tie_size + 1) / 2.0
    rank = tie_rank[tie_of]

    n_groups = group_start.shape[0]
    n_pos = np.bincount(group_of, weights=y, minlength=n_groups)
    n_neg = group_size - n_pos
    rank_sum_pos = np.bincount(group_of, weights=rank * y, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        group_auc = (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    group_auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return group_auc, n_pos, n_neg, group_size


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC, with tied scores counted as half a correct pair (average ranks, as sklearn).

    Args:
        labels: (n,) binary labels, 0 or 1 (bool, int or float arrays, lists or tensors).
        scores: (n,) real-valued scores; higher means more likely positive. NaN is rejected.

    Returns:
        The probability that a random positive is scored above a random negative.

    Raises:
        ValueError: if a label is not 0/1, the lengths differ, a score is NaN, or only one class
            is present ("AUC needs both positive and negative labels").

    Example:
        >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y = _check_binary_labels(labels)
    s = _check_scores(scores, y.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        raise ValueError(
            f"AUC needs both positive and negative labels, got {n_pos} positives "
            f"out of {y.shape[0]} examples"
        )
    value, _, _, _ = _grouped_auc(np.zeros(y.shape[0], dtype=np.int64), y, s)
    return float(value[0])


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, with probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        labels: (n,) binary labels, 0 or 1.
        probs: (n,) predicted probabilities of the positive class, in [0, 1] (logits are
            rejected: a value outside [0, 1] raises).
        eps: clipping margin, ``0 < eps < 0.5``; keeps the loss finite for confident mistakes.

    Returns:
        ``mean(-(y * log(p) + (1 - y) * log(1 - p)))`` in nats.

    Example:
        >>> round(logloss([1, 0], [0.5, 0.5]), 6)
        0.693147
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    y = _check_binary_labels(labels)
    p = _check_scores(probs, y.shape[0], name="probs")
    if y.shape[0] == 0:
        raise ValueError("logloss of an empty set is undefined")
    if (p < 0).any() or (p > 1).any():
        bad = p[np.argmax((p < 0) | (p > 1))]
        raise ValueError(f"probs must be probabilities in [0, 1], got {bad!r} (pass sigmoid(logits))")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def gauc_with_count(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> tuple[float, int]:
    """Group AUC: per-user AUC weighted by each user's number of impressions.

    Only users that have at least one positive and one negative label contribute; the others
    are skipped. Ties inside a user are scored with average ranks (as sklearn), so the result
    equals ``sum_u n_u * roc_auc_score(y_u, s_u) / sum_u n_u`` over the valid users ``u``.

    Args:
        user_ids: (n,) user id of each impression (integers, or any sortable values).
        labels: (n,) binary labels, 0 or 1.
        scores: (n,) real-valued scores; NaN is rejected.

    Returns:
        ``(gauc, n_users_used)``. If no user has both classes the result is ``(nan, 0)``.

    Example:
        >>> gauc_with_count([1, 1, 1, 2, 2, 3], [0, 1, 1, 0, 1, 1], [0.2, 0.1, 0.9, 0.3, 0.4, 0.5])
        (0.7, 2)
    """
    y = _check_binary_labels(labels)
    n = y.shape[0]
    s = _check_scores(scores, n)
    u = _user_codes(user_ids, n)
    if n == 0:
        raise ValueError("gAUC of an empty set is undefined")
    group_auc, _, _, size = _grouped_auc(u, y, s)
    valid = ~np.isnan(group_auc)
    n_used = int(valid.sum())
    if n_used == 0:
        return float("nan"), 0
    weights = size[valid].astype(np.float64)
    return float(np.dot(group_auc[valid], weights) / weights.sum()), n_used


def gauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """Group AUC (impression-weighted mean of per-user AUC); see :func:`gauc_with_count`.

    Args:
        user_ids: (n,) user id of each impression.
        labels: (n,) binary labels, 0 or 1.
        scores: (n,) real-valued scores.

    Returns:
        The gAUC over users having both classes, or NaN when there are none.

    Example:
        >>> gauc([1, 1, 1, 2, 2], [0, 1, 1, 0, 1], [0.2, 0.1, 0.9, 0.3, 0.4])
        0.7
    """
    return gauc_with_count(user_ids, labels, scores)[0]


# --------------------------------------------------------------------------------------------
# Full-catalogue ranking metrics
# --------------------------------------------------------------------------------------------


def _as_index_tensor(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise ValueError(f"{name} must be integer indices, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.long)


@torch.no_grad()
def rank_of_targets(
    scores: torch.Tensor | np.ndarray,
    targets: ArrayLike,
    exclude_rows: ArrayLike | None = None,
    exclude_cols: ArrayLike | None = None,
) -> np.ndarray:
    """0-based rank of each row's target item among all (non-excluded) items.

    ``rank = #{items j not excluded, j != target : score_j > score_target}
           + #{items j not excluded, j != target : score_j == score_target}``

    Ties are counted *pessimistically* (every tied item is ranked above the target), so a
    constant model gets the worst possible rank rather than a perfect one.

    Excluded items (typically the user's history) are given as COO coordinates: item
    ``exclude_cols[i]`` is removed from row ``exclude_rows[i]``. Duplicate coordinates are fine.
    **The target itself is never excluded**: if ``(r, targets[r])`` appears in the exclusion
    coordinates it is ignored and the target is still ranked (a re-consumed item is a valid
    target).

    The work is done with torch ops on the device of ``scores`` (a numpy array is wrapped
    without copying); no score matrix is copied or converted to numpy.

    Args:
        scores: (B, num_items) scores, torch tensor (any device) or numpy array. NaN is rejected.
        targets: (B,) integer index of each row's target item.
        exclude_rows: (E,) row indices of items to exclude, or None.
        exclude_cols: (E,) item indices to exclude, or None (both or neither must be given).

    Returns:
        (B,) numpy int64 array of ranks in ``[0, num_items - 1]``; 0 is the best.

    Example:
        >>> s = np.array([[0.9, 0.1, 0.5, 0.7]])
        >>> rank_of_targets(s, [2]).tolist()
        [2]
        >>> rank_of_targets(s, [2], exclude_rows=[0], exclude_cols=[0]).tolist()
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

    if (exclude_rows is None) != (exclude_cols is None):
        raise ValueError("exclude_rows and exclude_cols must be given together")
    if exclude_rows is not None:
        r = _as_index_tensor(exclude_rows, "exclude_rows", device)
        c = _as_index_tensor(exclude_cols, "exclude_cols", device)
        if r.shape != c.shape:
            raise ValueError(
                f"exclude_rows and exclude_cols must have the same length, got {r.shape[0]} and {c.shape[0]}"
            )
        if r.numel():
            if bool(((r < 0) | (r >= batch)).any()):
                raise ValueError(f"exclude_rows must be in [0, {batch})")
            if bool(((c < 0) | (c >= num_items)).any()):
                raise ValueError(f"exclude_cols must be in [0, {num_items})")
            # Deduplicate coordinates and drop the targets themselves (never excluded).
            key = torch.unique(r * num_items + c)
            r, c = key // num_items, key % num_items
            keep = c != t[r]
            r, c = r[keep], c[keep]
            # Excluded items that were counted above the target are taken back out.
            above = s[r, c] >= target_score[r, 0]
            rank = rank - torch.bincount(r[above], minlength=batch)

    return rank.cpu().numpy().astype(np.int64, copy=False)


def _check_ranks(ranks: ArrayLike) -> np.ndarray:
    arr = _as_1d(ranks, "ranks")
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

    def update(
        self,
        scores: torch.Tensor | np.ndarray,
        targets: ArrayLike,
        exclude_rows: ArrayLike | None = None,
        exclude_cols: ArrayLike | None = None,
    ) -> None:
        """Rank one batch; arguments as in :func:`rank_of_targets` (rows are batch-local)."""
        self._ranks.append(rank_of_targets(scores, targets, exclude_rows, exclude_cols))

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


class BinaryAccumulator:
    """Collects batches of labels / probabilities (and optionally user ids) for CTR metrics.

    This simply concatenates the arrays, so it is meant for evaluation sets that fit in host
    memory (a few hundred million float64 values at most); AUC and gAUC need the full sort.

    Example:
        >>> acc = BinaryAccumulator()
        >>> acc.update([0, 1], [0.1, 0.8], user_ids=[7, 7])
        >>> acc.update([0, 1], [0.4, 0.35], user_ids=[8, 8])
        >>> out = acc.compute()
        >>> out["auc"], out["gauc"], out["count"]
        (0.75, 0.5, 4)
    """

    def __init__(self) -> None:
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._users: list[np.ndarray] = []
        self._with_users: bool | None = None

    def update(self, labels: ArrayLike, scores: ArrayLike, user_ids: ArrayLike | None = None) -> None:
        """Add one batch.

        Args:
            labels: (n,) 0/1 labels.
            scores: (n,) predicted probabilities in [0, 1].
            user_ids: (n,) user ids; give them in every batch or in none.
        """
        y = _check_binary_labels(labels)
        s = _check_scores(scores, y.shape[0])
        with_users = user_ids is not None
        if self._with_users is not None and with_users != self._with_users:
            raise ValueError("user_ids must be given in every update or in none")
        self._with_users = with_users
        if with_users:
            u = _as_1d(user_ids, "user_ids")
            if u.shape[0] != y.shape[0]:
                raise ValueError(
                    f"labels and user_ids must have the same length, got {y.shape[0]} and {u.shape[0]}"
                )
            self._users.append(u)
        self._labels.append(y)
        self._scores.append(s)

    @property
    def count(self) -> int:
        """Number of examples seen so far."""
        return int(sum(y.shape[0] for y in self._labels))

    def compute(self) -> dict[str, float]:
        """Return ``{"auc", "logloss", "count"}`` plus ``"gauc"`` when user ids were given.

        Raises:
            ValueError: if nothing was added or only one class was seen (AUC undefined).
        """
        if not self._labels:
            raise ValueError("BinaryAccumulator.compute() called before any update()")
        y = np.concatenate(self._labels)
        s = np.concatenate(self._scores)
        out: dict[str, float] = {"auc": auc(y, s), "logloss": logloss(y, s)}
        if self._with_users:
            out["gauc"] = gauc(np.concatenate(self._users), y, s)
        out["count"] = int(y.shape[0])
        return out

    def reset(self) -> None:
        """Forget all batches."""
        self._labels.clear()
        self._scores.clear()
        self._users.clear()
        self._with_users = None
