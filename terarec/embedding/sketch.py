"""Count-min sketch of 64-bit ids in torch tensors: the managed vocabulary's counts of ids not yet admitted.

``depth`` rows of ``width`` int32 counters (``width`` a power of two); row ``r`` puts id ``x``
in the cell given by the top bits of ``(x ^ (seed + r)) * MULTIPLIERS[r]`` (multiply-shift
hashing, one multiply per row). Plain updates (every row's cell is incremented), estimate =
the minimum over rows, so an estimate never falls below the true count. The owner halves the
counters every ``window`` additions (``halve``) so old sightings fade.

The counters and the additions counter stay buffers of the owner (``ManagedVocabulary``'s
``sketch`` and ``sketch_additions``), so checkpoints keep their keys; this module holds the
arithmetic only.

Example:
    >>> counters = torch.zeros((4, 1024), dtype=torch.int32)
    >>> add_and_estimate(counters, torch.tensor([5, 5, 9]), seed=0).tolist()
    [2, 2, 1]
"""

from __future__ import annotations

import math

import torch

from terarec.features.mixing import GOLDEN, MIX1, MIX2, as_int64

# Odd 64-bit multipliers, one per sketch row (the splitmix64 and murmur3 finaliser constants,
# the golden gamma, and three odd LCG / xorshift multipliers), as int64 for tensor arithmetic.
MULTIPLIERS: tuple[int, ...] = (
    as_int64(MIX1),
    as_int64(MIX2),
    -49064778989728563,  # 0xFF51AFD7ED558CCD
    -4265267296055464877,  # 0xC4CEB9FE1A85EC53
    as_int64(GOLDEN),
    0x2545F4914F6CDD1D,
    0x5851F42D4C957F2D,
    0x14057B7EF767814F,
)


def add_and_estimate(counters: torch.Tensor, ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Add one sighting per id occurrence to ``counters`` (depth, width) and return each id's estimate."""
    depth, width = counters.shape
    shift, mask = 64 - int(math.log2(width)), width - 1
    cells = torch.empty((depth, ids.numel()), dtype=torch.int64)
    for row in range(depth):
        cells[row] = (((ids ^ (seed + row)) * MULTIPLIERS[row]) >> shift) & mask
        cells[row] += row * width
    cells = cells.view(-1)
    flat = counters.view(-1)
    flat.index_add_(0, cells, torch.ones(cells.numel(), dtype=torch.int32))
    return flat.index_select(0, cells).view(depth, -1).amin(0)


def halve(counters: torch.Tensor) -> None:
    """Halve every counter (in place): sightings older than a window count for half."""
    counters.bitwise_right_shift_(1)
