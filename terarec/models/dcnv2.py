"""DCN V2 (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems").

    x_0 = [e_1, ..., e_F, x_dense]                      (B, N)   N = F * d + num_dense
    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,  l < L       cross network (terarec.layers.cross.CrossNetV2)
              W_l full rank, or U_l V_l^T of rank r, or a gated mixture of K such experts
    stacked:  logit = w^T MLP(x_L) + b                   cross, then deep
    parallel: logit = w^T [x_L, MLP(x_0)] + b            cross || deep, concatenated
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.cross import CrossNetV2
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class DCNv2(nn.Module):
    """Deep & Cross Network V2, stacked or parallel.

    Args (Config):
        embedding_dim (16): width of every sparse feature's table.
        num_cross_layers (3): L, the number of cross layers.
        structure ("parallel"): "stacked" (cross network, then the MLP on its output) or
            "parallel" (cross network and MLP side by side on x_0, outputs concatenated).
        low_rank (None): rank r of each cross matrix W_l = U_l V_l^T; None for full rank.
        num_experts (1): K low-rank experts per cross layer, mixed by a softmax gate (DCN-Mix);
            more than 1 needs low_rank.
        mlp ([400, 400, 400]): hidden widths of the deep network.
        dropout (0.0): dropout after each hidden layer of the deep network.
        batch_norm (False): batch normalisation in the deep network's hidden layers.

    Example:
        >>> model = DCNv2(DCNv2.Config(structure="stacked", low_rank=8), inputs)  # doctest: +SKIP
        >>> model(batch).shape  # doctest: +SKIP
        torch.Size([B, num_labels])
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        num_cross_layers: int = 3
        structure: Literal["stacked", "parallel"] = "parallel"
        low_rank: int | None = None
        num_experts: int = 1
        mlp: list[int] = field(default_factory=lambda: [400, 400, 400])
        dropout: float = 0.0
        batch_norm: bool = False

        def __post_init__(self) -> None:
            if self.num_cross_layers < 0:
                raise ValueError(f"num_cross_layers: expected >= 0, got {self.num_cross_layers}")
            if self.low_rank is not None and self.low_rank < 1:
                raise ValueError(f"low_rank: expected >= 1 or null, got {self.low_rank}")
            if self.num_experts < 1:
                raise ValueError(f"num_experts: expected >= 1, got {self.num_experts}")
            if self.num_experts > 1 and self.low_rank is None:
                raise ValueError(f"num_experts={self.num_experts} needs low_rank (the experts are low-rank)")

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.structure = config.structure
        self.sparse_arch = pooled_embeddings(inputs, config.embedding_dim)
        width = config.embedding_dim * len(inputs.vocabularies) + inputs.num_dense  # N
        num_labels = max(1, len(inputs.labels))
        self.cross = CrossNetV2(width, config.num_cross_layers, config.low_rank, config.num_experts)
        if self.structure == "stacked":
            self.deep = MLP(width, config.mlp, out_features=num_labels, dropout=config.dropout,
                            batch_norm=config.batch_norm)
            self.head = None
        else:
            self.deep = MLP(width, config.mlp, dropout=config.dropout, batch_norm=config.batch_norm)
            self.head = nn.Linear(width + self.deep.out_features, num_labels)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        pooled = self.sparse_arch(batch.sparse_features).values()  # (B, F * d)
        x0 = torch.cat([pooled, batch.dense_features], dim=1)  # (B, N)
        crossed = self.cross(x0)  # (B, N)
        if self.structure == "stacked":
            return self.deep(crossed)  # (B, num_labels)
        return self.head(torch.cat([crossed, self.deep(x0)], dim=1))  # (B, num_labels)
