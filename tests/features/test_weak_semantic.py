"""Tests for terarec.features.weak_semantic: each user's windowed favourite x the candidate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from terarec.features.crosses import CrossSpec, apply_crosses
from terarec.features.hashing import hash_array, null_id
from terarec.features.mixing import fold_ids
from terarec.features.weak_semantic import most_frequent_in_window, weak_semantic_keys

DAY = 86_400


def _history() -> pa.Table:
    #            user 1 .........................................   user 2 ..
    return pa.table(
        {
            "user_id": pa.array([1, 1, 1, 1, 1, 1, 2, 2], type=pa.int64()),
            "timestamp": pa.array([0, 1, 2, 3, 33, 70, 0, 0], type=pa.int64()) * DAY,
            "item_id": pa.array([10, 20, 10, 30, 40, 50, 10, 20], type=pa.int64()),
        }
    )


def test_most_frequent_in_window_hand_built() -> None:
    table = _history()
    rows = most_frequent_in_window(
        table["user_id"].to_numpy(), table["timestamp"].to_numpy(), table["item_id"].to_numpy(), 30 * DAY
    )
    assert rows.tolist() == [
        -1,  # first event of user 1: no history
        0,  # {10}
        1,  # {10: 1, 20: 1}: a tie goes to the most recent, 20
        2,  # {10: 2, 20: 1}: 10, at its latest occurrence
        3,  # day 33: only day 3 (exactly 30 days back) is in the window, days 0..2 are not
        -1,  # day 70: nothing in the last 30 days
        -1,  # user 2's first event: user 1's rows are not its history
        6,  # an earlier row at the same time counts
    ]


def test_weak_semantic_keys_cross_the_favourite_with_the_candidate() -> None:
    table = _history()
    cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=30)
    ids = weak_semantic_keys(table, cross)
    items = hash_array(table["item_id"], "item_id")
    favourite = np.array([0, 0, 1, 2, 3, 0, 0, 6])
    expected = fold_ids("fav_x_item", [items[favourite], items])
    no_history = [0, 5, 6]
    expected[no_history] = null_id("fav_x_item")
    np.testing.assert_array_equal(ids, expected)
    # The window is in days: 29.9 days drops day 3 for the day-33 event.
    shorter = weak_semantic_keys(table, CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=29.9))
    assert shorter[4] == null_id("fav_x_item") and shorter[3] == ids[3]


def test_weak_semantic_history_mask_nulls_and_other_columns() -> None:
    table = _history().append_column("category", pa.array([1, 2, None, 1, 3, 3, 4, 4], type=pa.int64()))
    cross = CrossSpec("fav_cat_x_item", "weak_semantic", ["category", "item_id"], window_days=30)
    rows_ids = weak_semantic_keys(table, cross)
    categories = hash_array(table["category"], "category")
    items = hash_array(table["item_id"], "item_id")
    # Row 3's history is categories {1, 2, null}: the null does not count, so 1 vs 2 tie -> 2 (row 1).
    assert rows_ids[3] == fold_ids("fav_cat_x_item", [categories[[1]], items[[3]]])[0]
    # Only clicked rows count as history: without row 1, category 1 (row 0) wins.
    mask = np.array([True, False, True, True, True, True, True, True])
    masked = weak_semantic_keys(table, cross, history_mask=mask)
    assert masked[3] == fold_ids("fav_cat_x_item", [categories[[0]], items[[3]]])[0]
    # A row outside the mask still gets a key from its own history.
    assert masked[1] == rows_ids[1] == fold_ids("fav_cat_x_item", [categories[[0]], items[[1]]])[0]
    first_masked = weak_semantic_keys(table, cross, history_mask=~np.eye(8, dtype=bool)[0])
    assert first_masked[1] == null_id("fav_cat_x_item")  # its only history row is masked out
    null_candidate = table.set_column(2, "item_id", pa.array([10, 20, 10, None, 40, 50, 10, 20], type=pa.int64()))
    assert weak_semantic_keys(null_candidate, cross)[3] == null_id("fav_cat_x_item")


def _reference_modes(users, times, values, window, eligible):
    modes = []
    for i in range(len(users)):
        counts: dict[int, int] = {}
        latest: dict[int, int] = {}
        for j in range(i):
            if users[j] == users[i] and times[i] - times[j] <= window and eligible[j]:
                counts[values[j]] = counts.get(values[j], 0) + 1
                latest[values[j]] = j
        modes.append(latest[max(counts, key=lambda v: (counts[v], latest[v]))] if counts else -1)
    return modes


@pytest.mark.parametrize("seed, scale", [(0, 1), (1, 1), (2, 1), (3, 2**56)])
def test_most_frequent_in_window_matches_a_brute_force_reference(seed: int, scale: int) -> None:
    # scale 2**56 spreads times over ~2**61 per user, past the (user, time) int64 key: the rank path.
    rng = np.random.default_rng(seed)
    num_rows = 400
    users = np.sort(rng.integers(0, 12, num_rows))
    times = np.zeros(num_rows, dtype=np.int64)
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        times[rows] = np.sort(rng.integers(0, 40, rows.size)) * scale
    values = rng.integers(0, 4, num_rows)
    eligible = rng.random(num_rows) < 0.8
    for window in (0, 3 * scale, 10 * scale, 1000 * scale):
        got = most_frequent_in_window(users, times, values, window, eligible)
        assert got.tolist() == _reference_modes(users, times, values, window, eligible)


def test_weak_semantic_needs_sorted_events() -> None:
    cross = CrossSpec("fav", "weak_semantic", ["item_id", "item_id"])
    unsorted_users = pa.table({"user_id": [1, 2, 1], "timestamp": [0, 0, 1], "item_id": [1, 2, 3]})
    with pytest.raises(ValueError, match="not contiguous"):
        weak_semantic_keys(unsorted_users, cross)
    unsorted_times = pa.table({"user_id": [1, 1], "timestamp": [5, 1], "item_id": [1, 2]})
    with pytest.raises(ValueError, match="time decreases"):
        weak_semantic_keys(unsorted_times, cross)


def test_apply_crosses_passes_precomputed_weak_semantic_ids_through() -> None:
    table = _history()
    cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"])
    with pytest.raises(ValueError, match="weak_semantic_keys"):
        apply_crosses(table, [cross])
    ids = weak_semantic_keys(table, cross)
    stored = table.append_column("fav_x_item", pa.array(ids))
    out_ids, lengths = apply_crosses(stored, [cross])["fav_x_item"]
    np.testing.assert_array_equal(out_ids, ids)
    assert lengths.tolist() == [1] * 8


def test_empty_events() -> None:
    events = pa.table({"user_id": pa.array([], pa.int64()), "timestamp": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64())})
    assert weak_semantic_keys(events, CrossSpec("w", "weak_semantic", ["item_id", "item_id"])).size == 0
