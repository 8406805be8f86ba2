"""DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction").

    e_i, w_i = the d-wide embedding and the scalar weight of sparse feature i   (B, d), (B,)
    y_FM   = b + sum_i w_i + <w_dense, x_dense>               first order
           + sum_{i<j} <e_i, e_j>                              second order, computed in O(F d) as
             = 0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2)     (terarec.layers.cross.factorization_machine)
    y_DNN  = MLP([e_1, ..., e_F, x_dense])
    logit  = y_FM + y_DNN

The FM and the deep part share the embeddings e_i, as in the paper. Each feature value's
scalar w_i sits in the same table row as its e_i, one lookup split in two, so a managed
vocabulary admits and resets the row once for both (a second width-1 table would remap every id
twice per step). The row is [e_i, w_i, unused] of width d + 1 rounded up to a multiple of 4,
because the fused engine's FBGEMM tables accept no other width. With several labels the deep
part has one output per label and the FM term is added to each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.cross import factorization_machine
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class DeepFM(nn.Module):
    """Factorization machine + MLP over shared embeddings.

    Args (Config):
        embedding_dim (16): d, the width of every sparse feature's embedding e_i.
        mlp ([400, 400, 400]): hidden widths of the deep part.
        dropout (0.0): dropout after each hidden layer of the deep part.
        batch_norm (False): batch normalisation in the deep part's hidden layers.

    Example:
        >>> model = DeepFM(DeepFM.Config(embedding_dim=10), inputs)  # doctest: +SKIP
        >>> model(batch).shape  # doctest: +SKIP
        torch.Size([B, num_labels])
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        mlp: list[int] = field(default_factory=lambda: [400, 400, 400])
        dropout: float = 0.0
        batch_norm: bool = False

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.embedding_dim = config.embedding_dim
        self.num_sparse = len(inputs.vocabularies)
        self.row_width = 4 * math.ceil((config.embedding_dim + 1) / 4)  # [e_i, w_i, unused]
        self.sparse_arch = pooled_embeddings(inputs, self.row_width)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense_weights = nn.Linear(inputs.num_dense, 1, bias=False) if inputs.num_dense else None
        width = config.embedding_dim * self.num_sparse + inputs.num_dense
        self.deep = MLP(width, config.mlp, out_features=max(1, len(inputs.labels)), dropout=config.dropout,
                        batch_norm=config.batch_norm)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        pooled = self.sparse_arch(batch.sparse_features).values()  # (B, F * row_width)
        rows = pooled.view(pooled.shape[0], self.num_sparse, self.row_width)  # (B, F, row_width)
        d = self.embedding_dim
        embeddings, weights = rows[..., :d], rows[..., d]  # (B, F, d), (B, F)
        first_order = self.bias + weights.sum(dim=1)  # (B,)
        if self.dense_weights is not None:
            first_order = first_order + self.dense_weights(batch.dense_features).squeeze(1)
        second_order = factorization_machine(embeddings)  # (B,)
        deep = self.deep(torch.cat([embeddings.flatten(1), batch.dense_features], dim=1))  # (B, num_labels)
        return deep + (first_order + second_order).unsqueeze(1)  # (B, num_labels)
