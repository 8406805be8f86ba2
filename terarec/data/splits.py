"""Train / valid / test splits, seeded and computable chunk by chunk: leave-one-out, time, random.

Each function returns int8 split codes (0 train, 1 valid, 2 test, see ``schema.SPLIT_CODES``)
for the rows it is given, so a 10M-row table is split one chunk at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from terarec.features.mixing import splitmix64

SplitMethod = Literal["leave_one_out", "time", "random", "given"]
SPLIT_METHODS: tuple[str, ...] = ("leave_one_out", "time", "random", "given")


@dataclass
class SplitConfig:
    """How to split a prepared table.

    Args:
        method: ``leave_one_out`` (per user by time: last event = test, second to last =
            valid, the rest train; users with 2 events give one to test, users with 1 keep it
            in train), ``time`` (global cut-offs at the quantiles of the timestamps), ``random``
            (each row by a seeded hash of its position) or ``given`` (the source's own split).
        valid_fraction: share of rows for validation (time and random).
        test_fraction: share of rows for test (time and random).
        seed: seed of the random split.
    """

    method: str = "leave_one_out"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    cutoffs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"split.method must be one of {SPLIT_METHODS}, got {self.method!r}")
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"split.{name} must be in [0, 1), got {value}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("split.valid_fraction + split.test_fraction must be below 1")
        if self.cutoffs and (len(self.cutoffs) != 2 or self.cutoffs[0] > self.cutoffs[1]):
            raise ValueError(f"split.cutoffs must be [valid_start, test_start] in order, got {self.cutoffs}")


def leave_one_out(user_ids: np.ndarray) -> np.ndarray:
    """Split codes for rows sorted by (user, time): each user's last row test, second to last valid.

    Example:
        >>> leave_one_out(np.array([1, 1, 1, 2, 2, 3])).tolist()
        [0, 1, 2, 1, 2, 0]

    Users with two rows give the first to valid and the last to test; one row stays in train.
    """
    user_ids = np.asarray(user_ids)
    n = user_ids.size
    codes = np.zeros(n, dtype=np.int8)
    if n == 0:
        return codes
    if np.any(user_ids[1:] < user_ids[:-1]):
        raise ValueError("leave_one_out needs rows sorted by user_id (then timestamp)")
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = user_ids[1:] != user_ids[:-1]
    is_first = np.ones(n, dtype=bool)
    is_first[1:] = user_ids[1:] != user_ids[:-1]
    codes[is_last] = 2
    second_last = np.zeros(n, dtype=bool)
    second_last[:-1] = is_last[1:] & ~is_first[1:]
    codes[second_last] = 1
    # A user with a single row keeps it for training.
    codes[is_last & is_first] = 0
    return codes


def time_cutoffs(timestamps: np.ndarray, valid_fraction: float, test_fraction: float) -> list[int]:
    """Global cut-offs [valid_start, test_start] at the (1 - valid - test) and (1 - test) quantiles."""
    if timestamps.size == 0:
        raise ValueError("cannot compute time cut-offs of an empty table")
    quantiles = [1.0 - valid_fraction - test_fraction, 1.0 - test_fraction]
    return [int(q) for q in np.quantile(timestamps, quantiles, method="higher")]


def time_split(timestamps: np.ndarray, cutoffs: list[int]) -> np.ndarray:
    """Split codes from global cut-offs: t < cutoffs[0] train, t < cutoffs[1] valid, else test."""
    valid_start, test_start = cutoffs
    codes = np.zeros(np.asarray(timestamps).size, dtype=np.int8)
    codes[timestamps >= valid_start] = 1
    codes[timestamps >= test_start] = 2
    return codes


def random_split(
    num_rows: int, valid_fraction: float, test_fraction: float, seed: int, first_row: int = 0
) -> np.ndarray:
    """Seeded random split codes for rows ``first_row .. first_row + num_rows - 1``.

    Each row's code depends only on (seed, its global position), so splitting a table in one
    go or chunk by chunk gives the same answer.
    """
    positions = np.arange(first_row, first_row + num_rows, dtype=np.uint64)
    seed_bits = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)  # negative seeds wrap
    mixed = splitmix64(positions ^ splitmix64(seed_bits)[0])
    uniform = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    codes = np.zeros(num_rows, dtype=np.int8)
    codes[uniform >= 1.0 - valid_fraction - test_fraction] = 1
    codes[uniform >= 1.0 - test_fraction] = 2
    return codes
