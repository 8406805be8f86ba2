"""A simple embedding model for CTR: pooled embeddings of every sparse feature, concatenated
with the dense features, through an MLP to one logit per label.

It is the "embedding + MLP" baseline that every deep CTR model extends (e.g. the deep part of
Wide & Deep, Cheng et al. 2016): logit = MLP([e_1, ..., e_F, x_dense]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class EmbeddingMLP(nn.Module):
    """Embedding + MLP CTR model.

    Args (Config):
        embedding_dim: width of every feature's table.
        hidden: MLP hidden widths.
        dropout: dropout after each hidden layer.
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        hidden: list[int] = field(default_factory=lambda: [256, 128])
        dropout: float = 0.0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.sparse_arch = pooled_embeddings(inputs, config.embedding_dim)
        width = config.embedding_dim * len(inputs.vocabularies) + inputs.num_dense
        self.dense_arch = MLP(width, config.hidden, out_features=max(1, len(inputs.labels)), dropout=config.dropout)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        pooled = self.sparse_arch(batch.sparse_features).values()  # (B, F * d)
        return self.dense_arch(torch.cat([pooled, batch.dense_features], dim=1))  # (B, num_labels)
