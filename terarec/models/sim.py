"""SIM (Pi et al., CIKM 2020, "Search-based User Interest Modeling with Lifelong Sequential
Behavior Data for Click-Through Rate Prediction").

A long history is too long to attend over whole, so it is searched first. Two stages:

General search unit (GSU) scores every behaviour i of the long history
B = [b_1..b_T] for the target a and keeps the top K:
    hard search:  r_i = Sign(C_i = C_a)            same category as the target; of the matches
                                                    the K most recent are kept
    soft search:  r_i = (W_b e_i) ⊙ (W_a e_a)^T    an inner product of projected embeddings
Soft-search parameters get no gradient through the top-K, so (as in the paper) an auxiliary
CTR task trains them on the whole history:
    U_r = sum_i softmax(r)_i e_i,  logit_aux = MLP_aux([U_r, e_a])
(the paper sums r_i e_i unnormalised; the softmax keeps U_r's scale independent of T).

Exact search unit (ESU): multi-head target attention over the K kept behaviours
z_1..z_K (``terarec.layers.target_attention.MultiHeadTargetAttention``):
    head_h = softmax((e_a W^Q_h)(Z W^K_h)^T / sqrt(d_h)) Z W^V_h,  U_lt = concat(head_1..head_q) W^O
    logit  = MLP([other features' pooled embeddings, e_a, U_lt, dense features])
    L      = BCE(logit) + aux_weight * BCE(logit_aux)        (soft search; hard search: BCE only)

Deviations: the paper's ESU concatenates a time-interval embedding to each behaviour (the
history columns here carry no time) and weights the raw z_b per head; the attention here is
the standard scaled dot-product form with value and output projections. The paper's serving
structures (the user behaviour tree for hard search, ANN indexes for soft search) are not
needed at this scale: the search runs on the padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.layers.behavior import BehaviorEmbeddings, Behaviors
from terarec.layers.mlp import MLP
from terarec.layers.target_attention import MultiHeadTargetAttention, masked_softmax
from terarec.models.inputs import ModelInputs


class SIM(nn.Module):
    """Search-based Interest Model: GSU (hard or soft search, top K), then ESU (multi-head attention).

    Args (Config):
        embedding_dim (16): d, the width of every table.
        history ({hist_item_id: item_id}): history feature -> the target feature whose table it shares.
        history_extra ([]): history-only features aligned with the history (e.g. ``hist_rating``).
        max_history (0): the long history: each row's last ``max_history`` behaviours (0 = all).
        search (hard): ``hard`` (same category) or ``soft`` (top-K inner products).
        category (hist_genre): hard search: the history feature holding each behaviour's category
            (a key of ``history``; its target feature is the target's category).
        top_k (50): K, the behaviours the GSU keeps.
        num_heads (4): heads of the ESU; must divide the behaviour width.
        soft_dim (16): soft search: width of W_a e_a and W_b e_i.
        aux_weight (1.0): soft search: weight of the auxiliary CTR loss.
        mlp ([200, 80]): hidden widths of the final MLP (and of the auxiliary one).
        dropout (0.0): dropout in the final MLP.

    Example:
        >>> config = SIM.Config(history={"hist_item_id": "item_id", "hist_genre": "genre"})
        >>> model = SIM(config, inputs)  # doctest: +SKIP
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
        max_history: int = 0
        search: Literal["hard", "soft"] = "hard"
        category: str = "hist_genre"
        top_k: int = 50
        num_heads: int = 4
        soft_dim: int = 16
        aux_weight: float = 1.0
        mlp: list[int] = field(default_factory=lambda: [200, 80])
        dropout: float = 0.0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        if config.search == "hard" and config.category not in config.history:
            raise ConfigError(f"model.category: hard search needs the category's history feature in model.history "
                              f"(got '{config.category}', history: {list(config.history)})")
        if config.top_k < 1:
            raise ConfigError(f"model.top_k: expected >= 1, got {config.top_k}")
        if config.aux_weight < 0:
            raise ConfigError(f"model.aux_weight: expected >= 0, got {config.aux_weight}")
        self.search_mode = config.search
        self.top_k = config.top_k
        self.aux_weight = config.aux_weight
        self.behaviors = BehaviorEmbeddings(inputs, config.history, config.embedding_dim, config.max_history,
                                            config.history_extra)
        self.category = list(config.history).index(config.category) if config.search == "hard" else -1
        target_width = self.behaviors.behavior_dim  # D
        width = target_width + self.behaviors.extra_dim  # D_b
        if config.num_heads < 1 or width % config.num_heads:
            raise ConfigError(f"model.num_heads: must divide the behaviour width {width}, got {config.num_heads}")
        num_labels = max(1, len(inputs.labels))
        if config.search == "soft":
            if config.soft_dim < 1:
                raise ConfigError(f"model.soft_dim: expected >= 1, got {config.soft_dim}")
            self.project_target = nn.Linear(target_width, config.soft_dim, bias=False)  # W_a
            self.project_history = nn.Linear(target_width, config.soft_dim, bias=False)  # W_b
            self.aux_mlp = MLP(width + target_width, config.mlp, out_features=num_labels, activation=nn.PReLU)
        self.esu = MultiHeadTargetAttention(width, config.num_heads, query_dim=target_width, key_dim=width)
        self.mlp = MLP(self.behaviors.context_dim + target_width + width + inputs.num_dense, config.mlp,
                       out_features=num_labels, dropout=config.dropout, activation=nn.PReLU)

    def relevance(self, behaviors: Behaviors) -> tuple[torch.Tensor, torch.Tensor]:
        """GSU: (B, T) scores r_i, and the (B, T) mask of behaviours the search may return."""
        mask = behaviors.mask
        if self.search_mode == "hard":
            category = behaviors.history_ids[..., self.category]  # (B, T) C_i
            matches = mask & (category == behaviors.target_ids[:, self.category].unsqueeze(1))  # C_i = C_a
            # Among the matches the latest win: rank by position (oldest first).
            position = torch.arange(mask.shape[1], dtype=torch.float32).expand_as(mask)
            return position, matches
        target = self.project_target(behaviors.target)  # W_a e_a: (B, s)
        history = self.project_history(behaviors.history)  # W_b e_i: (B, T, s)
        return torch.einsum("bts,bs->bt", history, target), mask

    def search(self, behaviors: Behaviors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """GSU: scores and searchable mask (B, T), the kept positions (B, K) and which of them are real."""
        scores, searchable = self.relevance(behaviors)  # (B, T)
        k = min(self.top_k, scores.shape[1])
        kept = scores.masked_fill(~searchable, -torch.inf).topk(k, dim=1).indices  # (B, K)
        return scores, searchable, kept, searchable.gather(1, kept)  # rows with fewer than K matches: padded

    def _forward(self, batch: CTRBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        behaviors = self.behaviors(batch.sparse_features)
        sequence = behaviors.sequence  # (B, T, D_b)
        scores, searchable, kept, kept_mask = self.search(behaviors)
        kept_behaviors = sequence.gather(1, kept.unsqueeze(2).expand(-1, -1, sequence.shape[2]))  # (B, K, D_b)
        interest = self.esu(behaviors.target, kept_behaviors, kept_mask)  # U_lt: (B, D_b)
        features = [behaviors.context, behaviors.target, interest, batch.dense_features]
        logits = self.mlp(torch.cat(features, dim=1))  # (B, num_labels)
        aux_logits = None
        if self.search_mode == "soft" and self.training:
            pooled = torch.einsum("bt,btv->bv", masked_softmax(scores, searchable), sequence)  # U_r: (B, D_b)
            aux_logits = self.aux_mlp(torch.cat([pooled, behaviors.target], dim=1))
        return logits, aux_logits

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        return self._forward(batch)[0]  # (B, num_labels)

    def loss(self, batch: CTRBatch) -> torch.Tensor:
        """BCE of the ESU's logits, plus aux_weight x BCE of the soft search's auxiliary logits."""
        logits, aux_logits = self._forward(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
        if aux_logits is not None and self.aux_weight > 0:
            loss = loss + self.aux_weight * F.binary_cross_entropy_with_logits(aux_logits, batch.labels)
        return loss
