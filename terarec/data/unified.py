"""The unified feature space: slowly changing auxiliary series merged into the main event series.

HSTU (Zhai et al. 2024, arXiv 2402.17152, section 2.1 and Figure 2) drops hand-made
features: categorical features that change slowly (demographics, followed creators or
categories) become tokens of the user's one chronological series. Such a series would
repeat the same value at every observation, so each is compressed first, keeping only the
first event of each run of unchanged values per user; the survivors are merged with the main
series (items and their actions) by time:

    aux_u = [(t_1, v_1), (t_2, v_2), ...]   ->  keep (t_k, v_k) iff k = 1 or v_k != v_{k-1}
    series_u = merge_by_time(main_u, compressed aux_u, ...)

At equal times an auxiliary event comes before the main event (the context was known when
the user acted), and auxiliary series keep the order they were given in.

Example:
    >>> main = pa.table({"user_id": [1, 1], "timestamp": [10, 30], "item_id": [7, 8]})
    >>> age = pa.table({"user_id": [1, 1, 1], "timestamp": [0, 20, 25], "age_bucket": [3, 3, 4]})
    >>> merged = merge_series(main, {"age": age})
    >>> merged.column("series").to_pylist(), merged.column("timestamp").to_pylist()
    (['age', 'main', 'age', 'main'], [0, 10, 25, 30])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data import schema
from terarec.data.errors import DataError

MAIN_SERIES = "main"
SERIES_COLUMN = "series"


def _check_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    for name in columns:
        if name not in table.column_names:
            raise DataError(f"{what} needs column '{name}' (have {table.column_names})", field=name)


def first_of_runs(
    table: pa.Table,
    value_columns: Sequence[str] | None = None,
    user_column: str = schema.USER_ID,
    time_column: str = schema.TIMESTAMP,
) -> pa.Table:
    """The events of a slowly changing series that start a run of unchanged values, per user.

    Args:
        table: one auxiliary series, rows in any order.
        value_columns: the columns whose (joint) value defines a run; default every column
            but the user and the time. Nulls equal nulls.
        user_column, time_column: who and when.

    Returns:
        The kept rows, sorted by (user, time) (stable for equal times).

    Example:
        >>> t = pa.table({"user_id": [1, 1, 1, 2], "timestamp": [1, 2, 3, 1], "city": ["a", "a", "b", "a"]})
        >>> first_of_runs(t).column("timestamp").to_pylist()
        [1, 3, 1]
    """
    if value_columns is None:
        value_columns = [c for c in table.column_names if c not in (user_column, time_column)]
    _check_columns(table, [user_column, time_column, *value_columns], "a slowly changing series")
    if not value_columns:
        raise ValueError("first_of_runs needs at least one value column")
    users = table.column(user_column).to_numpy()
    order = np.lexsort((table.column(time_column).to_numpy(), users))  # stable
    table = table.take(pa.array(order))
    users = users[order]
    keep = np.ones(table.num_rows, dtype=bool)
    if table.num_rows > 1:
        same = users[1:] == users[:-1]
        for name in value_columns:
            # Dictionary codes compare any type (strings, lists too) and give nulls one code.
            column = table.column(name)
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                # e.g. followed categories: a set, so compare sorted lists (null stays null)
                column = pa.chunked_array([pa.array([None if v is None else repr(sorted(v)) for v in column.to_pylist()],
                                                    pa.string())])
            codes = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode").indices
            codes = codes.to_numpy(zero_copy_only=False)
            same &= codes[1:] == codes[:-1]
        keep[1:] = ~same
    return table.filter(pa.array(keep))


def merge_series(
    main: pa.Table,
    auxiliary: Mapping[str, pa.Table],
    value_columns: Mapping[str, Sequence[str]] | None = None,
    user_column: str = schema.USER_ID,
    time_column: str = schema.TIMESTAMP,
) -> pa.Table:
    """Merge compressed auxiliary series into the main series, per user and in time order.

    Args:
        main: the main series (e.g. items and their actions), one row per event.
        auxiliary: series name -> its table (``user_column``, ``time_column`` and its values);
            each is compressed with ``first_of_runs`` before merging.
        value_columns: series name -> the columns that define its runs (default: all but
            user and time).
        user_column, time_column: who and when, in every table.

    Returns:
        One table sorted by (user, time), auxiliary events before main events at equal times,
        with a ``series`` column naming each row's series (``main`` or the auxiliary's name)
        and the union of every table's columns (null where a series has no such column; a
        column two series share must have one type).
    """
    if MAIN_SERIES in auxiliary:
        raise ValueError(f"'{MAIN_SERIES}' names the main series; give the auxiliary series another name")
    _check_columns(main, [user_column, time_column], "the main series")
    value_columns = dict(value_columns or {})
    tables = []
    for rank, (name, table) in enumerate(auxiliary.items()):
        kept = first_of_runs(table, value_columns.get(name), user_column, time_column)
        tables.append((rank, name, kept))
    tables.append((len(auxiliary), MAIN_SERIES, main))
    pieces, ranks = [], []
    for rank, name, table in tables:
        pieces.append(table.append_column(SERIES_COLUMN, pa.array([name] * table.num_rows, pa.string())))
        ranks.append(np.full(table.num_rows, rank, dtype=np.int64))
    merged = pa.concat_tables(pieces, promote_options="default")
    rank = np.concatenate(ranks)
    order = np.lexsort((rank, merged.column(time_column).to_numpy(), merged.column(user_column).to_numpy()))
    return merged.take(pa.array(order))
