"""Each event's earlier history as list columns, for CTR models of user behaviour (DIN, DIEN, SIM).

``add_history(table, ["item_id", "genre"], max_length=50)`` gives every row of an events
table the list columns ``hist_item_id`` and ``hist_genre``: the values of the same user's
events with a *strictly smaller* timestamp, oldest first, the most recent ``max_length`` of
them. The lists of one row are aligned (position j of every list is the same earlier event).

Ties: events with the row's own timestamp, the row itself included, are never in its
history. Timestamps are the only clock the data has, and ML-100K users rate many movies
within one second in an order the file does not record, so such events count as
simultaneous. Hence no row's history holds the row itself or anything later, whatever the
order of the rows in the table (which only orders earlier events of equal time among
themselves, and so which of them the truncation keeps).

Slots: ``hist_X`` holds ids of the same kind as ``X``, so batches hash both in ``X``'s slot
(``terarec.data.batches.id_slot``) and a model can look them up in one shared table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from terarec.data import schema
from terarec.data.batches import gather_ranges
from terarec.data.ctr_dataset import HISTORY_PREFIX
from terarec.data.errors import DataError


def history_column(column: str) -> str:
    """The name of the history list column of ``column`` (``item_id`` -> ``hist_item_id``)."""
    return HISTORY_PREFIX + column


def history_ranges(
    user_ids: np.ndarray, timestamps: np.ndarray, max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each row's history lies among the rows sorted by (user, timestamp).

    Returns ``(order, starts, ends)``: ``order`` sorts the rows stably by (user, timestamp);
    row i's history is sorted rows ``order[starts[i]:ends[i]]`` (ends exclusive), the user's
    rows with a smaller timestamp, at most ``max_length`` of the latest.

    Example:
        >>> order, starts, ends = history_ranges(np.array([7, 7, 7]), np.array([5, 1, 5]), 10)
        >>> (ends - starts).tolist()  # the two events at time 5 see only the one at time 1
        [1, 0, 1]
    """
    if max_length < 1:
        raise ValueError(f"history max_length must be >= 1, got {max_length}")
    user_ids, timestamps = np.asarray(user_ids), np.asarray(timestamps)
    order = np.lexsort((timestamps, user_ids))  # stable
    users, times = user_ids[order], timestamps[order]
    position = np.arange(order.size)
    new_user = np.ones(order.size, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    new_time = new_user.copy()
    new_time[1:] |= times[1:] != times[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, position, 0))
    time_start = np.maximum.accumulate(np.where(new_time, position, 0))  # first row of the tie group
    sorted_starts = np.maximum(user_start, time_start - max_length)
    starts, ends = np.empty_like(position), np.empty_like(position)
    starts[order], ends[order] = sorted_starts, time_start
    return order, starts, ends


def add_history(
    table: pa.Table, columns: Sequence[str] | Mapping[str, pa.Array | pa.ChunkedArray | None], max_length: int
) -> pa.Table:
    """Append ``hist_<column>`` list columns (see the module docstring) to an events table.

    Args:
        table: an events table with ``user_id`` and ``timestamp``, rows in any order.
        columns: the per-event columns to collect (e.g. ``item_id``, ``genre``), or a mapping
            name -> per-row values for values that are not columns as they stand (e.g.
            ``{"rating": whole_stars}`` gives ``hist_rating``).
        max_length: keep the most recent ``max_length`` earlier events.

    Returns:
        The table, rows in the same order, with one ``list<type of column>`` per column.

    Example:
        >>> t = pa.table({"user_id": [1, 1, 1], "item_id": [10, 11, 12], "timestamp": [3, 1, 2]})
        >>> add_history(t, ["item_id"], 5).column("hist_item_id").to_pylist()
        [[11, 12], [], [11]]
    """
    if not isinstance(columns, Mapping):
        columns = {name: None for name in columns}
    for name in [schema.USER_ID, schema.TIMESTAMP, *[n for n, v in columns.items() if v is None]]:
        if name not in table.column_names:
            raise DataError(f"history needs column '{name}' (have {table.column_names})", field=name)
    order, starts, ends = history_ranges(
        table.column(schema.USER_ID).to_numpy(), table.column(schema.TIMESTAMP).to_numpy(), max_length
    )
    offsets = np.concatenate([[0], np.cumsum(ends - starts)])
    list_type = pa.ListArray if offsets[-1] < 2**31 else pa.LargeListArray
    offsets = pa.array(offsets, pa.int32() if list_type is pa.ListArray else pa.int64())
    rows = pa.array(order[gather_ranges(starts, ends)])  # row of every history entry, row by row
    for name, values in columns.items():
        values = table.column(name) if values is None else values
        if len(values) != table.num_rows:
            raise ValueError(f"history values of '{name}': {len(values)} for {table.num_rows} rows")
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        values = values.take(rows)
        table = table.append_column(history_column(name), list_type.from_arrays(offsets, values))
    return table
