"""Factorization-machine blocks of Wukong (Zhang et al. 2024, arXiv 2403.02545, section 3).

Every block maps a set of n embeddings X in R^{n x d}, batched as (B, n, d), to another set
of embeddings of the same width d, so blocks stack:

    OptimizedFM:               FM(X)  = X X^T Y                      (B, n, d) -> (B, n, k)
    FactorizationMachineBlock: FMB(X) = reshape(MLP(LN(flatten(FM(X)))))  (B, n, d) -> (B, n_F, d)
    LinearCompressBlock:       LCB(X) = W_L X                        (B, n, d) -> (B, n_L, d)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from terarec.layers.mlp import MLP


class OptimizedFM(nn.Module):
    """Wukong's low-rank factorization machine: all pairwise dot products X X^T, projected by Y.

    The plain FM interaction matrix X X^T costs O(n^2 d). Wukong multiplies it by a learned
    Y in R^{n x k} and evaluates X (X^T Y) right to left, so the n x n matrix is never formed
    and the cost is O(n k d). Row i of the result is sum_j <x_i, x_j> y_j: embedding i's
    pairwise interactions, compressed to k numbers.

    Args:
        num_embeddings: n, the number of input embeddings.
        rank: k, the number of columns of Y.

    Example:
        >>> OptimizedFM(10, 4)(torch.randn(2, 10, 16)).shape
        torch.Size([2, 10, 4])
    """

    def __init__(self, num_embeddings: int, rank: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.rank = rank
        self.projection = nn.Parameter(torch.empty(num_embeddings, rank))  # Y: (n, k)
        # Columns of Y of unit expected norm, so X X^T Y keeps the scale of X X^T.
        nn.init.normal_(self.projection, std=1.0 / math.sqrt(num_embeddings))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        compressed = torch.matmul(embeddings.transpose(1, 2), self.projection)  # X^T Y: (B, d, k)
        return torch.bmm(embeddings, compressed)  # X (X^T Y): (B, n, k)


class FactorizationMachineBlock(nn.Module):
    """Wukong's FMB: FMB(X) = reshape(MLP(LN(flatten(X X^T Y)))), n embeddings to n_F.

    Args:
        num_embeddings: n, the number of input embeddings.
        embedding_dim: d, the width of every embedding (in and out).
        num_outputs: n_F, the number of embeddings produced.
        rank: k, the rank of the optimized FM.
        hidden: hidden widths of the MLP (its output layer is n_F * d wide).
        dropout: dropout after each hidden layer of the MLP.

    Example:
        >>> FactorizationMachineBlock(10, 16, 8, rank=4, hidden=[64])(torch.randn(2, 10, 16)).shape
        torch.Size([2, 8, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_outputs: int,
        rank: int,
        hidden: list[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.embedding_dim = embedding_dim
        self.fm = OptimizedFM(num_embeddings, rank)
        self.norm = nn.LayerNorm(num_embeddings * rank)
        self.mlp = MLP(num_embeddings * rank, hidden, out_features=num_outputs * embedding_dim, dropout=dropout)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        interactions = self.fm(embeddings).flatten(1)  # (B, n * k)
        out = self.mlp(self.norm(interactions))  # (B, n_F * d)
        return out.view(-1, self.num_outputs, self.embedding_dim)  # (B, n_F, d)


class LinearCompressBlock(nn.Module):
    """Wukong's LCB: LCB(X) = W_L X, a learned linear map over the embedding axis (n to n_L).

    Each output embedding is a weighted sum of the input embeddings, the same weights for every
    coordinate of d: it recombines embeddings without raising the interaction order (and
    serves as the residual projection where a layer changes the number of embeddings).

    Args:
        num_embeddings: n, the number of input embeddings.
        num_outputs: n_L, the number of embeddings produced.

    Example:
        >>> LinearCompressBlock(10, 6)(torch.randn(2, 10, 16)).shape
        torch.Size([2, 6, 16])
    """

    def __init__(self, num_embeddings: int, num_outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, num_embeddings))  # W_L: (n_L, n)
        # nn.Linear's default initialisation, with n as the fan-in.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight, embeddings)  # (n_L, n) @ (B, n, d) -> (B, n_L, d)
