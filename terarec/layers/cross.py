"""Explicit feature-crossing blocks: DCN V2's cross network and the factorization machine's pairwise term."""

from __future__ import annotations

import torch
from torch import nn


class CrossLayer(nn.Module):
    """One DCN V2 cross layer, full rank or low rank.

        x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l            W_l (N, N)
        x_{l+1} = x_0 ⊙ (U_l (V_l^T x_l) + b_l) + x_l    W_l = U_l V_l^T, U_l and V_l (N, r)

    Args:
        in_features: N, the width of x_0.
        low_rank: r; None for a full-rank W_l.
    """

    def __init__(self, in_features: int, low_rank: int | None = None) -> None:
        super().__init__()
        if low_rank is None:
            self.projection: nn.Module = nn.Linear(in_features, in_features)  # W_l x + b_l
        else:
            self.projection = nn.Sequential(
                nn.Linear(in_features, low_rank, bias=False),  # V_l^T x
                nn.Linear(low_rank, in_features),  # U_l (.) + b_l
            )

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.projection(x) + x  # (B, N)


class MixtureCrossLayer(nn.Module):
    """One DCN V2 cross layer as a mixture of K low-rank experts (the paper's DCN-Mix).

        E_i(x_l) = x_0 ⊙ (U_l^i g(C_l^i g(V_l^{iT} x_l)) + b_l)     U_l^i, V_l^i (N, r), C_l^i (r, r)
        x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l

    G(x_l) = softmax(W_G x_l) over the K experts; g = tanh (the paper leaves g and G open).
    The K experts run as one batched contraction, not a loop.

    Args:
        in_features: N.
        low_rank: r.
        num_experts: K.
    """

    def __init__(self, in_features: int, low_rank: int, num_experts: int) -> None:
        super().__init__()
        self.V = nn.Parameter(torch.empty(num_experts, in_features, low_rank))
        self.C = nn.Parameter(torch.empty(num_experts, low_rank, low_rank))
        self.U = nn.Parameter(torch.empty(num_experts, low_rank, in_features))
        self.bias = nn.Parameter(torch.zeros(in_features))
        self.gate = nn.Linear(in_features, num_experts, bias=False)
        for weight in (self.V, self.C, self.U):
            for expert in weight:
                nn.init.xavier_normal_(expert)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        projected = torch.tanh(torch.einsum("bn,knr->bkr", x, self.V))  # (B, K, r)
        projected = torch.tanh(torch.einsum("bkr,krs->bks", projected, self.C))  # (B, K, r)
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,krn->bkn", projected, self.U) + self.bias)  # (B, K, N)
        gates = torch.softmax(self.gate(x), dim=-1)  # (B, K)
        return torch.einsum("bk,bkn->bn", gates, experts) + x  # (B, N)


class CrossNetV2(nn.Module):
    """DCN V2's cross network (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and
    Practical Lessons for Web-scale Learning to Rank Systems"): ``num_layers`` cross layers,
    each ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``, so layer l holds crosses up to degree l + 1.

    W_l is full rank by default; ``low_rank=r`` factors it as ``U_l V_l^T``, and ``num_experts=K > 1``
    makes each layer a gated mixture of K low-rank experts (see ``MixtureCrossLayer``).

    Input (B, N) -> output (B, N).

    Args:
        in_features: N, the width of x_0.
        num_layers: number of cross layers.
        low_rank: rank r of each W_l; None for full rank.
        num_experts: K low-rank experts per layer; more than 1 needs ``low_rank``.

    Example:
        >>> CrossNetV2(8, num_layers=3)(torch.ones(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int | None = None, num_experts: int = 1) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"CrossNetV2.num_experts: expected >= 1, got {num_experts}")
        if low_rank is not None and low_rank < 1:
            raise ValueError(f"CrossNetV2.low_rank: expected >= 1 or None, got {low_rank}")
        if num_experts > 1 and low_rank is None:
            raise ValueError(f"CrossNetV2: num_experts={num_experts} needs low_rank (the experts are low-rank)")
        self.layers = nn.ModuleList(
            MixtureCrossLayer(in_features, low_rank, num_experts) if num_experts > 1
            else CrossLayer(in_features, low_rank)
            for _ in range(num_layers)
        )
        self.out_features = in_features

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)  # (B, N)
        return x


def factorization_machine(embeddings: torch.Tensor) -> torch.Tensor:
    """The FM's second-order term (Rendle 2010), sum_{i<j} <e_i, e_j>, in O(F d):

        0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2)

    Input (B, F, d) -> output (B,).

    Example:
        >>> factorization_machine(torch.ones(2, 3, 4))  # 3 pairs of <1, 1> = 4
        tensor([12., 12.])
    """
    square_of_sum = embeddings.sum(dim=1).square()  # (B, d)
    sum_of_squares = embeddings.square().sum(dim=1)  # (B, d)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)  # (B,)
