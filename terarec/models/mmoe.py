"""MMoE (Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts"): one logit per task (label), from experts every task shares.

    x = [e_1, ..., e_F, x_dense]                  (B, N)
    f_i(x) = expert MLP i, i = 1..n               (B, h)
    g^k(x) = softmax(W_gk x)                      (B, n)   one gate per task k, over the n experts
    f^k(x) = sum_i g^k(x)_i f_i(x)                (B, h)
    y_k = h^k(f^k(x))                             (B,)     tower k, one logit

With one label it is a single-gate mixture of experts (the paper's "OMoE" baseline): the
single-task model of the same size that ``bench/mmoe_tasks.py`` compares each task with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class MMoE(nn.Module):
    """Multi-gate mixture of experts for two or more CTR tasks (``data.labels``).

    Args (Config):
        embedding_dim (16): width of every sparse feature's table.
        num_experts (4): n, the number of shared experts.
        expert_mlp ([256, 128]): hidden widths of each expert; the last is h, the expert output.
        gate_mlp ([]): hidden widths of each gate before its softmax; [] is the paper's linear gate.
        tower_mlp ([64]): hidden widths of each task's tower (which ends in one logit).
        dropout (0.0): dropout after each hidden layer of experts and towers.

    Example:
        >>> inputs = ModelInputs(vocabularies, labels=["click", "like"])  # doctest: +SKIP
        >>> MMoE(MMoE.Config(), inputs)(batch).shape  # doctest: +SKIP
        torch.Size([B, 2])
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        num_experts: int = 4
        expert_mlp: list[int] = field(default_factory=lambda: [256, 128])
        gate_mlp: list[int] = field(default_factory=list)
        tower_mlp: list[int] = field(default_factory=lambda: [64])
        dropout: float = 0.0

        def __post_init__(self) -> None:
            if self.num_experts < 1:
                raise ValueError(f"num_experts: expected >= 1, got {self.num_experts}")
            if not self.expert_mlp:
                raise ValueError("expert_mlp: expected at least one hidden width (the expert output)")

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        if not inputs.labels:
            raise ValueError("MMoE needs at least one label, one task each (data.labels)")
        self.sparse_arch = pooled_embeddings(inputs, config.embedding_dim)
        width = config.embedding_dim * len(inputs.vocabularies) + inputs.num_dense  # N
        self.experts = nn.ModuleList(
            MLP(width, config.expert_mlp, dropout=config.dropout) for _ in range(config.num_experts)
        )
        self.gates = nn.ModuleList(
            MLP(width, config.gate_mlp, out_features=config.num_experts) for _ in inputs.labels
        )
        self.towers = nn.ModuleList(
            MLP(config.expert_mlp[-1], config.tower_mlp, out_features=1, dropout=config.dropout)
            for _ in inputs.labels
        )

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's softmax over the experts: (B, N) -> (B, tasks, experts)."""
        return torch.stack([torch.softmax(gate(x), dim=-1) for gate in self.gates], dim=1)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        pooled = self.sparse_arch(batch.sparse_features).values()  # (B, F * d)
        x = torch.cat([pooled, batch.dense_features], dim=1)  # (B, N)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, n, h)
        mixed = torch.bmm(self.gate_weights(x), experts)  # (B, tasks, h): f^k(x) = sum_i g^k_i f_i
        return torch.cat([tower(mixed[:, k]) for k, tower in enumerate(self.towers)], dim=1)  # (B, tasks)
