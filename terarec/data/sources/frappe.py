"""Frappe, the context-aware mobile app usage log (Baltrunas et al. 2015), as a CTR table.

Two inputs:

* :func:`load_frappe` reads the **raw log** ``frappe.csv`` / ``frappe.csv.gz``: tab-separated,
  header ``user item cnt daytime weekday isweekend homework cost weather country city``,
  one line per (user, app, context) usage record, 96,203 lines in the published release.
  It applies the negative-sampling protocol of the NFM paper (He & Chua 2017), also used by
  the BARS Frappe_x1 benchmark: every log is a positive (label 1); for each log,
  ``negatives`` apps are drawn uniformly from the catalogue (every app in the file) and
  paired with the same user and context as negatives (label 0). A draw that equals a
  (user, item, context) that is a positive somewhere in the log is drawn again, so no
  negative contradicts a positive. ``cnt`` (the usage count) is not a feature under this
  protocol and is dropped. With the default ``negatives=2`` the release gives
  96,203 x 3 = 288,609 rows; each log's row is followed by its negatives.
* :func:`load_frappe_splits` reads **prepared splits**, such as ``../shared/benchmarks/
  frappe-ctr``: ``train.csv.gz``, ``valid.csv.gz``, ``test.csv.gz`` (or uncompressed ``.csv``),
  comma-separated with header ``label,user,item,daytime,weekday,isweekend,homework,cost,
  weather,country,city``, into one table with an int8 ``split`` column (0 train, 1 valid, 2 test).

Output: kind ``ctr`` with ``label`` (float32, 0/1), ``user``, ``item`` (int64), ``daytime``,
``weekday``, ``isweekend``, ``homework``, ``cost``, ``weather``, ``country`` (string) and
``city`` (int64); all ten features are categorical (``sparse``), ``labels=["label"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.errors import BadLineCounter, BadLinePolicy, DataError
from terarec.data.schema import SPLIT, SPLIT_CODES
from terarec.data.sources.base import SourceData
from terarec.data.sources.text import no_records, numpy_of, read_delimited, require_path

LABEL = "label"
CONTEXT: tuple[str, ...] = ("daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
FEATURES: tuple[str, ...] = ("user", "item", *CONTEXT)
RAW_FILES = ("frappe.csv.gz", "frappe.csv")
SPLIT_NAMES = ("train", "valid", "test")
_FEATURE_TYPES: dict[str, pa.DataType] = {
    "user": pa.int64(),
    "item": pa.int64(),
    **{name: pa.string() for name in CONTEXT if name != "city"},
    "city": pa.int64(),
}


def load_frappe(
    path: str | Path,
    *,
    negatives: int = 2,
    seed: int = 0,
    on_bad_line: BadLinePolicy = "error",
) -> SourceData:
    """Read the raw Frappe log and sample negatives as in NFM / BARS Frappe_x1.

    Args:
        path: ``frappe.csv`` / ``frappe.csv.gz``, or the folder holding one of them.
        negatives: negatives drawn per log (2 in the protocol).
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same table.
        on_bad_line: ``"error"`` raises on the first malformed line, ``"skip"`` skips and counts.

    Returns:
        SourceData(kind="ctr") with ``(1 + negatives)`` rows per log.

    Example:
        >>> data = load_frappe("../shared/datasets/frappe/frappe.csv.gz")  # doctest: +SKIP
        >>> data.chunks[0].num_rows  # doctest: +SKIP
        288609
    """
    if negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {negatives}")
    path = require_path(path, f"the raw Frappe log ({' or '.join(RAW_FILES)})")
    if path.is_dir():
        found = [path / name for name in RAW_FILES if (path / name).is_file()]
        if not found:
            raise DataError(f"no raw Frappe log here: looked for {list(RAW_FILES)}", path=path)
        path = found[0]
    counter = BadLineCounter(on_bad_line, path)
    table, problems = read_delimited(
        path, counter=counter, types=_FEATURE_TYPES, header=True, delimiter="\t", required=FEATURES
    )
    logs = problems.apply(table)
    if logs.num_rows == 0:
        raise no_records("logs", counter)
    result = sample_negatives(logs, negatives=negatives, seed=seed, path=path)
    return SourceData(
        name="frappe",
        source="frappe",
        kind="ctr",
        chunks=[result],
        sparse=list(FEATURES),
        labels=[LABEL],
        bad_lines=[counter],
    )


def sample_negatives(logs: pa.Table, *, negatives: int, seed: int, path: Path | None = None) -> pa.Table:
    """Each log as a positive followed by ``negatives`` sampled negatives (see the module docstring)."""
    n = logs.num_rows
    items = numpy_of(logs.column("item"))
    catalogue = np.unique(items)
    num_items = catalogue.size
    # (user, context) -> one integer group per distinct combination.
    codes = [pc.dictionary_encode(logs.column(name)).combine_chunks().indices for name in ("user", *CONTEXT)]
    keys = np.stack([code.to_numpy(zero_copy_only=False).astype(np.int64) for code in codes], axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1).astype(np.int64)
    positives = np.unique(group * num_items + np.searchsorted(catalogue, items))
    if negatives:
        per_group = np.bincount(positives // num_items, minlength=int(group.max()) + 1)
        saturated = np.flatnonzero(per_group[group] >= num_items)
        if saturated.size:
            raise DataError(
                f"cannot sample negatives: in log row {int(saturated[0])} the user has used every one of "
                f"the {num_items} apps in this context",
                path=path,
            )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_items, size=(n, negatives))
    owner = np.repeat(group, negatives).reshape(n, negatives) * num_items
    while True:
        keys_drawn = owner + draws
        where = np.minimum(np.searchsorted(positives, keys_drawn), positives.size - 1)
        clash = positives[where] == keys_drawn
        if not clash.any():
            break
        draws[clash] = rng.integers(0, num_items, size=int(clash.sum()))
    per_log = 1 + negatives
    rows = np.repeat(np.arange(n, dtype=np.int64), per_log)
    item_matrix = np.empty((n, per_log), dtype=np.int64)
    item_matrix[:, 0] = items
    item_matrix[:, 1:] = catalogue[draws]
    labels = np.zeros((n, per_log), dtype=np.float32)
    labels[:, 0] = 1.0
    columns = {LABEL: pa.array(labels.reshape(-1))}
    for name in FEATURES:
        if name == "item":
            columns[name] = pa.array(item_matrix.reshape(-1), pa.int64())
        else:
            columns[name] = logs.column(name).take(pa.array(rows))
    return pa.table(columns)


def load_frappe_splits(folder: str | Path, *, on_bad_line: BadLinePolicy = "error") -> SourceData:
    """Read prepared train / valid / test files into one ctr table with a ``split`` column.

    Args:
        folder: holds ``train.csv.gz``, ``valid.csv.gz`` and ``test.csv.gz`` (or ``.csv``).
        on_bad_line: ``"error"`` raises on the first malformed line, ``"skip"`` skips and counts.

    Returns:
        SourceData(kind="ctr", has_split=True), rows in the order train, valid, test.
    """
    folder = require_path(folder, "a folder with train/valid/test .csv.gz files")
    if not folder.is_dir():
        raise DataError("expected a folder holding train.csv.gz, valid.csv.gz and test.csv.gz", path=folder)
    files = {}
    for split in SPLIT_NAMES:
        looked_for = [f"{split}.csv.gz", f"{split}.csv"]
        found = [folder / name for name in looked_for if (folder / name).is_file()]
        if not found:
            raise DataError(f"missing the {split} split: looked for {looked_for}", path=folder)
        files[split] = found[0]
    tables, counters = [], []
    for split, path in files.items():
        counter = BadLineCounter(on_bad_line, path)
        counters.append(counter)
        types = {LABEL: pa.float32(), **_FEATURE_TYPES}
        table, problems = read_delimited(
            path, counter=counter, types=types, header=True, delimiter=",", quoting=True, required=list(types)
        )
        label = numpy_of(table.column(LABEL), fill=0.0)
        problems.add_mask(
            (label != 0) & (label != 1), lambda row: f"labels must be 0 or 1, got {label[row].item()!r}", LABEL
        )
        table = problems.apply(table)
        if table.num_rows == 0:
            raise no_records("records", counter)
        code = np.full(table.num_rows, SPLIT_CODES[split], dtype=np.int8)
        tables.append(table.append_column(SPLIT, pa.array(code, pa.int8())))
    result = pa.concat_tables(tables)
    return SourceData(
        name=folder.resolve().name,
        source="frappe",
        kind="ctr",
        chunks=[result],
        sparse=list(FEATURES),
        labels=[LABEL],
        has_split=True,
        bad_lines=counters,
    )
