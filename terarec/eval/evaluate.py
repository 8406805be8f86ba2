"""Runs a model over one split and computes its metrics (AUC / LogLoss / gAUC, or HR / NDCG / MRR under a protocol)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from terarec.data.batches import CTRBatch, SequenceBatch
from terarec.eval.binary import BinaryAccumulator
from terarec.eval.protocols import rank_targets
from terarec.eval.ranking import RankingAccumulator


@torch.no_grad()
def evaluate_ctr(model: nn.Module, batches: Iterable[CTRBatch], labels: list[str], progress: bool = False) -> dict[str, float]:
    """AUC, LogLoss and gAUC for each label; keys are ``auc`` etc. for one label, ``<label>_auc`` for
    several, plus their ``mean_auc``."""
    model.eval()
    accumulators = [BinaryAccumulator() for _ in labels]
    for batch in tqdm(batches, desc="eval", leave=False, disable=not progress):
        probs = torch.sigmoid(model(batch))
        has_users = bool((batch.user_ids >= 0).all())
        for index, accumulator in enumerate(accumulators):
            accumulator.update(
                batch.labels[:, index].numpy(), probs[:, index].numpy(), batch.user_ids.numpy() if has_users else None
            )
    metrics: dict[str, float] = {}
    for label, accumulator in zip(labels, accumulators):
        prefix = "" if len(labels) == 1 else f"{label}_"
        metrics.update({f"{prefix}{key}": float(value) for key, value in accumulator.compute().items()})
    if len(labels) > 1:  # what multi-task runs select their best epoch on
        metrics["mean_auc"] = sum(metrics[f"{label}_auc"] for label in labels) / len(labels)
    return metrics


@torch.no_grad()
def evaluate_ranking(
    model: nn.Module,
    batches: Iterable[SequenceBatch],
    ks: list[int],
    protocol: str = "exclude_history",
    num_sampled: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float | int | str]:
    """HR@K, NDCG@K and MRR of each batch's target over the catalogue under an evaluation protocol.

    Args:
        model: a next-item model (``score_catalogue(batch)`` and ``item_rows(ids)``).
        batches: evaluation batches, each carrying ``target_item_ids`` and the users' full
            histories in ``seen_item_ids``.
        ks: cut-offs.
        protocol: ``exclude_history``, ``allow_repeats`` or ``sampled``
            (``terarec.eval.protocols``).
        num_sampled, seed: the ``sampled`` protocol's negatives per target and their seed.

    Returns:
        The metrics, ``count`` (targets ranked), ``repeated_targets`` (targets that repeat an
        item of the user's history) and ``protocol``.
    """
    model.eval()
    accumulator = RankingAccumulator(ks=tuple(ks))
    repeated_targets = 0
    for batch in tqdm(batches, desc="eval", leave=False, disable=not progress):
        if batch.target_item_ids is None or batch.seen_item_ids is None:
            raise ValueError("evaluation batches need target_item_ids and seen_item_ids (a valid / test split)")
        ranks, repeated = rank_targets(
            model.score_catalogue(batch),
            model.item_rows(batch.target_item_ids),
            model.item_rows(batch.seen_item_ids.values()),
            batch.seen_item_ids.lengths(),
            protocol,
            user_ids=batch.user_ids,
            num_sampled=num_sampled,
            seed=seed,
        )
        accumulator.add_ranks(ranks)
        repeated_targets += int(repeated.sum())
    metrics: dict[str, float | int | str] = dict(accumulator.compute())
    metrics.update(count=accumulator.count, repeated_targets=repeated_targets, protocol=protocol)
    return metrics
