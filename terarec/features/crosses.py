"""Declared feature crosses: new 64-bit ids, each cross in its own slot, computed from a table's columns.

A cross turns several raw features, or one list feature, into one new categorical feature
whose ids live in the slot named by the cross (``CrossSpec.name``): the same input values
always give the same id, and two crosses never share an id space. Everything is vectorised
over the rows of an Arrow table (numpy uint64 arithmetic, no Python loop over rows); the
result is ``(ids, lengths)`` per cross, the layout ``terarec.data.batches`` uses for a
KeyedJaggedTensor key (``ctr_batch_from_table`` appends a ``FeatureSpec``'s crosses).

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
  one batch: ``terarec data prepare -o weak_semantic=[...]`` computes it
  (``terarec.features.weak_semantic``) and stores the ids as a column named after the
  cross, which ``apply_crosses`` passes through.

Arithmetic: each input column is first hashed in its own slot (the column's name, so
these are the ids the column has as a plain feature; a bucketed column hashes its bucket
index in the slot ``"<column>:bucket"``), then the ids are folded in order, keyed by the
cross: ``h = slot_seed(name); h = splitmix64(h ^ id_k)`` for each input k
(``terarec.features.mixing.fold_ids`` / ``fold_lists``). List kinds fold
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
from terarec.features.hashing import hash_array, hash_ints, null_id
from terarec.features.mixing import fold_ids, fold_lists

CROSS_KINDS: tuple[str, ...] = ("derivation", "interaction", "permutation", "combination", "elements", "weak_semantic")
TUPLE_KINDS: tuple[str, ...] = ("derivation", "interaction")
LIST_KINDS: tuple[str, ...] = ("permutation", "combination", "elements")



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


# ----------------------------------------------------------------------------- columns


def input_column(table: pa.Table, cross: CrossSpec, name: str) -> pa.Array:
    """Column ``name`` of ``table`` as one array; an error naming the cross if it is missing."""
    if name not in table.column_names:
        raise ValueError(
            f"cross '{cross.name}' ({cross.kind}): column '{name}' is not in the table "
            f"(columns: {sorted(table.column_names)})"
        )
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def null_mask(array: pa.Array) -> np.ndarray | None:
    """A bool per row, True where null; None when the array has no nulls."""
    return pc.is_null(array).to_numpy(zero_copy_only=False) if array.null_count else None


def hash_input(array: pa.Array, slot: str, cross: CrossSpec, column: str) -> np.ndarray:
    """``hash_array`` with a type error turned into one naming the cross and the column."""
    try:
        return hash_array(array, slot)
    except TypeError as error:
        raise ValueError(f"cross '{cross.name}' ({cross.kind}): column '{column}': {error}") from error


def single_column_ids(table: pa.Table, cross: CrossSpec, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids (column slot, or the bucket slot) and null mask of one single-valued input."""
    array = input_column(table, cross, name)
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
    return hash_input(array, name, cross, name), null_mask(array)


def _list_column(table: pa.Table, cross: CrossSpec) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
    """Flattened elements, lengths (0 for a null list) and the null-list mask of a list input."""
    name = cross.columns[0]
    array = input_column(table, cross, name)
    if not _is_list(array.type):
        raise ValueError(
            f"cross '{cross.name}' ({cross.kind}): column '{name}' has type {array.type}; "
            f"a {cross.kind} cross needs a list column"
        )
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(array), lengths, null_mask(array)


def with_null_ids(ids: np.ndarray, masks: list[np.ndarray | None], slot: str) -> np.ndarray:
    """``ids`` with the slot's null id wherever any mask is True (in place)."""
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
                    single_cache[key] = single_column_ids(table, cross, name)
                ids, mask = single_cache[key]
                ids_list.append(ids)
                masks.append(mask)
            out[cross.name] = (with_null_ids(fold_ids(cross.name, ids_list), masks, cross.name), ones)
        elif cross.kind in LIST_KINDS:
            name = cross.columns[0]
            if name not in list_cache:
                list_cache[name] = _list_column(table, cross)
            elements, lengths, null_lists = list_cache[name]
            if cross.kind == "elements":
                out[cross.name] = (hash_input(elements, cross.name, cross, name), lengths)
                continue
            if name not in element_cache:
                element_cache[name] = hash_input(elements, name, cross, name)
            ids = fold_lists(cross.name, element_cache[name], lengths, ordered=cross.kind == "permutation")
            out[cross.name] = (with_null_ids(ids, [null_lists], cross.name), ones)
        else:  # weak_semantic: precomputed over sorted events, carried as a column of ids
            if cross.name not in table.column_names:
                raise ValueError(
                    f"cross '{cross.name}' (weak_semantic) needs each user's history, not one batch: prepare the "
                    f"dataset with -o weak_semantic=[...] (or compute weak_semantic_keys on the events sorted by "
                    f"({cross.user_column}, {cross.time_column})) so that it holds a column '{cross.name}' "
                    f"(columns: {sorted(table.column_names)})"
                )
            array = input_column(table, cross, cross.name)
            if not pa.types.is_integer(array.type):
                raise ValueError(
                    f"cross '{cross.name}' (weak_semantic): column '{cross.name}' should hold int64 ids from "
                    f"weak_semantic_keys, got {array.type}"
                )
            ids = pc.fill_null(array, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            out[cross.name] = (with_null_ids(ids, [null_mask(array)], cross.name), ones)
    return out
