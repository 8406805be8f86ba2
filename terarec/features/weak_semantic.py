"""Weak-semantic crosses: each event's user's most frequent recent value x the candidate, over sorted events.

A ``weak_semantic`` cross (``terarec.features.crosses.CrossSpec``) needs the user's whole
history, not one batch: ``weak_semantic_keys`` computes its ids over an events table sorted by
(user, time) (``terarec data prepare -o weak_semantic=[...]`` stores them as a column named
after the cross) and ``most_frequent_in_window`` is the windowed mode behind it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.features.crosses import CrossSpec, hash_input, input_column, single_column_ids, with_null_ids
from terarec.features.mixing import fold_ids

SECONDS_PER_DAY = 86_400


def _user_keys(array: pa.Array, cross: CrossSpec) -> np.ndarray:
    if array.null_count:
        raise ValueError(f"cross '{cross.name}' (weak_semantic): column '{cross.user_column}' has nulls")
    if pa.types.is_integer(array.type):
        return array.to_numpy(zero_copy_only=False).astype(np.int64)
    return hash_input(array, cross.user_column, cross, cross.user_column)


def _seconds(array: pa.Array, cross: CrossSpec) -> np.ndarray:
    if array.null_count:
        raise ValueError(f"cross '{cross.name}' (weak_semantic): column '{cross.time_column}' has nulls")
    if pa.types.is_timestamp(array.type):
        array = pc.cast(pc.cast(array, pa.timestamp("s")), pa.int64())
    elif not pa.types.is_integer(array.type):
        raise ValueError(
            f"cross '{cross.name}' (weak_semantic): column '{cross.time_column}' has type {array.type}; "
            "expected integer seconds or a timestamp"
        )
    return array.to_numpy(zero_copy_only=False).astype(np.int64)


def _first_at_or_after(rows: np.ndarray, low: np.ndarray, high: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Per query, the first index in ``[low, high]`` with ``rows[index] >= bound`` (``rows`` increasing
    there, ``rows[high] >= bound``): a vectorised binary search, each query as short as its range."""
    low, high = low.copy(), high.copy()
    pending = np.flatnonzero(low < high)
    while pending.size:
        a, b = low[pending], high[pending]
        middle = (a + b) >> 1
        right = rows[middle] < bound[pending]
        a = np.where(right, middle + 1, a)
        b = np.where(right, b, middle)
        low[pending], high[pending] = a, b
        pending = pending[a < b]
    return low


