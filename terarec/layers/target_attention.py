"""Target attention over a user's history, shared by DIN, DIEN and SIM.

Every block here takes the target's embedding v_A (B, D), the history e_1..e_T (B, T, D) and
a (B, T) mask of the real positions, and never lets a padded position carry weight; a row
with no history gets all-zero weights (and so a zero interest vector), never NaN.

    masked_softmax:           w_j = exp(s_j) / sum_{k real} exp(s_k) at real j, 0 at padding
    ActivationUnit (DIN):     a(e_j, v_A) = MLP([e_j, v_A, e_j - v_A, e_j ⊙ v_A])  -> scalar
    TargetAttention (DIN):    v_U(A) = sum_j w_j e_j, w_j = a(e_j, v_A) (or its masked softmax)
    MultiHeadTargetAttention  head_h = softmax((v_A W^Q_h)(E W^K_h)^T / sqrt(d_h)) E W^V_h,
      (SIM's ESU):            out = concat(head_1..head_H) W^O

The history entries compared with the target may be only part of each behaviour: DIN pools
whole behaviours (e.g. a movie with the rating it got) with weights from the movie alone, and
the multi-head attention's keys and values may be wider than the query.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from terarec.layers.mlp import MLP


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis at ``mask``'s True positions; 0 elsewhere (all 0 for an empty row).

    Example:
        >>> masked_softmax(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[True, True, False]]))
        tensor([[0.5000, 0.5000, 0.0000]])
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


class ActivationUnit(nn.Module):
    """DIN's local activation unit: a relevance score of each history entry for the target.

    a(e_j, v_A) = MLP([e_j, v_A, e_j - v_A, e_j ⊙ v_A]); the difference and the element-wise
    product stand in for the paper's out product of e_j and v_A (Zhou et al. 2018, Fig. 2).
    The first layer is linear, W [e, v, e - v, e ⊙ v] = (W_1 + W_3) e + (W_2 - W_3) v + W_4 (e ⊙ v),
    so it is computed as three products and the (B, T, 4D) concatenation is never built.

    Args:
        dim: D, the width of v_A and of each e_j.
        hidden: hidden widths of the MLP (its output is one score); at least one.

    Example:
        >>> ActivationUnit(8, [16])(torch.randn(2, 8), torch.randn(2, 5, 8)).shape
        torch.Size([2, 5])
    """

    def __init__(self, dim: int, hidden: list[int]) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the activation unit needs at least one hidden layer")
        self.history_part = nn.Linear(dim, hidden[0])  # (W_1 + W_3) e_j + b
        self.target_part = nn.Linear(dim, hidden[0], bias=False)  # (W_2 - W_3) v_A
        self.product_part = nn.Linear(dim, hidden[0], bias=False)  # W_4 (e_j ⊙ v_A)
        self.activation = nn.PReLU()
        self.mlp = MLP(hidden[0], hidden[1:], out_features=1, activation=nn.PReLU)

    def forward(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        query = target.unsqueeze(1)  # (B, 1, D)
        first = self.history_part(history) + self.target_part(query) + self.product_part(history * query)
        return self.mlp(self.activation(first)).squeeze(-1)  # (B, T)


class TargetAttention(nn.Module):
    """DIN's attention pooling: v_U(A) = sum_j w_j e_j with w_j from the activation unit.

    Args:
        dim: D.
        hidden: the activation unit's hidden widths.
        normalization: ``none`` (the paper: w_j = a(e_j, v_A), unnormalised, so the interest's
            size carries how strongly the history fits) or ``softmax`` (masked softmax of a).

    Example:
        >>> attention = TargetAttention(8, [16])
        >>> attention(torch.randn(2, 8), torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, hidden: list[int], normalization: Literal["none", "softmax"] = "none") -> None:
        super().__init__()
        if normalization not in ("none", "softmax"):
            raise ValueError(f"normalization must be 'none' or 'softmax', got {normalization!r}")
        self.unit = ActivationUnit(dim, hidden)
        self.normalization = normalization

    def weights(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) weights, 0 at padding."""
        scores = self.unit(target, history)  # (B, T)
        if self.normalization == "softmax":
            return masked_softmax(scores, mask)
        return scores * mask

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """sum_j w_j e_j, or sum_j w_j values_j where each behaviour carries more than what is
        compared with the target (values (B, T, V) -> (B, V))."""
        weights = self.weights(target, history, mask)  # (B, T)
        return torch.einsum("bt,btv->bv", weights, history if values is None else values)  # (B, D)


class MultiHeadTargetAttention(nn.Module):
    """Multi-head attention with the target as the single query (SIM's exact search unit).

    Args:
        dim: the attention width (H heads of d_h = dim / H) and the output's width.
        num_heads: H; must divide ``dim``.
        query_dim: the target's width (default ``dim``).
        key_dim: each history entry's width (default ``dim``).

    Example:
        >>> mha = MultiHeadTargetAttention(8, 2, key_dim=12)
        >>> mha(torch.randn(2, 8), torch.randn(2, 5, 12), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, num_heads: int, query_dim: int | None = None, key_dim: int | None = None) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must divide the width {dim}, got {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Linear(query_dim or dim, dim, bias=False)  # W^Q_1..W^Q_H side by side
        self.key = nn.Linear(key_dim or dim, dim, bias=False)
        self.value = nn.Linear(key_dim or dim, dim, bias=False)
        self.output = nn.Linear(dim, dim)  # W^O

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = history.shape
        heads, width = self.num_heads, self.head_dim
        query = self.query(target).view(batch, heads, width)  # (B, H, d_h)
        keys = self.key(history).view(batch, length, heads, width)  # (B, T, H, d_h)
        values = self.value(history).view(batch, length, heads, width)  # (B, T, H, d_h)
        scores = torch.einsum("bhk,bthk->bht", query, keys) / math.sqrt(width)  # (B, H, T)
        weights = masked_softmax(scores, mask.unsqueeze(1))  # (B, H, T)
        attended = torch.einsum("bht,bthk->bhk", weights, values)  # (B, H, d_h)
        return self.output(attended.reshape(batch, heads * width))  # (B, D)
