"""Where a streaming run's chunks come from: the ``ChunkSource`` interface and a folder of Parquet partitions.

A source hands out chunks in order, each named; a run remembers the name of the last chunk it
applied and asks for the next one after it, so a resumed run continues at the right chunk. A
message-queue reader plugs in by implementing ``next_chunk``.

Example:
    >>> source = ParquetFolderSource("data/daily", columns=["user_id", "item_id", "click"])  # doctest: +SKIP
    >>> chunk = source.next_chunk(after=None)  # doctest: +SKIP
    >>> chunk.name, chunk.table.num_rows  # doctest: +SKIP
    ('day-0000.parquet', 100000)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from terarec.data.errors import DataError
from terarec.data.sources.parquet import parquet_schema, read_parquet

log = logging.getLogger("terarec")


@dataclass(frozen=True)
class Chunk:
    """One unit of the stream: its name (how a run records its position) and its rows, in time order."""

    name: str
    table: pa.Table


class ChunkSource(Protocol):
    """What a streaming run reads: chunks in a fixed order, each after the one named before it."""

    def next_chunk(self, after: str | None) -> Chunk | None:
        """The chunk that follows the one named ``after`` (None: the first), or None when the
        stream has ended (no more chunks, and none is awaited)."""
        ...


class ParquetFolderSource:
    """The ``*.parquet`` files of a folder, in name order (e.g. ``day-0000.parquet``, one per day).

    The folder is listed again for every chunk, so files that appear while the run goes are
    picked up. Names starting with ``.`` or ``_`` are skipped (files being written: write beside,
    then rename). A file that appears during the run with a name sorting before the last applied
    one arrived too late for name order: it is reported in the log and not applied.

    Args:
        folder: the folder of partitions.
        columns: the columns to read (a file without one is an error naming both).
        optional_columns: columns read when a file has them (e.g. the user column, for gAUC).
        follow: when the folder holds nothing new, wait for a new file instead of ending.
        poll_seconds: follow: seconds between listings.
        idle_seconds: follow: end after this long without a new file (0 = wait forever).
        sleep: the waiting function (tests pass a fake clock).
    """

    def __init__(self, folder: str | Path, columns: Sequence[str], follow: bool = False, poll_seconds: float = 5.0,
                 idle_seconds: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 optional_columns: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError("not a folder of Parquet partitions", path=self.folder)
        self.columns = list(columns)
        self.optional_columns = [name for name in optional_columns if name not in self.columns]
        self.follow, self.poll_seconds, self.idle_seconds, self.sleep = follow, poll_seconds, idle_seconds, sleep
        self._listed: set[str] | None = None  # the last listing (None before the first)

    def names(self) -> list[str]:
        """The partitions now in the folder, in name order."""
        return sorted(path.name for path in self.folder.glob("*.parquet")
                      if path.is_file() and not path.name.startswith((".", "_")))

    def next_chunk(self, after: str | None) -> Chunk | None:
        waited = 0.0
        while True:
            names = self.names()
            if self._listed is not None:
                for name in sorted(set(names) - self._listed):
                    if after is not None and name < after:
                        log.warning("%s: arrived after %s was applied; not applied (chunks are applied in name "
                                    "order)", self.folder / name, after)
            self._listed = set(names)
            pending = [name for name in names if after is None or name > after]
            if pending:
                path = self.folder / pending[0]
                present = parquet_schema(path).names
                columns = self.columns + [name for name in self.optional_columns if name in present]
                return Chunk(pending[0], read_parquet(path, columns))
            if not self.follow or (self.idle_seconds and waited >= self.idle_seconds):
                return None
            self.sleep(self.poll_seconds)
            waited += self.poll_seconds
