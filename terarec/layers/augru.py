"""DIEN's GRU with attentional update gate (AUGRU; Zhou et al., AAAI 2019, the interest evolving layer).

A GRU cell whose update gate is scaled by the attention score a_t of step t for the target:

    u_t  = σ(W^u i_t + U^u h_{t-1} + b^u)                 update gate
    r_t  = σ(W^r i_t + U^r h_{t-1} + b^r)                 reset gate
    h̃_t  = tanh(W^h i_t + r_t ⊙ U^h h_{t-1} + b^h)        candidate
    ũ_t  = a_t · u_t                                       attentional update gate
    h_t  = (1 - ũ_t) ⊙ h_{t-1} + ũ_t ⊙ h̃_t

A step with a_t = 0 leaves the state unchanged, so padded steps (weight 0) are skipped
without packing, and a right-padded batch ends every row in its own final state.
"""

from __future__ import annotations

import torch
from torch import nn


class AUGRUCell(nn.Module):
    """One AUGRU step: (B, input), (B, hidden), (B,) attention -> (B, hidden).

    Args:
        input_size: width of i_t.
        hidden_size: width of h_t.

    Example:
        >>> AUGRUCell(4, 6)(torch.randn(2, 4), torch.zeros(2, 6), torch.ones(2)).shape
        torch.Size([2, 6])
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_gates = nn.Linear(input_size, 3 * hidden_size)  # W^u, W^r, W^h and the biases
        self.hidden_gates = nn.Linear(hidden_size, 3 * hidden_size, bias=False)  # U^u, U^r, U^h

    def step(self, gated_input: torch.Tensor, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """One step from precomputed ``input_gates(i_t)`` (B, 3 * hidden)."""
        input_u, input_r, input_h = gated_input.chunk(3, dim=-1)
        hidden_u, hidden_r, hidden_h = self.hidden_gates(hidden).chunk(3, dim=-1)
        update = torch.sigmoid(input_u + hidden_u)  # u_t
        reset = torch.sigmoid(input_r + hidden_r)  # r_t
        candidate = torch.tanh(input_h + reset * hidden_h)  # h̃_t
        update = attention.unsqueeze(-1) * update  # ũ_t = a_t · u_t
        return (1 - update) * hidden + update * candidate

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.step(self.input_gates(inputs), hidden, attention)


class AUGRU(nn.Module):
    """AUGRU over a sequence: (B, T, input) and (B, T) attention -> the final state (B, hidden).

    Args:
        input_size: width of each step's input.
        hidden_size: width of the state.

    Example:
        >>> AUGRU(4, 6)(torch.randn(2, 5, 4), torch.rand(2, 5)).shape
        torch.Size([2, 6])
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = AUGRUCell(input_size, hidden_size)

    def forward(self, inputs: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        gated = self.cell.input_gates(inputs)  # (B, T, 3 * hidden), every step's input part at once
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)  # (B, hidden)
        # unbind, not gated[:, t]: indexing each step would give backward a full-size zero tensor per step.
        for gated_t, attention_t in zip(gated.unbind(1), attention.unbind(1)):
            hidden = self.cell.step(gated_t, hidden, attention_t)
        return hidden
