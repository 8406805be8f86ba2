"""Popularity baselines: an item's smoothed click rate (CTR) and its training count (retrieval).

Neither has trainable parameters: the trainer calls ``fit_statistics`` with the training
batches once. They are the floor every learned model must clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from terarec.data.batches import CTRBatch, SequenceBatch
from terarec.models.inputs import ModelInputs


class ItemPopularity(nn.Module):
    """CTR baseline: logit of the item's click rate, smoothed toward the global rate.

    rate(item) = (positives + s * global_rate) / (impressions + s), one per label.
    """

    task = "ctr"
    trainable = False

    @dataclass
    class Config:
        """Args: smoothing: pseudo-impressions at the global rate (s above); item_feature: the item key."""

        smoothing: float = 20.0
        item_feature: str = "item_id"

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        if config.item_feature not in inputs.vocabularies:
            raise ValueError(f"popularity: no sparse feature '{config.item_feature}' in the data")
        self.vocabulary = inputs.vocabularies[config.item_feature]
        num_labels = max(1, len(inputs.labels))
        self.register_buffer("positives", torch.zeros(self.vocabulary.num_rows, num_labels))
        self.register_buffer("impressions", torch.zeros(self.vocabulary.num_rows, 1))

    def fit_statistics(self, batches: Iterable[CTRBatch]) -> None:
        for batch in batches:
            rows = self.vocabulary(batch.sparse_features[self.config.item_feature].values())
            self.positives.index_add_(0, rows, batch.labels)
            self.impressions.index_add_(0, rows, torch.ones(len(rows), 1))

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        rows = self.vocabulary(batch.sparse_features[self.config.item_feature].values())
        global_rate = self.positives.sum(0) / self.impressions.sum().clamp(min=1)
        s = self.config.smoothing
        rate = (self.positives[rows] + s * global_rate) / (self.impressions[rows] + s)
        return torch.logit(rate.clamp(1e-6, 1 - 1e-6))


class MostPopular(nn.Module):
    """Retrieval baseline: every user gets the items most often seen in training histories."""

    task = "sequential"
    trainable = False

    @dataclass
    class Config:
        """No options."""

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.vocabulary = inputs.item_vocabulary
        self.register_buffer("counts", torch.zeros(self.vocabulary.num_rows))

    def fit_statistics(self, batches: Iterable[SequenceBatch]) -> None:
        for batch in batches:
            rows = self.vocabulary(batch.item_ids.values())
            self.counts.index_add_(0, rows, torch.ones(len(rows)))

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vocabulary(ids)

    def score_catalogue(self, batch: SequenceBatch) -> torch.Tensor:
        scores = self.counts.expand(len(batch), -1).clone()
        scores[:, 0] = -torch.inf  # the default row of unknown ids is never a candidate
        return scores
