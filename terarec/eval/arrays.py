"""Array inputs the metric modules share: anything numpy understands, or a torch tensor, as numpy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # np.ndarray, torch.Tensor, list, ... anything np.asarray understands
# One process's array -> the concatenation of every process's (a distributed evaluation's all-gather).
Gather = Callable[[np.ndarray], np.ndarray]


def to_numpy(x: ArrayLike) -> np.ndarray:
    """Convert a torch tensor (any device, with or without grad) or array-like to numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def as_1d(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a 1-D numpy array; ValueError naming ``name`` for any other shape."""
    arr = to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr
