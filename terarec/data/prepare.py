"""Write a source's canonical table to a prepared dataset folder: Parquet parts, split column, dataset.yaml.

The folder is built under a temporary name and renamed into place at the end, so a run that
fails part way leaves no half-written dataset behind. Events are stored sorted by
(user_id, timestamp) with every part file holding whole users; a source that already yields
them so (``sorted_by_user``) is streamed chunk by chunk, any other is sorted in memory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from terarec.data import schema, splits
from terarec.data.derive import UNIFIED_TABLE, Derivations
from terarec.data.errors import DataError
from terarec.data.schema import DatasetMeta
from terarec.data.sources.base import SourceData
from terarec.features.vocabulary import DistinctIds
from terarec.data.splits import SplitConfig

ROWS_PER_PART = 1_000_000
ROWS_PER_ROW_GROUP = 128 * 1024


def _sorted_events(data: SourceData) -> Iterator[pa.Table]:
    """Yield events tables of whole users sorted by (user_id, timestamp), about ROWS_PER_PART each."""
    if data.sorted_by_user:
        last_user = None
        for chunk in data.chunks:
            chunk = schema.check_events_table(chunk, path=data.name)
            if chunk.num_rows == 0:
                continue
            users = chunk.column(schema.USER_ID).to_numpy()
            if last_user is not None and users[0] <= last_user:
                raise DataError(
                    "source claims chunks sorted by user, but a user continues across chunks",
                    path=data.name,
                    field=schema.USER_ID,
                )
            last_user = users[-1]
            yield chunk
        return
    tables = [t for t in data.chunks if t.num_rows]
    if not tables:
        raise DataError("the source produced no rows", path=data.name)
    table = schema.check_events_table(pa.concat_tables(tables, promote_options="permissive"), path=data.name)
    # Stable sort: events with equal timestamps keep the source's order.
    table = table.take(
        pc.sort_indices(table, sort_keys=[(schema.USER_ID, "ascending"), (schema.TIMESTAMP, "ascending")])
    )
    users = table.column(schema.USER_ID).to_numpy()
    start = 0
    while start < table.num_rows:
        end = min(start + ROWS_PER_PART, table.num_rows)
        if end < table.num_rows:
            # Move the cut forward to the next user boundary so a user never spans two parts.
            end = int(np.searchsorted(users, users[end - 1], side="right"))
        yield table.slice(start, end - start)
        start = end


def _ctr_chunks(data: SourceData) -> Iterator[pa.Table]:
    empty = True
    for chunk in data.chunks:
        if chunk.num_rows:
            empty = False
            yield chunk
    if empty:
        raise DataError("the source produced no rows", path=data.name)


def _split_codes(chunk: pa.Table, split: SplitConfig, first_row: int, kind: str, name: str) -> np.ndarray:
    if split.method == "leave_one_out":
        if kind != "events":
            raise DataError(
                "leave_one_out needs an events table (rows by user and time); use random or time",
                path=name,
            )
        return splits.leave_one_out(chunk.column(schema.USER_ID).to_numpy())
    if split.method == "random":
        return splits.random_split(
            chunk.num_rows, split.valid_fraction, split.test_fraction, split.seed, first_row
        )
    if split.method == "time":
        return splits.time_split(chunk.column(schema.TIMESTAMP).to_numpy(), split.cutoffs)
    raise AssertionError(split.method)


def _time_cutoffs(folder: Path, parts: list[str], split: SplitConfig) -> list[int]:
    timestamps = np.concatenate(
        [pq.read_table(folder / part, columns=[schema.TIMESTAMP]).column(0).to_numpy() for part in parts]
    )
    return splits.time_cutoffs(timestamps, split.valid_fraction, split.test_fraction)


MARKER_TEXT = (
    "This folder is a dataset written by terarec (`terarec data prepare` / `terarec data synth`).\n"
    "`--overwrite` replaces a folder only when it holds this file and nothing but dataset files.\n"
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_dataset_file(name: str) -> bool:
    return name in (schema.DATASET_FILE, schema.DATASET_MARKER) or name.endswith(".parquet")


def check_replaceable(folder: str | Path) -> None:
    """Raise FileExistsError unless ``folder`` may be replaced by a new dataset.

    A folder may be replaced when it is empty, or when terarec wrote it (it holds the
    ``.terarec-dataset`` marker, or, from before the marker, a ``dataset.yaml``) and holds
    nothing but dataset files (``dataset.yaml``, the marker, ``*.parquet``). Anything else,
    a file or a folder of the user's, is refused with the reason, so ``--overwrite`` never
    deletes data terarec did not write.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileExistsError(f"refusing to overwrite {folder}: it is a file, not a dataset folder")
    entries = sorted(entry.name for entry in folder.iterdir())
    if not entries:
        return
    if schema.DATASET_MARKER not in entries and schema.DATASET_FILE not in entries:
        raise FileExistsError(
            f"refusing to overwrite {folder}: it is not a dataset terarec wrote (no {schema.DATASET_MARKER} "
            f"marker; it holds {entries[:5]}{' ...' if len(entries) > 5 else ''}); choose another --out "
            "or delete it yourself"
        )
    foreign = [name for name in entries if not (_is_dataset_file(name) and (folder / name).is_file())]
    if foreign:
        raise FileExistsError(
            f"refusing to overwrite {folder}: it holds files terarec did not write {foreign[:5]}; "
            "move them away or choose another --out"
        )


def write_dataset(
    data: SourceData,
    out_dir: str | Path,
    split: SplitConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    derive: Derivations | None = None,
) -> DatasetMeta:
    """Write ``data`` to ``out_dir`` as a prepared dataset and return its metadata.

    Args:
        data: what a source's ``load_*`` returned.
        out_dir: the dataset folder to create.
        split: how to assign the split column; defaults to leave-one-out for events and a
            seeded random 80/10/10 split for CTR rows; a source with its own split keeps it.
        overwrite: replace an existing folder, only one that is empty or that terarec wrote
            (see :func:`check_replaceable`); otherwise that is an error.
        progress: show a progress bar.
        derive: columns and series to derive from an events table (``terarec.data.derive``).

    Example:
        >>> import tempfile
        >>> from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     meta = write_dataset(load_synthetic(SyntheticConfig(num_events=1000)), f"{folder}/syn")
        >>> meta.kind, meta.num_rows
        ('events', 1000)
    """
    out_dir = Path(out_dir)
    if data.kind not in schema.TABLE_KINDS:
        raise ValueError(f"unknown table kind {data.kind!r}; expected one of {schema.TABLE_KINDS}")
    if split is None:
        split = SplitConfig(method="given" if data.has_split else ("leave_one_out" if data.kind == "events" else "random"))
    else:
        # A copy: the time split fills in cut-offs, which must not leak into the caller's config.
        split = dataclasses.replace(split, cutoffs=list(split.cutoffs))
    if split.method == "given" and not data.has_split:
        raise DataError("split method 'given' but this source has no split of its own", path=data.name)
    if data.has_split and split.method != "given":
        raise DataError(
            f"this source comes with its own split; use split method 'given', not {split.method!r}",
            path=data.name,
        )
    if derive and data.kind != "events":
        raise DataError("history / weak_semantic / unified need an events table (rows by user and time)",
                        path=data.name)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    if out_dir.exists():
        check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name of our own: a folder that happens to be called "<out>.tmp" is never touched.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))

    chunks: Iterable[pa.Table] = _sorted_events(data) if data.kind == "events" else _ctr_chunks(data)
    needs_second_pass = split.method == "time" and not split.cutoffs
    users, items = DistinctIds(), DistinctIds()
    parts: list[str] = []
    columns: dict[str, str] = {}
    num_rows = 0
    bar = tqdm(desc=f"prepare {data.name}", unit=" rows", unit_scale=True, disable=not progress)
    try:
        for chunk in chunks:
            schema.check_finite(chunk, [*data.labels, *data.dense], data.name)
            if derive:
                chunk = derive.add_columns(chunk, data.name)
            if split.method not in ("given",) and not needs_second_pass:
                codes = _split_codes(chunk, split, num_rows, data.kind, data.name)
                chunk = chunk.append_column(schema.SPLIT, pa.array(codes, type=pa.int8()))
            elif split.method == "given" and schema.SPLIT not in chunk.column_names:
                raise DataError("source said it has a split, but a chunk has no split column", path=data.name)
            if schema.USER_ID in chunk.column_names:
                users.update(chunk.column(schema.USER_ID).to_numpy(zero_copy_only=False))
            if schema.ITEM_ID in chunk.column_names:
                items.update(chunk.column(schema.ITEM_ID).to_numpy(zero_copy_only=False))
            for start in range(0, chunk.num_rows, ROWS_PER_PART) if data.kind == "ctr" else [0]:
                piece = chunk.slice(start, ROWS_PER_PART) if data.kind == "ctr" else chunk
                part = f"part-{len(parts):05d}.parquet"
                pq.write_table(piece, tmp_dir / part, row_group_size=ROWS_PER_ROW_GROUP)
                parts.append(part)
            columns.update({f.name: str(f.type) for f in chunk.schema})
            num_rows += chunk.num_rows
            bar.update(chunk.num_rows)
        bar.close()
        if needs_second_pass:
            if data.kind == "ctr" and schema.TIMESTAMP not in columns:
                raise DataError("a time split needs a timestamp column", path=data.name)
            split.cutoffs = _time_cutoffs(tmp_dir, parts, split)
            first_row = 0
            for part in parts:
                table = pq.read_table(tmp_dir / part)
                codes = _split_codes(table, split, first_row, data.kind, data.name)
                table = table.append_column(schema.SPLIT, pa.array(codes, type=pa.int8()))
                pq.write_table(table, tmp_dir / part, row_group_size=ROWS_PER_ROW_GROUP)
                first_row += table.num_rows
            columns[schema.SPLIT] = "int8"
        split_counts = np.zeros(3, dtype=np.int64)
        for part in parts:
            codes = pq.read_table(tmp_dir / part, columns=[schema.SPLIT]).column(0).to_numpy()
            split_counts += np.bincount(codes.astype(np.int64), minlength=3)[:3]
        side_tables = {}
        for side_name, side_table in data.side_tables.items():
            pq.write_table(side_table, tmp_dir / f"{side_name}.parquet")
            side_tables[side_name] = f"{side_name}.parquet"
        if derive and derive.unified:
            side_tables[UNIFIED_TABLE] = derive.write_unified(tmp_dir, parts, data.name)
        stats: dict = {}
        if len(users):
            stats["num_users"] = len(users)
        if len(items):
            stats["num_items"] = len(items)
        stats["bad_lines_skipped"] = sum(counter.skipped for counter in data.bad_lines)
        split_record = {
            "method": split.method,
            "counts": {name: int(split_counts[code]) for name, code in schema.SPLIT_CODES.items()},
        }
        if split.method in ("time", "random"):
            split_record.update(valid_fraction=split.valid_fraction, test_fraction=split.test_fraction)
        if split.method == "time":
            split_record["cutoffs"] = [int(c) for c in split.cutoffs]
        if split.method == "random":
            split_record["seed"] = split.seed
        meta = DatasetMeta(
            name=data.name,
            source=data.source,
            kind=data.kind,
            num_rows=num_rows,
            sparse=list(data.sparse) + (derive.sparse_columns(data.sparse) if derive else []),
            dense=list(data.dense),
            labels=list(data.labels),
            columns=columns,
            parts=parts,
            split=split_record,
            stats=stats,
            side_tables=side_tables,
        )
        meta.save(tmp_dir)
        (tmp_dir / schema.DATASET_MARKER).write_text(MARKER_TEXT)
        tmp_dir.chmod(0o777 & ~_umask())
        if out_dir.exists():
            check_replaceable(out_dir)  # again: the folder may have changed while we wrote
            shutil.rmtree(out_dir)
        tmp_dir.rename(out_dir)
    except BaseException:
        bar.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    for counter in data.bad_lines:
        counter.report()
    return meta
