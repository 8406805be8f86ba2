"""Evaluation protocols: which catalogue items a user's next-item target is ranked against.

A protocol decides the candidate set of a user from what the user has already seen, never
from the target, so a model cannot gain from a candidate set that knows the answer:

* ``exclude_history`` (the default): every item of the user's full history (all earlier
  events, not only the model's input window) is removed from the candidates. A target the user
  had before is then not a candidate: it counts as a miss (rank ``num_items - 1``, the last
  place). This is RecBole's default full-sort protocol and the ICLRec one.
* ``allow_repeats``: nothing is removed; for data where consuming an item again is the task.
* ``sampled``: the target against ``num_sampled`` negatives drawn uniformly (with replacement)
  from the items the user has not seen, the protocol of older papers (SASRec, BERT4Rec), for
  comparison with their tables only. A repeated target is a miss here too (rank
  ``num_sampled``). The draws come from a hash of ``(seed, user id, draw index)``, so a user
  gets the same negatives whatever the batching or worker order.

Every protocol reports which targets repeat an earlier item (``repeated``), so the share of
re-consumption in a data set is visible beside the figures.

Catalogue rows are those of the item vocabulary: row 0 holds unknown ids and is never a
candidate (models score it ``-inf``), so it is neither excluded, counted as a repeat nor
sampled.

The serving side ranks with the same rule: :func:`exclude_seen` is what
``recommend(exclude_seen=True)`` applies before its top-k.

Example:
    >>> scores = torch.tensor([[-torch.inf, 0.75, 0.5, 0.625, 0.25]])
    >>> seen_rows, seen_lengths = torch.tensor([1, 3]), torch.tensor([2])  # the user had items 1 and 3
    >>> exclude_seen(scores, seen_rows, seen_lengths).tolist()
    [[-inf, -inf, 0.5, -inf, 0.25]]
    >>> ranks, repeated = rank_targets(scores, torch.tensor([2]), seen_rows, seen_lengths)
    >>> ranks.tolist(), repeated.tolist()  # item 2 is first once items 1 and 3 are removed
    ([0], [False])
    >>> ranks, repeated = rank_targets(scores, torch.tensor([3]), seen_rows, seen_lengths)
    >>> ranks.tolist(), repeated.tolist()  # a repeated target is no candidate: last place
    ([4], [True])
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from terarec.config import EvalProtocol as Protocol
from terarec.eval.ranking import rank_of_targets
from terarec.features.hashing import splitmix64

__all__ = ["Protocol", "PROTOCOLS", "exclusion_mask", "exclude_seen", "sampled_negatives", "rank_targets"]

PROTOCOLS: tuple[str, ...] = get_args(Protocol)
UNKNOWN_ROW = 0  # the vocabularies' row for unknown ids (terarec.features.vocabulary)


def exclusion_mask(seen_rows: torch.Tensor, seen_lengths: torch.Tensor, num_items: int) -> torch.Tensor:
    """(B, num_items) bool: True at every catalogue row a user has seen (row 0 never).

    Args:
        seen_rows: (N,) catalogue rows of every user's seen items, users concatenated in
            order; repeats are fine.
        seen_lengths: (B,) how many of ``seen_rows`` belong to each user.
        num_items: catalogue rows (the score matrix's width).

    Example:
        >>> exclusion_mask(torch.tensor([2, 0, 1, 2]), torch.tensor([1, 3]), 4).int().tolist()
        [[0, 0, 1, 0], [0, 1, 1, 0]]
    """
    if seen_rows.dim() != 1 or seen_lengths.dim() != 1:
        raise ValueError("seen_rows and seen_lengths must be 1-D")
    if int(seen_lengths.sum()) != seen_rows.numel():
        raise ValueError(f"seen_lengths sum to {int(seen_lengths.sum())} but there are {seen_rows.numel()} seen_rows")
    if seen_rows.numel() and (int(seen_rows.min()) < 0 or int(seen_rows.max()) >= num_items):
        raise ValueError(f"seen_rows must be catalogue rows in [0, {num_items})")
    users = torch.repeat_interleave(torch.arange(len(seen_lengths), device=seen_rows.device), seen_lengths)
    mask = torch.zeros(len(seen_lengths), num_items, dtype=torch.bool, device=seen_rows.device)
    mask[users, seen_rows] = True
    mask[:, UNKNOWN_ROW] = False
    return mask


def exclude_seen(scores: torch.Tensor, seen_rows: torch.Tensor, seen_lengths: torch.Tensor) -> torch.Tensor:
    """A copy of ``scores`` (B, num_items) with every user's seen items at ``-inf``.

    What ``exclude_history`` ranks and what a recommender's ``exclude_seen`` applies before
    its top-k. Arguments as in :func:`exclusion_mask`.
    """
    mask = exclusion_mask(seen_rows.to(scores.device), seen_lengths.to(scores.device), scores.shape[1])
    return scores.masked_fill(mask, -torch.inf)


def sampled_negatives(
    user_ids: torch.Tensor, excluded: torch.Tensor, targets: torch.Tensor, num_sampled: int, seed: int
) -> torch.Tensor:
    """(B, num_sampled) catalogue rows drawn uniformly, with replacement, from the rows that are
    neither excluded, the target nor row 0.

    Draw j of user u is the ``(hash(seed, u, j) mod m_u)``-th allowed row, m_u the number of
    allowed rows: fixed by the seed and the user id, independent of batching.

    Args:
        user_ids: (B,) integer user ids.
        excluded: (B, num_items) bool, True at the user's seen items (:func:`exclusion_mask`).
        targets: (B,) catalogue row of each target.
        num_sampled: negatives per user, >= 1.
        seed: the run's seed (``train.seed``).

    Raises:
        ValueError: if a user has no row left to draw from.
    """
    if num_sampled < 1:
        raise ValueError(f"num_sampled must be >= 1, got {num_sampled}")
    batch, num_items = excluded.shape
    allowed = ~excluded
    allowed[:, UNKNOWN_ROW] = False
    allowed[torch.arange(batch, device=allowed.device), targets] = False
    counts = allowed.sum(1)  # (B,)
    if bool((counts == 0).any()):
        user = int(user_ids[int(torch.nonzero(counts == 0)[0, 0])])
        raise ValueError(f"user {user} has seen every catalogue item: no negative to sample for protocol 'sampled'")
    seed_key = np.array([seed], dtype=np.int64).view(np.uint64)
    user_keys = splitmix64(seed_key ^ user_ids.cpu().numpy().astype(np.int64).view(np.uint64))
    draw_keys = splitmix64(user_keys[:, None] ^ np.arange(num_sampled, dtype=np.uint64)[None, :])  # (B, N)
    draws = draw_keys % counts.cpu().numpy().astype(np.uint64)[:, None]
    # The (d + 1)-th allowed row is where the running count of allowed rows first reaches d + 1.
    running = allowed.cumsum(1)
    wanted = torch.from_numpy(draws.astype(np.int64) + 1).to(allowed.device)
    return torch.searchsorted(running, wanted)


@torch.no_grad()
def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen_rows: torch.Tensor,
    seen_lengths: torch.Tensor,
    protocol: str = "exclude_history",
    user_ids: torch.Tensor | None = None,
    num_sampled: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each user's target under ``protocol``, and which targets are repeats.

    Args:
        scores: (B, num_items) scores of every catalogue row (row 0 ``-inf``).
        targets: (B,) catalogue row of each user's target.
        seen_rows, seen_lengths: every user's full history as catalogue rows, jagged (see
            :func:`exclusion_mask`).
        protocol: one of :data:`PROTOCOLS` (see the module docstring).
        user_ids: (B,) user ids; needed by ``sampled`` only.
        num_sampled: ``sampled``: negatives per target.
        seed: ``sampled``: the seed of the draws.

    Returns:
        ``(ranks, repeated)``: (B,) int64 ranks (0 is best; a target the protocol removed gets
        the last place) and (B,) bool, True where the target is one of the user's seen items.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    num_items = scores.shape[1]
    targets = targets.to(scores.device)
    excluded = exclusion_mask(seen_rows.to(scores.device), seen_lengths.to(scores.device), num_items)
    repeated = excluded.gather(1, targets.unsqueeze(1)).squeeze(1).cpu().numpy()
    if protocol == "allow_repeats":
        return rank_of_targets(scores, targets), repeated
    if protocol == "exclude_history":
        ranks = rank_of_targets(scores.masked_fill(excluded, -torch.inf), targets)
        ranks[repeated] = num_items - 1
        return ranks, repeated
    if user_ids is None:
        raise ValueError("protocol 'sampled' needs user_ids (the draws are seeded per user)")
    negatives = sampled_negatives(user_ids, excluded, targets, num_sampled, seed)
    candidates = torch.cat([targets.unsqueeze(1), negatives], 1)  # the target in column 0
    ranks = rank_of_targets(scores.gather(1, candidates), torch.zeros_like(targets))
    ranks[repeated] = num_sampled
    return ranks, repeated
