"""Columns and series derived from any events table at prepare time: histories, weak-semantic crosses, unified series.

``terarec data prepare SOURCE PATH -o KEY=VALUE`` options that work for every events source
(the other ``-o`` options go to the source's loader):

* ``history=[item_id, category]`` (with ``history_length=N``, default 50): list columns
  ``hist_<column>`` holding the values of the user's N most recent *earlier* events (strictly
  smaller timestamp; ``terarec.data.history``), for DIN / DIEN / SIM and HSTU ranking.
* ``weak_semantic=[{name: fav_cat_x_item, columns: [category, item_id], window_days: 30}]``:
  one int64 id column per cross (``terarec.features.weak_semantic``): the user's most frequent
  ``columns[0]`` among their earlier events of the last ``window_days``, crossed with the row's
  ``columns[1]``. ``history_where: click`` counts only earlier rows where that column is > 0.
* ``unified=[age_bucket, city]``: the unified feature space of HSTU (``terarec.data.unified``):
  each listed column becomes an auxiliary series, compressed to the first event of each run of
  unchanged values per user, and merged by time with the main series (the events without those
  columns) into the side table ``unified.parquet`` (column ``series`` names each row's series).

Histories and weak-semantic ids are computed chunk by chunk: every chunk the writer sees holds
whole users sorted by (user, timestamp), so a user's history is never cut. The derived
categorical columns (``hist_X`` of a categorical ``X``, the crosses) join the dataset's sparse
features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from terarec.data import schema
from terarec.data.errors import DataError
from terarec.data.history import add_history, history_column
from terarec.data.unified import merge_series

OPTION_KEYS = ("history", "history_length", "weak_semantic", "unified")
UNIFIED_TABLE = "unified"


def _names(value: Any, option: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(name, str) and name for name in value):
        raise DataError(f"-o {option}=...: expected a list of column names, e.g. [item_id, category], got {value!r}",
                        field=option)
    return list(dict.fromkeys(value))


@dataclass
class Derivations:
    """What to derive from an events table (see the module docstring); empty = nothing.

    Args:
        history: columns whose earlier values become ``hist_<column>`` lists.
        history_length: the most recent earlier events a history keeps.
        weak_semantic: weak-semantic crosses (``CrossSpec`` of kind ``weak_semantic``).
        history_where: cross name -> a column; only earlier rows where it is > 0 count.
        unified: slowly changing columns merged into the series of ``unified.parquet``.
    """

    history: list[str] = field(default_factory=list)
    history_length: int = 50
    weak_semantic: list = field(default_factory=list)
    history_where: dict[str, str] = field(default_factory=dict)
    unified: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.history or self.weak_semantic or self.unified)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Derivations:
        """Take this module's keys out of ``-o`` options (the rest stay for the source's loader).

        ``history_length`` is taken only with ``history`` (the movielens loader has its own).

        Example:
            >>> options = {"history": ["item_id"], "history_length": 3, "sparse": ["genre"]}
            >>> Derivations.from_options(options).history_length, options
            (3, {'sparse': ['genre']})
        """
        from terarec.features.crosses import crosses_from_config

        derive = cls()
        if "history" in options:
            derive.history = _names(options.pop("history"), "history")
            if "history_length" in options:
                length = options.pop("history_length")
                if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                    raise DataError(f"-o history_length=...: expected a whole number >= 1, got {length!r}",
                                    field="history_length")
                derive.history_length = length
        if "weak_semantic" in options:
            items = options.pop("weak_semantic")
            items = [items] if isinstance(items, dict) else items
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise DataError("-o weak_semantic=...: expected a list of mappings, e.g. "
                                "[{name: fav_x_item, columns: [category, item_id], window_days: 30}]",
                                field="weak_semantic")
            specs = []
            for item in items:
                item = {"kind": "weak_semantic", **item}
                if item["kind"] != "weak_semantic":
                    raise DataError(f"-o weak_semantic=...: kind must be weak_semantic, got {item['kind']!r}",
                                    field="weak_semantic")
                where = item.pop("history_where", None)
                specs.append(item)
                if where is not None:
                    derive.history_where[item.get("name", "")] = str(where)
            derive.weak_semantic = crosses_from_config(specs, "-o weak_semantic")
        if "unified" in options:
            derive.unified = _names(options.pop("unified"), "unified")
        return derive

    def sparse_columns(self, sparse: list[str]) -> list[str]:
        """The derived categorical columns: ``hist_X`` of categorical (or id) ``X``, the crosses."""
        categorical = {*sparse, schema.USER_ID, schema.ITEM_ID}
        return [history_column(name) for name in self.history if name in categorical] + [
            cross.name for cross in self.weak_semantic
        ]

    def add_columns(self, events: pa.Table, where: str) -> pa.Table:
        """``events`` (whole users, sorted by user and time) with the history and cross columns."""
        from terarec.features.weak_semantic import weak_semantic_keys

        for name in [*(history_column(n) for n in self.history), *(c.name for c in self.weak_semantic)]:
            if name in events.column_names:
                raise DataError(f"cannot derive column '{name}': the source already has one", path=where, field=name)
        try:
            for cross in self.weak_semantic:
                mask = None
                if cross.name in self.history_where:
                    column = self.history_where[cross.name]
                    if column not in events.column_names:
                        raise DataError(f"weak_semantic '{cross.name}': history_where column '{column}' is not in "
                                        f"the table (columns: {events.column_names})", path=where, field=column)
                    values = pc.fill_null(events.column(column), 0).to_numpy(zero_copy_only=False)
                    mask = np.asarray(values, dtype=np.float64) > 0
                ids = weak_semantic_keys(events, cross, history_mask=mask)
                events = events.append_column(cross.name, pa.array(ids, pa.int64()))
            if self.history:
                events = add_history(events, self.history, self.history_length)
        except DataError as error:
            if error.path is not None:
                raise
            raise DataError(error.reason, path=where, field=error.field) from error
        except ValueError as error:
            raise DataError(str(error), path=where) from error
        return events

    def write_unified(self, folder: Path, parts: list[str], where: str) -> str:
        """Write the merged series of every part to ``unified.parquet`` in ``folder``; return its file name."""
        file_name = f"{UNIFIED_TABLE}.parquet"
        writer = None
        try:
            for part in parts:
                events = pq.read_table(folder / part)
                missing = [name for name in self.unified if name not in events.column_names]
                if missing:
                    raise DataError(f"-o unified=...: no column {missing} (columns: {events.column_names})",
                                    path=where, field=missing[0])
                keys = [schema.USER_ID, schema.TIMESTAMP]
                auxiliary = {name: events.select([*keys, name]) for name in self.unified}
                merged = merge_series(events.drop_columns(self.unified), auxiliary)
                if writer is None:
                    writer = pq.ParquetWriter(folder / file_name, merged.schema)
                writer.write_table(merged.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
        return file_name
