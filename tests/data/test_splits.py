"""Tests for terarec.data.splits: leave-one-out, time and random splits, and SplitConfig checks."""

from __future__ import annotations

import numpy as np
import pytest

from terarec.data.splits import SplitConfig, leave_one_out, random_split, time_cutoffs, time_split

# ----------------------------------------------------------------------------- leave-one-out


def test_leave_one_out_hand_example() -> None:
    # user 1: one event (train), user 2: two (valid, test), user 3: three, user 4: five.
    users = np.array([1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4])
    assert leave_one_out(users).tolist() == [0, 1, 2, 0, 1, 2, 0, 0, 0, 1, 2]


def test_leave_one_out_single_user_and_edge_sizes() -> None:
    assert leave_one_out(np.array([9])).tolist() == [0]
    assert leave_one_out(np.array([9, 9])).tolist() == [1, 2]
    assert leave_one_out(np.array([], dtype=np.int64)).tolist() == []
    codes = leave_one_out(np.array([5, 5, 5]))
    assert codes.dtype == np.int8


def test_leave_one_out_counts_per_user() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 8, size=50)
    users = np.repeat(np.arange(50), counts)
    codes = leave_one_out(users)
    for user, count in enumerate(counts):
        mine = codes[users == user]
        assert mine[-1] == (2 if count >= 2 else 0)
        assert (mine == 2).sum() == (count >= 2)
        assert (mine == 1).sum() == (count >= 2)
        assert (mine == 0).sum() == count - 2 * (count >= 2)


def test_leave_one_out_unsorted_raises() -> None:
    with pytest.raises(ValueError, match="sorted"):
        leave_one_out(np.array([1, 2, 1]))


# ----------------------------------------------------------------------------- time


def test_time_split_with_cutoffs() -> None:
    ts = np.array([0, 5, 9, 10, 14, 15, 100])
    assert time_split(ts, [10, 15]).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert time_split(ts, [10, 15]).dtype == np.int8


def test_time_cutoffs_are_quantiles() -> None:
    ts = np.arange(100)
    cutoffs = time_cutoffs(ts, 0.1, 0.2)
    assert cutoffs == [70, 80]
    codes = time_split(ts, cutoffs)
    assert np.bincount(codes).tolist() == [70, 10, 20]


def test_time_cutoffs_are_order_independent_and_ints() -> None:
    ts = np.random.default_rng(1).integers(0, 10**9, size=1000)
    cutoffs = time_cutoffs(ts, 0.1, 0.1)
    assert all(isinstance(c, int) for c in cutoffs)
    assert cutoffs == time_cutoffs(np.sort(ts), 0.1, 0.1)
    assert cutoffs[0] <= cutoffs[1]
    assert set(cutoffs) <= set(ts.tolist())  # "higher": actual timestamps
    shares = np.bincount(time_split(ts, cutoffs), minlength=3) / ts.size
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)


def test_time_cutoffs_of_empty_table_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        time_cutoffs(np.array([], dtype=np.int64), 0.1, 0.1)


# ----------------------------------------------------------------------------- random


def test_random_split_reproducible() -> None:
    a = random_split(1000, 0.1, 0.2, seed=3)
    b = random_split(1000, 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int8
    assert set(np.unique(a).tolist()) == {0, 1, 2}


def test_random_split_is_chunk_invariant() -> None:
    whole = random_split(1000, 0.15, 0.1, seed=7)
    pieces = []
    first = 0
    for size in (1, 299, 0, 400, 300):
        pieces.append(random_split(size, 0.15, 0.1, seed=7, first_row=first))
        first += size
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    # A chunk that starts mid-table is not the start of the table.
    assert not np.array_equal(random_split(300, 0.15, 0.1, seed=7, first_row=300), whole[:300])


def test_random_split_fractions_roughly_right() -> None:
    codes = random_split(20000, 0.1, 0.25, seed=0)
    shares = np.bincount(codes, minlength=3) / codes.size
    np.testing.assert_allclose(shares, [0.65, 0.1, 0.25], atol=0.02)


def test_random_split_zero_fractions() -> None:
    assert random_split(500, 0.0, 0.0, seed=0).tolist() == [0] * 500
    codes = random_split(2000, 0.0, 0.3, seed=0)
    assert (codes == 1).sum() == 0 and (codes == 2).sum() > 0


def test_random_split_different_seeds_differ() -> None:
    a = random_split(1000, 0.1, 0.1, seed=0)
    b = random_split(1000, 0.1, 0.1, seed=1)
    assert (a != b).mean() > 0.1


# ----------------------------------------------------------------------------- SplitConfig


def test_split_config_defaults_ok() -> None:
    config = SplitConfig()
    assert config.method == "leave_one_out"
    SplitConfig(method="time", valid_fraction=0.0, test_fraction=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "by_user"}, "split.method"),
        ({"valid_fraction": -0.1}, "split.valid_fraction"),
        ({"test_fraction": 1.0}, "split.test_fraction"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
    ],
)
def test_split_config_validation_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SplitConfig(**kwargs)
