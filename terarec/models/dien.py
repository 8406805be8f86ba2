"""DIEN (Zhou et al., AAAI 2019, "Deep Interest Evolution Network for Click-Through Rate Prediction").

Interests are states that evolve over the behaviour sequence: a GRU extracts one interest
state per behaviour, an auxiliary loss makes each state predict the next behaviour, and a GRU
with an attentional update gate (AUGRU) follows only the interests relevant to the target.

    e_1..e_T = the user's behaviours, oldest first (item and category, plus history-only
               features such as the rating given, concatenated)                    (B, T, D_b)
    e_A      = the target's embedding (item and category), tables shared with e_t    (B, D)

Interest extractor layer, a GRU:
    h_t = GRU(e_t, h_{t-1})                                                         (B, T, D_b)
    L_aux = -1/N sum_i sum_t [ log σ(<h_t, e_{t+1}>) + log(1 - σ(<h_t, ê_{t+1}>)) ]
where ê_{t+1} is a negative behaviour: here a behaviour drawn uniformly from the batch's real
history positions (so it comes with its own category and rating; the paper draws an item
from the item set), with torch's global generator, which the trainer seeds.

Interest evolving layer, AUGRU (``terarec.layers.augru``):
    a_t = exp(h_t W e_A) / sum_j exp(h_j W e_A)           over the real steps j
    h'_t = AUGRU(h_t, h'_{t-1}, a_t)                      update gate scaled by a_t

    logit = MLP([other features' pooled embeddings, e_A, h'_T, dense features])
    L = L_target (BCE) + α L_aux

``forward`` returns the logits; ``loss`` (called by the trainer) adds α L_aux.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.layers.augru import AUGRU
from terarec.layers.behavior import BehaviorEmbeddings, Behaviors
from terarec.layers.mlp import MLP
from terarec.layers.target_attention import masked_softmax
from terarec.models.inputs import ModelInputs


class DIEN(nn.Module):
    """Deep Interest Evolution Network: GRU interest extractor + auxiliary loss, AUGRU, MLP.

    Args (Config):
        embedding_dim (16): d, the width of every table.
        history ({hist_item_id: item_id}): history feature -> the target feature whose table it shares.
        history_extra ([]): history-only features aligned with the history (e.g. ``hist_rating``).
        max_history (50): each row's last ``max_history`` behaviours (0 = all).
        aux_weight (1.0): α, the weight of the auxiliary loss.
        mlp ([200, 80]): hidden widths of the final MLP.
        dropout (0.0): dropout in the final MLP.

    Example:
        >>> model = DIEN(DIEN.Config(), inputs)  # doctest: +SKIP
        >>> model(batch).shape, model.loss(batch).shape  # doctest: +SKIP
        (torch.Size([B, num_labels]), torch.Size([]))
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        history: dict[str, str] = field(default_factory=lambda: {"hist_item_id": "item_id"})
        history_extra: list[str] = field(default_factory=list)
        max_history: int = 50
        aux_weight: float = 1.0
        mlp: list[int] = field(default_factory=lambda: [200, 80])
        dropout: float = 0.0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        if config.aux_weight < 0:
            raise ConfigError(f"model.aux_weight: expected >= 0, got {config.aux_weight}")
        self.aux_weight = config.aux_weight
        self.behaviors = BehaviorEmbeddings(inputs, config.history, config.embedding_dim, config.max_history,
                                            config.history_extra)
        target_width = self.behaviors.behavior_dim  # D
        width = target_width + self.behaviors.extra_dim  # D_b: states as wide as behaviours, for <h_t, e_t+1>
        self.extractor = nn.GRU(width, width, batch_first=True)
        self.attention = nn.Linear(target_width, width, bias=False)  # W e_A, for h_t W e_A
        self.evolution = AUGRU(width, width)
        self.mlp = MLP(self.behaviors.context_dim + target_width + width + inputs.num_dense, config.mlp,
                       out_features=max(1, len(inputs.labels)), dropout=config.dropout, activation=nn.PReLU)

    def _forward(self, batch: CTRBatch) -> tuple[torch.Tensor, Behaviors, torch.Tensor]:
        behaviors = self.behaviors(batch.sparse_features)
        sequence = behaviors.sequence  # e_1..e_T: (B, T, D_b)
        # Right padding: every real step's state depends on real steps only.
        interests, _ = self.extractor(sequence)  # h_1..h_T: (B, T, D_b)
        scores = torch.einsum("btd,bd->bt", interests, self.attention(behaviors.target))  # h_t W e_A: (B, T)
        attention = masked_softmax(scores, behaviors.mask)  # a_t, 0 at padding: AUGRU skips it
        evolved = self.evolution(interests, attention)  # h'_T: (B, D_b)
        features = [behaviors.context, behaviors.target, evolved, batch.dense_features]
        return self.mlp(torch.cat(features, dim=1)), behaviors, interests

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        return self._forward(batch)[0]  # (B, num_labels)

    def auxiliary_loss(self, behaviors: Behaviors, interests: torch.Tensor) -> torch.Tensor:
        """L_aux, averaged over the (t, t + 1) pairs of real behaviours in the batch."""
        sequence = behaviors.sequence  # (B, T, D_b)
        pairs = behaviors.mask[:, 1:]  # (B, T - 1): e_{t+1} is real (so is e_t)
        if not bool(pairs.any()):
            return interests.sum() * 0.0
        states = interests[:, :-1]  # h_t
        real = behaviors.mask.flatten().nonzero().squeeze(1)  # (N,) flat real positions
        pick = real[torch.randint(real.numel(), pairs.shape)]  # (B, T - 1) uniform over them
        negatives = sequence.flatten(0, 1)[pick]  # ê_{t+1}: (B, T - 1, D_b)
        positive_logits = (states * sequence[:, 1:]).sum(-1)[pairs]  # <h_t, e_{t+1}>
        negative_logits = (states * negatives).sum(-1)[pairs]  # <h_t, ê_{t+1}>
        return (F.binary_cross_entropy_with_logits(positive_logits, torch.ones_like(positive_logits))
                + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits)))

    def loss(self, batch: CTRBatch) -> torch.Tensor:
        """L = BCE(logits, labels) + α L_aux: what the trainer minimises."""
        logits, behaviors, interests = self._forward(batch)
        target_loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        if self.aux_weight == 0:
            return target_loss
        return target_loss + self.aux_weight * self.auxiliary_loss(behaviors, interests)