def most_frequent_in_window(
    users: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    window: int,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """For each event, the row of the mode of its user's recent earlier values, or -1.

    The history of row ``i`` is the rows ``j < i`` of the same user with
    ``timestamps[i] - timestamps[j] <= window`` (earlier rows at the same time included) and
    ``eligible[j]``. Among the values with the highest count in it, ties go to the value
    seen most recently; the row returned is that value's most recent occurrence.

    Cost: O(sum over rows of their window's length) numpy work, in a loop over offsets
    ``d = 1 .. longest window`` whose every step handles all rows with a window that long.

    Args:
        users: int64 user keys, each user's rows contiguous.
        timestamps: int64, non-decreasing within a user.
        values: int64 value ids (e.g. item ids hashed).
        window: history span, in the units of ``timestamps``.
        eligible: rows that may count as history (default all).
    """
    num_rows = users.size
    if num_rows >= 3_000_000_000:
        raise ValueError("most_frequent_in_window: more than 3e9 rows would overflow its int64 scores")
    window = min(int(window), 2**63 - 1)
    if window < 0:
        raise ValueError(f"most_frequent_in_window: window must be >= 0, got {window}")
    mode_rows = np.full(num_rows, -1, dtype=np.int64)
    if num_rows == 0:
        return mode_rows
    eligible = np.ones(num_rows, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    new_user = np.empty(num_rows, dtype=bool)
    new_user[0] = True
    np.not_equal(users[1:], users[:-1], out=new_user[1:])
    segment = np.cumsum(new_user) - 1
    if np.unique(users[new_user]).size != int(segment[-1]) + 1:
        raise ValueError("the table must be sorted by (user, time): a user's rows are not contiguous")
    if np.any((timestamps[1:] < timestamps[:-1]) & ~new_user[1:]):
        raise ValueError("the table must be sorted by (user, time): time decreases within a user")

    # Window starts: (segment, time) as one sorted int64 key, times taken relative to the oldest
    # or, where that could overflow, replaced by their rank among the distinct times.
    oldest = int(timestamps.min())
    span = int(timestamps.max()) - oldest + 1
    if (int(segment[-1]) + 1) * span < 2**62:
        relative = timestamps - oldest
        threshold = np.maximum(relative - window, 0)
    else:
        distinct_times = np.unique(timestamps)
        relative = np.searchsorted(distinct_times, timestamps)
        oldest_allowed = np.maximum(timestamps, np.iinfo(np.int64).min + window) - window
        threshold = np.searchsorted(distinct_times, oldest_allowed, side="left")
        span = distinct_times.size
    base = segment * np.int64(span)
    window_start = np.searchsorted(base + relative, base + threshold, side="left")

    # Occurrences of each (user, value) in time order (its "group"): for each history row, the row of
    # the next occurrence (num_rows if none; -1 marks rows that are not history), its place in
    # that order, and the place of its group's first occurrence.
    history = np.flatnonzero(eligible)
    order = history[np.lexsort((values[history], segment[history]))]
    same_key = (segment[order[1:]] == segment[order[:-1]]) & (values[order[1:]] == values[order[:-1]])
    next_occurrence = np.full(num_rows, -1, dtype=np.int64)
    next_occurrence[order] = num_rows
    next_occurrence[order[:-1][same_key]] = order[1:][same_key]
    place = np.zeros(num_rows, dtype=np.int64)
    place[order] = np.arange(order.size)
    group_first = np.flatnonzero(np.concatenate([[True], ~same_key]))
    first_place = np.zeros(num_rows, dtype=np.int64)
    first_place[order] = np.repeat(group_first, np.diff(np.append(group_first, order.size)))

    window_length = np.arange(num_rows, dtype=np.int64) - window_start
    longest = int(window_length.max())
    by_length = np.argsort(-window_length, kind="stable")
    rows_at_least = num_rows - np.cumsum(np.bincount(window_length, minlength=longest + 1))
    best = np.full(num_rows, -1, dtype=np.int64)  # count * num_rows + row of the best value so far
    for offset in range(1, longest + 1):
        rows = by_length[: int(rows_at_least[offset - 1])]
        earlier = rows - offset
        # Count each value once per row, at its most recent occurrence before the row.
        latest = next_occurrence[earlier] >= rows
        rows, earlier = rows[latest], earlier[latest]
        last = place[earlier]
        first_in_window = _first_at_or_after(order, first_place[earlier], last, window_start[rows])
        score = (last - first_in_window + 1) * num_rows + earlier
        best[rows] = np.maximum(best[rows], score)
    found = best >= 0
    mode_rows[found] = best[found] % num_rows
    return mode_rows


def weak_semantic_keys(table: pa.Table, cross: CrossSpec, history_mask: np.ndarray | None = None) -> np.ndarray:
    """Ids of a weak_semantic cross: each event's user's recent favourite x its candidate.

    For each row, the most frequent value of ``cross.columns[0]`` among the same user's
    earlier rows within ``cross.window_days`` (ties: the value seen most recently; null
    values never count) is folded with the row's ``cross.columns[1]``, in the cross's slot.
    A row with no such history, or a null candidate, gets the cross's null id.

    Args:
        table: events sorted by (``cross.user_column``, ``cross.time_column``), e.g. a prepared
            events table (whole users per part); times in seconds.
        cross: a ``weak_semantic`` CrossSpec, ``columns=[history_column, candidate_column]``.
        history_mask: optional bool per row: only these rows count as history (e.g. clicks);
            every row still gets a key.

    Returns:
        int64 ids, one per row; store them as a column named ``cross.name`` for
        ``apply_crosses``.

    Example:
        >>> from terarec.features.hashing import null_id
        >>> events = pa.table({"user_id": [1, 1, 1], "timestamp": [0, 60, 120], "item_id": [7, 7, 8]})
        >>> cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=1)
        >>> ids = weak_semantic_keys(events, cross)
        >>> bool(ids[0] == null_id("fav_x_item")), bool(ids[1] == ids[2])
        (True, False)
    """
    if cross.kind != "weak_semantic":
        raise ValueError(f"cross '{cross.name}' is a {cross.kind} cross, not weak_semantic")
    history_column, candidate_column = cross.columns
    users = _user_keys(input_column(table, cross, cross.user_column), cross)
    timestamps = _seconds(input_column(table, cross, cross.time_column), cross)
    history_ids, history_nulls = single_column_ids(table, cross, history_column)
    candidate_ids, candidate_nulls = single_column_ids(table, cross, candidate_column)
    eligible = np.ones(table.num_rows, dtype=bool) if history_mask is None else np.asarray(history_mask, dtype=bool).copy()
    if eligible.shape != (table.num_rows,):
        raise ValueError(f"history_mask has shape {eligible.shape}; expected ({table.num_rows},)")
    if history_nulls is not None:
        eligible &= ~history_nulls
    window = min(int(np.floor(min(cross.window_days * SECONDS_PER_DAY, 2.0**63))), 2**63 - 1)
    mode_rows = most_frequent_in_window(users, timestamps, history_ids, window, eligible)
    no_history = mode_rows < 0
    ids = fold_ids(cross.name, [history_ids[np.where(no_history, 0, mode_rows)], candidate_ids])
    return with_null_ids(ids, [no_history, candidate_nulls], cross.name)
