"""Runs a model over one split and computes its metrics (AUC / LogLoss / gAUC or HR / NDCG / MRR)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from terarec.data.batches import CTRBatch, SequenceBatch
from terarec.eval.binary import BinaryAccumulator
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
