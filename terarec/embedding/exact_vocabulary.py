"""Exact vocabularies: 64-bit feature ids to dense table rows, unknown ids to a counted default row.

Row 0 of every table is the default row: ids never seen when the vocabulary was built land
there and are counted in ``unknown_count``, never silently spread over other ids' rows.
The managed vocabulary with admission and eviction (``terarec.embedding.vocabulary``) keeps
this contract.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from terarec.features.vocabulary import sorted_unique

DEFAULT_ROW = 0


class ExactVocabulary(nn.Module):
    """Maps known 64-bit ids to rows 1..N and unknown ids to row 0 (counted).

    Args:
        ids: the known ids (any order, duplicates allowed).

    Example:
        >>> vocab = ExactVocabulary(np.array([10, 30, 20]))
        >>> vocab(torch.tensor([20, 99, 10])).tolist(), int(vocab.unknown_count)
        ([2, 0, 1], 1)
    """

    def __init__(self, ids: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        ids = torch.as_tensor(sorted_unique(np.asarray(ids, dtype=np.int64)))
        self.register_buffer("ids", ids)
        self.register_buffer("unknown_count", torch.zeros((), dtype=torch.int64))

    @property
    def num_rows(self) -> int:
        """Rows a table needs: the known ids plus the default row."""
        return int(self.ids.numel()) + 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        position, known = self._find(ids)
        self.unknown_count += (~known).sum()
        return torch.where(known, position + 1, torch.zeros_like(position))

    def contains(self, ids: torch.Tensor) -> torch.Tensor:
        """Whether each id is known (not counted): a binary search in the sorted ids, where
        ``torch.isin`` would sort the whole vocabulary on every call."""
        return self._find(ids)[1]

    def _find(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each id's position in the sorted ids and whether it is there."""
        if self.ids.numel() == 0:
            return torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        position = torch.searchsorted(self.ids, ids).clamp_(max=self.ids.numel() - 1)
        return position, self.ids[position] == ids
