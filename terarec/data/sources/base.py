"""What every data source returns: canonical table chunks plus the roles of their columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa

from terarec.data.errors import BadLineCounter


@dataclass
class SourceData:
    """A source's output, before splitting and writing (see terarec.data.schema for the columns).

    Args:
        name: dataset name written into dataset.yaml (e.g. ``ml-100k``).
        source: source format name (``movielens``, ``frappe``, ...).
        kind: ``events`` or ``ctr``.
        chunks: canonical tables, in order. Events need not be sorted unless
            ``sorted_by_user`` says so; the writer sorts them in memory otherwise.
        sparse: categorical feature columns (int64, string, or list of either).
        dense: dense float feature columns.
        labels: label / target columns.
        sorted_by_user: chunks are sorted by (user_id, timestamp) and each holds whole users;
            the writer then streams them without a global sort (used by ``synthetic``).
        has_split: chunks already carry a ``split`` column (a published split such as
            frappe-ctr's train/valid/test files); the writer keeps it.
        side_tables: extra tables to write beside the main one (``users``, ``items``).
        bad_lines: the counter that saw malformed records, to report how many were skipped.
    """

    name: str
    source: str
    kind: str
    chunks: Iterable[pa.Table]
    sparse: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sorted_by_user: bool = False
    has_split: bool = False
    side_tables: dict[str, pa.Table] = field(default_factory=dict)
    bad_lines: list[BadLineCounter] = field(default_factory=list)
