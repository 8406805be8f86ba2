"""Runs a model over one split and computes its metrics (AUC / LogLoss / gAUC, or HR / NDCG / MRR under a protocol)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from terarec.data.batches import CTRBatch, SequenceBatch
from terarec.eval.arrays import Gather
from terarec.eval.binary import BinaryAccumulator, auc, logloss
from terarec.eval.protocols import rank_targets
from terarec.eval.ranking import RankingAccumulator


@torch.no_grad()
def evaluate_ctr(model: nn.Module, batches: Iterable[CTRBatch], labels: list[str], progress: bool = False,
                 gather: Gather | None = None) -> dict[str, float]:
    """AUC, LogLoss and gAUC for each label; keys are ``auc`` etc. for one label, ``<label>_auc`` for
    several, plus their ``mean_auc``. ``gather``: joins every process's predictions before the
    metrics (a distributed evaluation), so they are the whole split's, not a mean of shares."""
    model.eval()
    accumulators = [BinaryAccumulator() for _ in labels]
    for batch in tqdm(batches, desc="eval", leave=False, disable=not progress):
        probs = torch.sigmoid(model(batch))
        has_users = bool((batch.user_ids >= 0).all())
        for index, accumulator in enumerate(accumulators):
            accumulator.update(
                batch.labels[:, index].numpy(), probs[:, index].numpy(), batch.user_ids.numpy() if has_users else None
            )
    if gather is not None:
        for accumulator in accumulators:
            accumulator.combine(gather)
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
    gather: Gather | None = None,
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
        gather: joins every process's ranks before the metrics (a distributed evaluation).

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
    if gather is not None:
        ranks = gather(accumulator.ranks)
        accumulator = RankingAccumulator(ks=tuple(ks))
        accumulator.add_ranks(ranks)
        repeated_targets = int(gather(np.array([repeated_targets])).sum())
    metrics: dict[str, float | int | str] = dict(accumulator.compute())
    metrics.update(count=accumulator.count, repeated_targets=repeated_targets, protocol=protocol)
    return metrics


@torch.no_grad()
def evaluate_ranking_tasks(
    model: nn.Module,
    batches: Iterable,
    labels: list[str],
    regression: list[bool],
    progress: bool = False,
) -> dict[str, float]:
    """Per-task metrics of a multi-task ranking model on the candidates of ranking batches.

    ``model(batch)`` gives (C, tasks) outputs for each series' candidate: logits for binary tasks,
    predicted log1p(value) for regression ones. Each task is judged against its label column
    (``batch.candidate_labels[:, i]``, named ``labels[i]``): AUC (and LogLoss for binary tasks);
    a regression task also gets the RMSE of its log1p prediction against the candidate's action
    (``batch.labels``). Keys: ``<label>_auc``, ``<label>_logloss``, ``<label>_rmse_log1p``,
    ``mean_auc`` and ``count``.
    """
    model.eval()
    outputs, label_values, actions = [], [], []
    for batch in tqdm(batches, desc="eval", leave=False, disable=not progress):
        outputs.append(model(batch))
        label_values.append(batch.candidate_labels)
        actions.append(batch.labels)
    if not outputs:
        raise ValueError("no impressions to evaluate in this split")
    scores, targets, values = torch.cat(outputs), torch.cat(label_values), torch.cat(actions)
    metrics: dict[str, float] = {}
    for index, (label, is_regression) in enumerate(zip(labels, regression)):
        y = targets[:, index].numpy()
        if is_regression:
            metrics[f"{label}_auc"] = auc(y, scores[:, index].numpy())
            error = scores[:, index] - torch.log1p(values[:, index].clamp(min=0))
            metrics[f"{label}_rmse_log1p"] = float(error.square().mean().sqrt())
        else:
            probs = torch.sigmoid(scores[:, index]).numpy()
            metrics[f"{label}_auc"] = auc(y, probs)
            metrics[f"{label}_logloss"] = logloss(y, probs)
    metrics["mean_auc"] = sum(metrics[f"{label}_auc"] for label in labels) / len(labels)
    metrics["count"] = int(scores.shape[0])
    return metrics
