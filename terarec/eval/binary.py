"""Evaluation metrics for CTR prediction: AUC, log loss and gAUC.

Everything here is vectorised numpy: there is no Python loop over examples or users.

* :func:`auc` -- ROC AUC, ties scored as half (average ranks, same value as
  ``sklearn.metrics.roc_auc_score``).
* :func:`logloss` -- mean binary cross-entropy on clipped probabilities.
* :func:`gauc` / :func:`gauc_with_count` -- per-user AUC weighted by the user's number of
  impressions, over the users that have both a positive and a negative label.
* :class:`BinaryAccumulator` -- collects batches and computes all of the above at the end.

Example:
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
"""

from __future__ import annotations

import numpy as np

from terarec.eval.arrays import ArrayLike, Gather, as_1d

__all__ = ["auc", "logloss", "gauc", "gauc_with_count", "BinaryAccumulator"]


def _check_binary_labels(labels: ArrayLike) -> np.ndarray:
    """Return ``labels`` as a 1-D int8 array, raising ValueError if any value is not 0 or 1."""
    arr = as_1d(labels, "labels")
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
    arr = as_1d(scores, name)
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
    arr = as_1d(user_ids, "user_ids")
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
            u = as_1d(user_ids, "user_ids")
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

    def combine(self, gather: Gather) -> None:
        """Replace what was collected by ``gather`` of it: e.g. the concatenation over every process
        of a distributed evaluation, so ``compute`` gives the metrics of the whole split.

        Example:
            >>> acc = BinaryAccumulator()
            >>> acc.update([0, 1], [0.2, 0.6])
            >>> acc.combine(lambda values: np.concatenate([values, values]))  # two equal "processes"
            >>> acc.count
            4
        """
        joined = [np.concatenate(arrays) if arrays else np.zeros(0) for arrays in (self._labels, self._scores, self._users)]
        self._labels, self._scores, self._users = ([gather(values)] for values in joined)
        self._with_users = bool(gather(np.array([int(bool(self._with_users))])).max())

    def reset(self) -> None:
        """Forget all batches."""
        self._labels.clear()
        self._scores.clear()
        self._users.clear()
        self._with_users = None
