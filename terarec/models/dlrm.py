"""DLRM (Naumov et al. 2019, "Deep Learning Recommendation Model for Personalization and
Recommendation Systems").

    z_0 = MLP_bottom(x_dense)                        (B, d)      dense features to one embedding
    e_1..e_F = pooled embeddings of the F sparse features (B, d) each
    p = { <v_i, v_j> : i < j } over v = [z_0, e_1, ..., e_F]   pairwise dot interactions
    logit = MLP_top([z_0, p])

Without dense features z_0 is absent and the top MLP sees [p, e_1..e_F] flattened
(the embeddings themselves are kept so first-order signal is not lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.interaction import DotInteraction
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class DLRM(nn.Module):
    """DLRM with dot interactions.

    Args (Config):
        embedding_dim: width of every sparse feature's table (= the bottom MLP's output).
        bottom_mlp: hidden widths of the dense-feature MLP (its output is embedding_dim).
        top_mlp: hidden widths of the MLP over the interactions.
        dropout: dropout in the top MLP.
        batch_norm: batch normalisation in the top MLP's hidden layers.
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        bottom_mlp: list[int] = field(default_factory=lambda: [64])
        top_mlp: list[int] = field(default_factory=lambda: [256, 128])
        dropout: float = 0.0
        batch_norm: bool = False

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        d = config.embedding_dim
        self.sparse_arch = pooled_embeddings(inputs, d)
        self.num_sparse = len(inputs.vocabularies)
        self.has_dense = inputs.num_dense > 0
        self.bottom_arch = MLP(inputs.num_dense, config.bottom_mlp + [d]) if self.has_dense else None
        num_vectors = self.num_sparse + int(self.has_dense)
        self.interaction = DotInteraction(num_vectors)
        first_order = d if self.has_dense else d * self.num_sparse
        self.top_arch = MLP(first_order + self.interaction.out_features, config.top_mlp,
                            out_features=max(1, len(inputs.labels)), dropout=config.dropout,
                            batch_norm=config.batch_norm)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        pooled = self.sparse_arch(batch.sparse_features).values()  # (B, F * d)
        embeddings = pooled.view(pooled.shape[0], self.num_sparse, -1)  # (B, F, d)
        if self.has_dense:
            dense = self.bottom_arch(batch.dense_features)  # (B, d)
            vectors = torch.cat([dense.unsqueeze(1), embeddings], dim=1)
            first_order = dense
        else:
            vectors, first_order = embeddings, pooled
        return self.top_arch(torch.cat([first_order, self.interaction(vectors)], dim=1))  # (B, labels)
