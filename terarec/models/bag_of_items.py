"""A simple embedding model for next-item retrieval: the user is the mean of their history.

u_t = MLP(mean(e_{i_1}, ..., e_{i_t})) and score(u_t, j) = <u_t, e_j>, trained to predict
i_{t+1} at every position t with a softmax over the full catalogue (or ``num_negatives``
uniformly sampled items). Order-blind by design: it is the floor that sequence models
(SASRec, HSTU) must clear by using order and time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from terarec.data.batches import SequenceBatch
from terarec.embedding.factory import sequence_embeddings
from terarec.layers.mlp import MLP
from terarec.layers.retrieval import SampledSoftmax
from terarec.models.inputs import ModelInputs


class BagOfItems(nn.Module):
    """Mean-of-history retrieval model.

    Args (Config):
        embedding_dim: item embedding width.
        hidden: MLP widths applied to the mean (the last must equal embedding_dim; [] = none).
        num_negatives: 0 for a full softmax over the catalogue, else uniform sampled negatives.
    """

    task = "sequential"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 64
        hidden: list[int] = field(default_factory=list)
        num_negatives: int = 0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        if config.hidden and config.hidden[-1] != config.embedding_dim:
            raise ValueError("bag_of_items: the last hidden width must equal embedding_dim")
        self.config = config
        self.items = sequence_embeddings(inputs, config.embedding_dim)
        self.user_tower = MLP(config.embedding_dim, config.hidden) if config.hidden else nn.Identity()
        self.head = SampledSoftmax(num_negatives=config.num_negatives)  # raw dot products, no temperature

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.rows(ids)

    def _prefix_means(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean embedding of every prefix of every history, flattened: (N, d), rows, lengths."""
        embeddings = self.items(batch.item_ids).values()  # (N, d)
        rows = self.items.rows(batch.item_ids.values())  # (N,)
        lengths = batch.lengths
        offsets = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(rows.numel()) - torch.repeat_interleave(offsets, lengths)
        cumulative = torch.cumsum(embeddings, 0)
        start_sum = torch.repeat_interleave(cumulative[offsets.clamp(min=1) - 1] * (offsets > 0).unsqueeze(1), lengths, 0)
        means = (cumulative - start_sum) / (position + 1).unsqueeze(1)
        return means, rows, lengths

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        means, rows, lengths = self._prefix_means(batch)
        # Every position but each user's last predicts the next item.
        is_last = torch.zeros(rows.numel(), dtype=torch.bool)
        is_last[torch.cumsum(lengths, 0) - 1] = True
        users = self.user_tower(means[~is_last])
        targets = torch.roll(rows, -1)[~is_last]
        return self.head.loss(users, targets, self.items.weight)

    def user_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        means, _, lengths = self._prefix_means(batch)
        return self.user_tower(means[torch.cumsum(lengths, 0) - 1])  # (B, d)

    def score_catalogue(self, batch: SequenceBatch) -> torch.Tensor:
        return self.head.score_catalogue(self.user_vectors(batch), self.items.weight)  # (B, num_rows)
