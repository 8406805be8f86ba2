"""Runs a model over one split and computes its metrics (AUC / LogLoss / gAUC or HR / NDCG / MRR)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from terarec.data.batches import CTRBatch, SequenceBatch
from terarec.eval.metrics import BinaryAccumulator, RankingAccumulator, auc, logloss


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
    exclude_history: bool = True,
    progress: bool = False,
) -> dict[str, float]:
    """HR@K, NDCG@K and MRR of each batch's target over the full catalogue (history excluded)."""
    model.eval()
    accumulator = RankingAccumulator(ks=tuple(ks))
    for batch in tqdm(batches, desc="eval", leave=False, disable=not progress):
        scores = model.score_catalogue(batch)
        targets = model.item_rows(batch.target_item_ids)
        exclude_rows = exclude_cols = None
        if exclude_history:
            exclude_rows = torch.repeat_interleave(torch.arange(len(batch)), batch.lengths).numpy()
            exclude_cols = model.item_rows(batch.item_ids.values()).numpy()
        accumulator.update(scores, targets.numpy(), exclude_rows, exclude_cols)
    metrics = accumulator.compute()
    metrics["count"] = accumulator.count
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
