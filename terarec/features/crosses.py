"""Declared feature crosses: new 64-bit ids, each cross in its own slot, computed from a table's columns.

A cross turns several raw features, or one list feature, into one new categorical feature
whose ids live in the slot named by the cross (``CrossSpec.name``): the same input values
always give the same id, and two crosses never share an id space. Everything is vectorised
over the rows of an Arrow table (numpy uint64 arithmetic, no Python loop over rows); the
result is ``(ids, lengths)`` per cross, the layout ``terarec.data.batches`` uses for a
KeyedJaggedTensor key (``ctr_batch_from_table`` appends them after the plain sparse keys).

Kinds (``CrossSpec.kind``):

* ``derivation``: attributes of one entity, e.g. an item's category x its price bucket
  (``columns=["category", "price"], buckets={"price": [10, 50, 100]}``): one id per
  (category, price bucket) pair.
* ``interaction``: attributes of two entities, e.g. ``item_id x gender x age bucket``.
  Derivation and interaction are the same arithmetic, named apart because the field
  reasons about them apart; their ids agree for the same name and columns.
* ``permutation``: the ordered key of a list column. For the characters a player picked
  in a match, ``[mage, tank, healer]`` and ``[healer, tank, mage]`` are different picks
  orders and get different ids.
* ``combination``: the order-invariant key of a list column (a multiset: sorted, then
  folded): the same two orders above are one team and get one id; ``[mage, mage]`` and
  ``[mage]`` differ.
* ``elements``: each element of the list as its own id in the cross's slot, a multi-hot
  feature (length = the list's length) that the embedding bag pools: each pick pooled.
* ``weak_semantic``: a user's most frequent value of a column (item, category, ...) among
  their earlier events of the last ``window_days`` x the candidate item
  (``columns=[history_column, candidate_column]``). It needs the user's whole history, not
  one batch: compute it with ``weak_semantic_keys`` on the events table sorted by (user,
  time), store the ids as a column named after the cross, and ``apply_crosses`` passes
  that column through.

Arithmetic: each input column is first hashed in its own slot (the column's name, so
these are the ids the column has as a plain feature; a bucketed column hashes its bucket
index in the slot ``"<column>:bucket"``), then the ids are folded in order, keyed by the
cross: ``h = slot_seed(name); h = splitmix64(h ^ id_k)`` for each input k. List kinds fold
the list's length first and then its element ids (permutation: in list order;
combination: sorted as signed int64). Nulls: a null in any input column, a null list, or
(for bucketed columns) NaN gives the cross's null id, ``hashing.null_id(name)``; a null
*element* inside a list keeps its column's null id and counts as a value; a null list
gives zero elements for ``elements``, as in ``ctr_batch_from_table``.

Example:
    >>> table = pa.table({"picks": [[3, 1, 2], [1, 2, 3]]})
    >>> crosses = [CrossSpec("picks_order", "permutation", ["picks"]),
    ...            CrossSpec("picks_team", "combination", ["picks"]),
    ...            CrossSpec("picks_each", "elements", ["picks"])]
    >>> out = apply_crosses(table, crosses)
    >>> bool(out["picks_order"][0][0] != out["picks_order"][0][1])
    True
    >>> bool(out["picks_team"][0][0] == out["picks_team"][0][1])
    True
    >>> out["picks_each"][1].tolist()
    [3, 3]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.config import ConfigError, from_dict
from terarec.features.hashing import (
    _GOLDEN,
    _MIX1,
    _MIX2,
    hash_array,
    hash_ints,
    null_id,
    slot_seed,
)

CROSS_KINDS: tuple[str, ...] = ("derivation", "interaction", "permutation", "combination", "elements", "weak_semantic")
TUPLE_KINDS: tuple[str, ...] = ("derivation", "interaction")
LIST_KINDS: tuple[str, ...] = ("permutation", "combination", "elements")
SECONDS_PER_DAY = 86_400
# fold_lists folds each distinct list length as its own matrix while the lengths' sum (the
# number of vector steps) stays below this; past it, one pass per position over all rows.
_MAX_GROUPED_POSITIONS = 4096


@dataclass
class CrossSpec:
    """One declared cross: which columns, combined how, into which slot.

    Args:
        name: the output feature's name, which is also its slot (id space).
        kind: one of ``CROSS_KINDS`` (see the module docstring).
        columns: inputs. derivation / interaction: one or more single-valued columns (int or
            string; float only with ``buckets``), folded in this order. permutation /
            combination / elements: exactly one list column. weak_semantic: exactly two,
            ``[history_column, candidate_column]``.
        buckets: derivation / interaction only: numeric columns to bucket before crossing,
            column -> increasing boundaries ``[b0, ..., bk]``; a value ``x`` falls in bucket
            ``i`` = the number of boundaries ``<= x`` (so ``x < b0`` is bucket 0 and a value
            equal to a boundary belongs to the bucket above it).
        window_days: weak_semantic only: history kept, in days of the time column (seconds):
            earlier events with ``t_row - t_event <= window_days * 86400`` count.
        user_column: weak_semantic only: whose history.
        time_column: weak_semantic only: event time in seconds, the table sorted by
            (user, time).

    Example:
        >>> CrossSpec("category_x_price", "derivation", ["category", "price"],
        ...           buckets={"price": [10.0, 50.0, 100.0]})  # doctest: +ELLIPSIS
        CrossSpec(name='category_x_price', kind='derivation', ...)
    """

    name: str
    kind: str
    columns: list[str]
    buckets: dict[str, list[float]] = field(default_factory=dict)
    window_days: float = 30.0
    user_column: str = "user_id"
    time_column: str = "timestamp"

    def __post_init__(self) -> None:
        where = f"cross '{self.name}'"
        if not self.name:
            raise ValueError("a cross needs a non-empty name (its slot)")
        if self.kind not in CROSS_KINDS:
            raise ValueError(f"{where}: kind must be one of {list(CROSS_KINDS)}, got {self.kind!r}")
        self.columns = list(self.columns)
        if self.kind in TUPLE_KINDS and not self.columns:
            raise ValueError(f"{where}: a {self.kind} cross needs at least one column")
        if self.kind in LIST_KINDS and len(self.columns) != 1:
            raise ValueError(f"{where}: a {self.kind} cross takes exactly one list column, got {self.columns}")
        if self.kind == "weak_semantic" and len(self.columns) != 2:
            raise ValueError(
                f"{where}: a weak_semantic cross takes [history_column, candidate_column], got {self.columns}"
            )
        if self.buckets and self.kind not in TUPLE_KINDS:
            raise ValueError(f"{where}: buckets apply to derivation and interaction crosses, not {self.kind}")
        for column, boundaries in self.buckets.items():
            if column not in self.columns:
                raise ValueError(f"{where}: buckets given for '{column}', which is not one of its columns {self.columns}")
            edges = np.asarray(boundaries, dtype=np.float64)
            if edges.ndim != 1 or edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise ValueError(
                    f"{where}: buckets['{column}'] must be a non-empty list of finite, strictly increasing "
                    f"numbers, got {boundaries!r}"
                )
        if not self.window_days > 0:
            raise ValueError(f"{where}: window_days must be positive, got {self.window_days}")

    @property
    def input_columns(self) -> list[str]:
        """Table columns a batch needs: the inputs, or for weak_semantic its precomputed column."""
        return [self.name] if self.kind == "weak_semantic" else list(self.columns)


def crosses_from_config(items: list[dict[str, Any]] | None, where: str = "crosses") -> list[CrossSpec]:
    """CrossSpecs from a YAML list of mappings, with the config module's key and type checks.

    Example:
        >>> crosses_from_config([{"name": "team", "kind": "combination", "columns": ["picks"]}])[0].kind
        'combination'
    """
    specs = [from_dict(CrossSpec, item, f"{where}[{i}]") for i, item in enumerate(items or [])]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{where}: cross names must be unique; repeated: {duplicates}")
    return specs


# ----------------------------------------------------------------------------- arithmetic


def _mix_into(state: np.ndarray, ids: np.ndarray, scratch: np.ndarray) -> None:
    """``state = splitmix64(state ^ ids)`` in place over uint64 arrays, with no allocation."""
    np.bitwise_xor(state, ids, out=state)
    np.add(state, _GOLDEN, out=state)
    np.right_shift(state, np.uint64(30), out=scratch)
    np.bitwise_xor(state, scratch, out=state)
    np.multiply(state, _MIX1, out=state)
    np.right_shift(state, np.uint64(27), out=scratch)
    np.bitwise_xor(state, scratch, out=state)
    np.multiply(state, _MIX2, out=state)
    np.right_shift(state, np.uint64(31), out=scratch)
    np.bitwise_xor(state, scratch, out=state)


def fold_ids(slot: str, column_ids: list[np.ndarray]) -> np.ndarray:
    """The cross arithmetic: fold per-column int64 ids, row by row, in order, keyed by ``slot``.

    ``h = slot_seed(slot)``, then ``h = splitmix64(h ^ ids_k)`` for each array; int64 out.
    Order matters: ``fold_ids(s, [a, b]) != fold_ids(s, [b, a])``.
    """
    num_rows = column_ids[0].size if column_ids else 0
    state = np.full(num_rows, slot_seed(slot), dtype=np.uint64)
    scratch = np.empty_like(state)
    for ids in column_ids:
        _mix_into(state, np.asarray(ids, dtype=np.int64).view(np.uint64), scratch)
    return state.view(np.int64)


def fold_lists(slot: str, element_ids: np.ndarray, lengths: np.ndarray, ordered: bool = True) -> np.ndarray:
    """One id per list: fold its length, then its element ids (sorted first unless ``ordered``).

    Args:
        slot: the cross's name.
        element_ids: int64 ids of all elements, list after list.
        lengths: int64 length of each list.
        ordered: False sorts each list's ids (signed int64 order) first: an order-invariant key.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    element_ids = np.asarray(element_ids, dtype=np.int64)
    num_rows = lengths.size
    state = np.full(num_rows, slot_seed(slot), dtype=np.uint64)
    scratch = np.empty_like(state)
    _mix_into(state, lengths.view(np.uint64), scratch)
    if num_rows == 0 or element_ids.size == 0:
        return state.view(np.int64)
    longest = int(lengths.max())
    if element_ids.size == num_rows * longest:
        # Every list has the same length: a (rows, length) view, no gathers.
        matrix = element_ids.reshape(num_rows, longest)
        if not ordered:
            matrix = np.sort(matrix, axis=1)
        for position in range(longest):
            _mix_into(state, matrix[:, position].view(np.uint64), scratch)
        return state.view(np.int64)
    starts = np.zeros(num_rows, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    rows_per_length = np.bincount(lengths)
    present = np.flatnonzero(rows_per_length[1:]) + 1
    if int(present.sum()) <= _MAX_GROUPED_POSITIONS:
        # Few distinct lengths: each length's rows as one (rows, length) matrix, as above.
        by_length = np.argsort(lengths, kind="stable")
        group_ends = np.cumsum(rows_per_length)
        for length in present.tolist():
            rows = by_length[group_ends[length] - rows_per_length[length] : group_ends[length]]
            matrix = element_ids[starts[rows][:, None] + np.arange(length)]
            if not ordered:
                matrix.sort(axis=1)
            group_state = state[rows]
            for position in range(length):
                _mix_into(group_state, matrix[:, position].view(np.uint64), scratch[: rows.size])
            state[rows] = group_state
        return state.view(np.int64)
    # Many distinct lengths: visit rows longest first, so the rows still going at each position
    # are a prefix, and sort within lists one length at a time.
    by_length = np.argsort(-lengths, kind="stable")
    if not ordered:
        element_ids = element_ids.copy()
        at_least = np.append(np.cumsum(rows_per_length[::-1])[::-1], 0)  # rows with length >= L
        for length in present[present > 1].tolist():
            rows = by_length[at_least[length + 1] : at_least[length]]
            positions = starts[rows][:, None] + np.arange(length)
            element_ids[positions] = np.sort(element_ids[positions], axis=1)
    sorted_state = state[by_length]
    sorted_starts = starts[by_length]
    rows_longer_than = num_rows - np.cumsum(rows_per_length)
    for position in range(longest):
        active = int(rows_longer_than[position])
        ids = element_ids[sorted_starts[:active] + position]
        _mix_into(sorted_state[:active], ids.view(np.uint64), scratch[:active])
    state[by_length] = sorted_state
    return state.view(np.int64)


# ----------------------------------------------------------------------------- columns


def _column(table: pa.Table, cross: CrossSpec, name: str) -> pa.Array:
    if name not in table.column_names:
        raise ValueError(
            f"cross '{cross.name}' ({cross.kind}): column '{name}' is not in the table "
            f"(columns: {sorted(table.column_names)})"
        )
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _null_mask(array: pa.Array) -> np.ndarray | None:
    return pc.is_null(array).to_numpy(zero_copy_only=False) if array.null_count else None


def _hash(array: pa.Array, slot: str, cross: CrossSpec, column: str) -> np.ndarray:
    try:
        return hash_array(array, slot)
    except TypeError as error:
        raise ValueError(f"cross '{cross.name}' ({cross.kind}): column '{column}': {error}") from error


def _single_column_ids(table: pa.Table, cross: CrossSpec, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids (column slot, or the bucket slot) and null mask of one single-valued input."""
    array = _column(table, cross, name)
    where = f"cross '{cross.name}' ({cross.kind}): column '{name}'"
    if _is_list(array.type):
        raise ValueError(
            f"{where} is a list column ({array.type}); {cross.kind} crosses take single-valued columns "
            "(use permutation, combination or elements for lists)"
        )
    if name in cross.buckets:
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise ValueError(f"{where} has type {array.type}; bucketing needs a numeric column")
        values = pc.fill_null(pc.cast(array, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        missing = np.isnan(values)
        bucket = np.searchsorted(np.asarray(cross.buckets[name], dtype=np.float64), values, side="right")
        return hash_ints(bucket, f"{name}:bucket"), (missing if missing.any() else None)
    if pa.types.is_floating(array.type):
        raise ValueError(f"{where} is {array.type}; give it bucket boundaries in buckets['{name}'] to cross it")
    return _hash(array, name, cross, name), _null_mask(array)


def _list_column(table: pa.Table, cross: CrossSpec) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
    """Flattened elements, lengths (0 for a null list) and the null-list mask of a list input."""
    name = cross.columns[0]
    array = _column(table, cross, name)
    if not _is_list(array.type):
        raise ValueError(
            f"cross '{cross.name}' ({cross.kind}): column '{name}' has type {array.type}; "
            f"a {cross.kind} cross needs a list column"
        )
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(array), lengths, _null_mask(array)


def _with_nulls(ids: np.ndarray, masks: list[np.ndarray | None], slot: str) -> np.ndarray:
    present = [mask for mask in masks if mask is not None]
    if present:
        ids[np.logical_or.reduce(present)] = null_id(slot)
    return ids


# ----------------------------------------------------------------------------- crosses


def apply_crosses(table: pa.Table, crosses: list[CrossSpec]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Compute declared crosses over a table of rows (a batch).

    Each input column is hashed once however many crosses use it.

    Args:
        table: the rows; weak_semantic crosses read a precomputed column named after the
            cross (see ``weak_semantic_keys``).
        crosses: the crosses, in output order.

    Returns:
        cross name -> ``(ids, lengths)``, both int64: one id per row (lengths all 1), or for
        ``elements`` the list elements row after row with the lists' lengths.

    Example:
        >>> table = pa.table({"category": [1, 1, 2], "price": [5.0, 7.0, 5.0]})
        >>> cross = CrossSpec("category_x_price", "derivation", ["category", "price"], buckets={"price": [6.0]})
        >>> ids, lengths = apply_crosses(table, [cross])["category_x_price"]
        >>> len(set(ids.tolist())), lengths.tolist()
        (3, [1, 1, 1])
    """
    num_rows = table.num_rows
    ones = np.ones(num_rows, dtype=np.int64)
    single_cache: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}
    list_cache: dict[str, tuple[pa.Array, np.ndarray, np.ndarray | None]] = {}
    element_cache: dict[str, np.ndarray] = {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for cross in crosses:
        if cross.name in out:
            raise ValueError(f"cross '{cross.name}' is declared twice")
        if cross.kind in TUPLE_KINDS:
            ids_list, masks = [], []
            for name in cross.columns:
                key = (name, tuple(cross.buckets.get(name, ())))
                if key not in single_cache:
                    single_cache[key] = _single_column_ids(table, cross, name)
                ids, mask = single_cache[key]
                ids_list.append(ids)
                masks.append(mask)
            out[cross.name] = (_with_nulls(fold_ids(cross.name, ids_list), masks, cross.name), ones)
        elif cross.kind in LIST_KINDS:
            name = cross.columns[0]
            if name not in list_cache:
                list_cache[name] = _list_column(table, cross)
            elements, lengths, null_lists = list_cache[name]
            if cross.kind == "elements":
                out[cross.name] = (_hash(elements, cross.name, cross, name), lengths)
                continue
            if name not in element_cache:
                element_cache[name] = _hash(elements, name, cross, name)
            ids = fold_lists(cross.name, element_cache[name], lengths, ordered=cross.kind == "permutation")
            out[cross.name] = (_with_nulls(ids, [null_lists], cross.name), ones)
        else:  # weak_semantic: precomputed over sorted events, carried as a column of ids
            if cross.name not in table.column_names:
                raise ValueError(
                    f"cross '{cross.name}' (weak_semantic) needs each user's history, not one batch: compute it "
                    f"with weak_semantic_keys on the events table sorted by ({cross.user_column}, "
                    f"{cross.time_column}) and store the ids as a column '{cross.name}' "
                    f"(columns: {sorted(table.column_names)})"
                )
            array = _column(table, cross, cross.name)
            if not pa.types.is_integer(array.type):
                raise ValueError(
                    f"cross '{cross.name}' (weak_semantic): column '{cross.name}' should hold int64 ids from "
                    f"weak_semantic_keys, got {array.type}"
                )
            ids = pc.fill_null(array, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            out[cross.name] = (_with_nulls(ids, [_null_mask(array)], cross.name), ones)
    return out


# ----------------------------------------------------------------------------- weak semantic


def _user_keys(array: pa.Array, cross: CrossSpec) -> np.ndarray:
    if array.null_count:
        raise ValueError(f"cross '{cross.name}' (weak_semantic): column '{cross.user_column}' has nulls")
    if pa.types.is_integer(array.type):
        return array.to_numpy(zero_copy_only=False).astype(np.int64)
    return _hash(array, cross.user_column, cross, cross.user_column)


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
        ``apply_crosses`` (and so ``ctr_batch_from_table``).

    Example:
        >>> events = pa.table({"user_id": [1, 1, 1], "timestamp": [0, 60, 120], "item_id": [7, 7, 8]})
        >>> cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=1)
        >>> ids = weak_semantic_keys(events, cross)
        >>> bool(ids[0] == null_id("fav_x_item")), bool(ids[1] == ids[2])
        (True, False)
    """
    if cross.kind != "weak_semantic":
        raise ValueError(f"cross '{cross.name}' is a {cross.kind} cross, not weak_semantic")
    history_column, candidate_column = cross.columns
    users = _user_keys(_column(table, cross, cross.user_column), cross)
    timestamps = _seconds(_column(table, cross, cross.time_column), cross)
    history_ids, history_nulls = _single_column_ids(table, cross, history_column)
    candidate_ids, candidate_nulls = _single_column_ids(table, cross, candidate_column)
    eligible = np.ones(table.num_rows, dtype=bool) if history_mask is None else np.asarray(history_mask, dtype=bool).copy()
    if eligible.shape != (table.num_rows,):
        raise ValueError(f"history_mask has shape {eligible.shape}; expected ({table.num_rows},)")
    if history_nulls is not None:
        eligible &= ~history_nulls
    window = min(int(np.floor(min(cross.window_days * SECONDS_PER_DAY, 2.0**63))), 2**63 - 1)
    mode_rows = most_frequent_in_window(users, timestamps, history_ids, window, eligible)
    no_history = mode_rows < 0
    ids = fold_ids(cross.name, [history_ids[np.where(no_history, 0, mode_rows)], candidate_ids])
    return _with_nulls(ids, [no_history, candidate_nulls], cross.name)
