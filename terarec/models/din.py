"""DIN (Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate Prediction").

The user's interest is not one fixed vector: it is pooled from the user's behaviours with
weights that depend on the candidate ad (target attention, section 4.3):

    e_1..e_H = embeddings of the user's history (item, and its category, concatenated)   (B, H, D)
    v_A      = the target's embedding, from the same tables                              (B, D)
    v_U(A)   = f(v_A, e_1, ..., e_H) = sum_j a(e_j, v_A) e_j = sum_j w_j e_j              (eq. 3)
    a(., .)  = the activation unit, an MLP of [e_j, v_A, e_j - v_A, e_j ⊙ v_A]         (Fig. 2)
    logit    = MLP([other features' pooled embeddings, v_A, v_U(A), dense features])

A behaviour may carry features that have no counterpart in the target (``history_extra``,
e.g. the rating the user gave an earlier movie): they are pooled with the same weights,
v_U(A) = sum_j w_j [e_j, x_j], but take no part in a(e_j, v_A).

As in the paper the weights w_j are not softmax-normalised by default ("to reserve the
intensity of user interests"); ``attention_normalization: softmax`` normalises them. The
history keys share their targets' tables (``terarec.layers.behavior``), so the activation
unit compares an earlier item with the candidate in one embedding space.

Not implemented: Dice (PReLU is used, the paper's other activation) and mini-batch aware
regularisation (``train.weight_decay`` is the plain L2 available).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.layers.behavior import BehaviorEmbeddings
from terarec.layers.mlp import MLP
from terarec.layers.target_attention import TargetAttention
from terarec.models.inputs import ModelInputs


class DIN(nn.Module):
    """Deep Interest Network: target attention over the user's history, then an MLP.

    Args (Config):
        embedding_dim (16): d, the width of every table; D = d x the number of history pairs.
        history ({hist_item_id: item_id}): history feature -> the target feature whose table
            it shares (e.g. add ``hist_genre: genre`` for the category).
        history_extra ([]): history-only features aligned with the history (e.g. ``hist_rating``).
        max_history (50): attend over each row's last ``max_history`` behaviours (0 = all).
        attention_mlp ([80, 40]): hidden widths of the activation unit.
        attention_normalization (none): ``none`` (the paper) or ``softmax``.
        mlp ([200, 80]): hidden widths of the final MLP.
        dropout (0.0): dropout in the final MLP.

    Example:
        >>> model = DIN(DIN.Config(history={"hist_item_id": "item_id"}), inputs)  # doctest: +SKIP
        >>> model(batch).shape  # doctest: +SKIP
        torch.Size([B, num_labels])
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        history: dict[str, str] = field(default_factory=lambda: {"hist_item_id": "item_id"})
        history_extra: list[str] = field(default_factory=list)
        max_history: int = 50
        attention_mlp: list[int] = field(default_factory=lambda: [80, 40])
        attention_normalization: Literal["none", "softmax"] = "none"
        mlp: list[int] = field(default_factory=lambda: [200, 80])
        dropout: float = 0.0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.behaviors = BehaviorEmbeddings(inputs, config.history, config.embedding_dim, config.max_history,
                                            config.history_extra)
        width = self.behaviors.behavior_dim  # D
        self.attention = TargetAttention(width, config.attention_mlp, config.attention_normalization)
        interest_width = width + self.behaviors.extra_dim
        self.mlp = MLP(self.behaviors.context_dim + width + interest_width + inputs.num_dense, config.mlp,
                       out_features=max(1, len(inputs.labels)), dropout=config.dropout, activation=nn.PReLU)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        behaviors = self.behaviors(batch.sparse_features)
        interest = self.attention(behaviors.target, behaviors.history, behaviors.mask,
                                  behaviors.sequence)  # v_U(A): (B, D + E d)
        features = [behaviors.context, behaviors.target, interest, batch.dense_features]
        return self.mlp(torch.cat(features, dim=1))  # (B, num_labels)
