"""Wukong (Zhang et al. 2024, "Wukong: Towards a Scaling Law for Large-Scale Recommendation",
arXiv 2403.02545): an embedding layer, a stack of l interaction layers, a final MLP.

Embedding layer (section 3.2), X_0 in R^{n x d}:
    e_f = pooled embedding of sparse feature f, m_f * d wide, split into m_f d-wide
          embeddings (m_f = feature_embeddings[f], default 1: "important features get more
          embeddings")                                                      (B, m_f, d)
    g_j = MLP_group([e_f for f in group j])  small features grouped, their
          embeddings concatenated and projected to one d-wide embedding      (B, 1, d)
    D = reshape(MLP_dense(x_dense))    n_D = dense_embeddings embeddings    (B, n_D, d)
    X_0 = [D; e_f for ungrouped f; g_j for each group]
    n_0 = n_D + sum of m_f over ungrouped features + number of groups

Interaction stack (sections 3.3-3.5), for i = 0..l-1, each layer from n_i embeddings to
n_{i+1} = n_F + n_L:
    FMB_i(X_i) = reshape(MLP(LN(flatten(X_i X_i^T Y_i))))     Y_i in R^{n_i x k}  (B, n_F, d)
    LCB_i(X_i) = W_L,i X_i                                 W_L,i in R^{n_L x n_i}  (B, n_L, d)
    X_{i+1} = LN(concat(FMB_i(X_i), LCB_i(X_i)) + X_i)                             (B, n_{i+1}, d)
where the residual X_i is first mapped by a learned (n_{i+1} x n_i) linear projection over the
embedding axis when n_i != n_F + n_L (in practice only the first layer), and LN normalises
each embedding over d.

Final MLP (section 3.1):
    logits = MLP_top(flatten(X_l))                                         (B, num_labels)

The optimized FM (section 3.6) evaluates X (X^T Y) right to left, O(n k d) instead of the
O(n^2 d) of X X^T; the blocks are ``terarec.layers.fm``.

Because FM interactions feed the next layer's FM, layer i captures interactions of order up
to 2^i, while LCB (and the residual) carry the lower orders forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.embedding.factory import pooled_embeddings
from terarec.layers.fm import FactorizationMachineBlock, LinearCompressBlock
from terarec.layers.mlp import MLP
from terarec.models.inputs import ModelInputs


class WukongLayer(nn.Module):
    """One interaction layer: X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + X_i).

    Args:
        num_embeddings: n_i, the number of input embeddings.
        embedding_dim: d.
        num_fm_embeddings: n_F, embeddings produced by the FMB.
        num_lcb_embeddings: n_L, embeddings produced by the LCB.
        fm_rank: k, the rank of the optimized FM.
        fmb_mlp: hidden widths of the FMB's MLP.
        dropout: dropout in the FMB's MLP.

    Example:
        >>> WukongLayer(10, 16, 8, 8, fm_rank=4, fmb_mlp=[64])(torch.randn(2, 10, 16)).shape
        torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_fm_embeddings: int,
        num_lcb_embeddings: int,
        fm_rank: int,
        fmb_mlp: list[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_outputs = num_fm_embeddings + num_lcb_embeddings
        self.fmb = FactorizationMachineBlock(
            num_embeddings, embedding_dim, num_fm_embeddings, fm_rank, fmb_mlp, dropout=dropout
        )
        self.lcb = LinearCompressBlock(num_embeddings, num_lcb_embeddings)
        # The residual needs n_F + n_L embeddings; a learned compression supplies them otherwise.
        self.residual = (
            LinearCompressBlock(num_embeddings, self.num_outputs) if num_embeddings != self.num_outputs else None
        )
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        interactions = torch.cat([self.fmb(embeddings), self.lcb(embeddings)], dim=1)  # (B, n_F + n_L, d)
        residual = embeddings if self.residual is None else self.residual(embeddings)  # (B, n_F + n_L, d)
        return self.norm(interactions + residual)  # (B, n_F + n_L, d)


class Wukong(nn.Module):
    """Wukong: stacked factorization-machine blocks and linear compression blocks.

    Args (Config):
        embedding_dim: d, the width of every embedding (sparse tables, dense embeddings, and
            every interaction layer's output).
        num_layers: l, the number of interaction layers.
        num_fm_embeddings: n_F, embeddings each layer's FMB produces.
        num_lcb_embeddings: n_L, embeddings each layer's LCB produces.
        fm_rank: k, the columns of each optimized FM's projection Y (cost O(n k d)).
        fmb_mlp: hidden widths of each FMB's MLP (its output layer is n_F * d wide).
        top_mlp: hidden widths of the final MLP over flatten(X_l).
        dense_embeddings: n_D, the number of d-wide embeddings the dense features become
            (ignored without dense features).
        dense_mlp: hidden widths of the dense features' MLP (its output is n_D * d wide).
        feature_embeddings: sparse feature -> m_f, its number of d-wide embeddings (a table
            m_f * d wide, split); features not named get one.
        feature_groups: groups of (small) sparse features; each group's embeddings are
            concatenated and projected by an MLP to one d-wide embedding.
        group_mlp: hidden widths of each group's projection MLP.
        dropout: dropout in the FMB MLPs and the final MLP.
        batch_norm: batch normalisation in the final MLP's hidden layers.

    Example:
        >>> model = Wukong(Wukong.Config(num_layers=2), inputs)  # doctest: +SKIP
        >>> model(batch).shape  # doctest: +SKIP
        torch.Size([B, num_labels])
    """

    task = "ctr"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 16
        num_layers: int = 2
        num_fm_embeddings: int = 8
        num_lcb_embeddings: int = 8
        fm_rank: int = 8
        fmb_mlp: list[int] = field(default_factory=lambda: [256])
        top_mlp: list[int] = field(default_factory=lambda: [256, 128])
        dense_embeddings: int = 1
        dense_mlp: list[int] = field(default_factory=lambda: [64])
        feature_embeddings: dict[str, int] = field(default_factory=dict)
        feature_groups: list[list[str]] = field(default_factory=list)
        group_mlp: list[int] = field(default_factory=list)
        dropout: float = 0.0
        batch_norm: bool = False

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        for name in ("embedding_dim", "num_layers", "num_fm_embeddings", "num_lcb_embeddings", "fm_rank",
                     "dense_embeddings"):
            if getattr(config, name) < 1:
                raise ConfigError(f"model.{name}: expected an integer >= 1, got {getattr(config, name)}")
        d = config.embedding_dim
        self.embedding_dim = d
        features = list(inputs.vocabularies)
        self._check_embedding_layout(config, features)
        grouped = [name for group in config.feature_groups for name in group]
        # m_f per ungrouped feature, in the order of X_0; grouped features get one d-wide table each.
        self.embeddings_per_feature = {name: config.feature_embeddings.get(name, 1)
                                       for name in features if name not in grouped}
        self.groups = [list(group) for group in config.feature_groups]
        widths: dict[int, list[str]] = {}
        for name in features:
            widths.setdefault(d * self.embeddings_per_feature.get(name, 1), []).append(name)
        # One pooled collection per table width (the engine stores one width per collection).
        self.sparse_arch = nn.ModuleList(
            pooled_embeddings(replace(inputs, vocabularies={n: inputs.vocabularies[n] for n in names}), width)
            for width, names in widths.items()
        )
        self._sparse_keys = [names for names in widths.values()]
        self.group_arch = nn.ModuleList(
            MLP(len(group) * d, config.group_mlp, out_features=d) for group in self.groups
        )
        self.num_dense_embeddings = config.dense_embeddings if inputs.num_dense > 0 else 0
        num_embeddings = self.num_dense_embeddings + sum(self.embeddings_per_feature.values()) + len(self.groups)
        if num_embeddings == 0:
            raise ConfigError("model 'wukong' needs at least one sparse or dense feature (data.sparse, data.dense)")
        self.num_embeddings = num_embeddings  # n_0
        self.dense_arch = (
            MLP(inputs.num_dense, config.dense_mlp, out_features=self.num_dense_embeddings * d)
            if self.num_dense_embeddings else None
        )
        layers = []
        for _ in range(config.num_layers):
            layer = WukongLayer(num_embeddings, d, config.num_fm_embeddings, config.num_lcb_embeddings,
                                config.fm_rank, config.fmb_mlp, dropout=config.dropout)
            layers.append(layer)
            num_embeddings = layer.num_outputs  # n_{i+1} = n_F + n_L
        self.interaction_stack = nn.Sequential(*layers)
        self.top_arch = MLP(num_embeddings * d, config.top_mlp, out_features=max(1, len(inputs.labels)),
                            dropout=config.dropout, batch_norm=config.batch_norm)

    @staticmethod
    def _check_embedding_layout(config: Wukong.Config, features: list[str]) -> None:
        for name, count in config.feature_embeddings.items():
            if name not in features:
                raise ConfigError(f"model.feature_embeddings: '{name}' is not a sparse feature (features: {features})")
            if not isinstance(count, int) or count < 1:
                raise ConfigError(f"model.feature_embeddings.{name}: expected an integer >= 1, got {count!r}")
        seen: set[str] = set()
        for group in config.feature_groups:
            for name in group:
                if name not in features:
                    raise ConfigError(f"model.feature_groups: '{name}' is not a sparse feature (features: {features})")
                if name in seen or name in config.feature_embeddings:
                    raise ConfigError(f"model.feature_groups: '{name}' is in two groups or also in feature_embeddings")
                seen.add(name)

    def embed(self, batch: CTRBatch) -> torch.Tensor:
        """X_0: the dense embeddings, the sparse features' embeddings, the groups'. (B, n_0, d)"""
        batch_size, d = len(batch), self.embedding_dim
        pooled: dict[str, torch.Tensor] = {}
        for collection, names in zip(self.sparse_arch, self._sparse_keys):
            values = collection(batch.sparse_features).values()  # (B, len(names) * width)
            pooled.update(zip(names, values.split(values.shape[1] // len(names), dim=1)))
        parts = []
        if self.dense_arch is not None:
            parts.append(self.dense_arch(batch.dense_features).view(batch_size, self.num_dense_embeddings, d))
        for name, count in self.embeddings_per_feature.items():
            parts.append(pooled[name].view(batch_size, count, d))  # (B, m_f, d)
        for group, project in zip(self.groups, self.group_arch):
            parts.append(project(torch.cat([pooled[name] for name in group], dim=1)).unsqueeze(1))  # (B, 1, d)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, n_0, d)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        embeddings = self.embed(batch)  # X_0: (B, n_0, d)
        embeddings = self.interaction_stack(embeddings)  # X_l: (B, n_F + n_L, d)
        return self.top_arch(embeddings.flatten(1))  # (B, num_labels)
