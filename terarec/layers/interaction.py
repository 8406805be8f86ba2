"""Feature-interaction blocks shared by ranking models."""

from __future__ import annotations

import torch
from torch import nn


class DotInteraction(nn.Module):
    """Pairwise dot products of n embeddings (DLRM's interaction), strictly upper triangle.

    Input (B, n, d) -> output (B, n * (n - 1) / 2).

    Example:
        >>> DotInteraction(4)(torch.ones(2, 4, 8)).shape
        torch.Size([2, 6])
    """

    def __init__(self, num_embeddings: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_embeddings, num_embeddings, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.num_embeddings = num_embeddings

    @property
    def out_features(self) -> int:
        return int(self.rows.numel())

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(embeddings, embeddings.transpose(1, 2))  # (B, n, n)
        return gram[:, self.rows, self.cols]
