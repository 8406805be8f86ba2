"""Amazon review data as published for sequential recommendation (ICLRec / SASRec text files).

Two formats, both whitespace-separated integer ids with no header:

* **sequence** (ICLRec, e.g. ``Beauty.txt``): one user a line, ``uid i1 i2 ...``, the items
  in time order.
* **pairs** (SASRec, e.g. ``Video.txt``): one interaction a line, ``uid iid``; each user's
  lines are in time order (a user's lines need not be adjacent).

``format="auto"`` looks at the whole file, never at one line: *pairs* when every line has two
tokens; *sequence* when lines have more and every user id starts one line only; a file that
is neither (lines of three or more tokens and users on several lines) is an error asking for
``format=pairs`` or ``format=sequence``, so one stray token never turns a pair file into
sequences of invented items.

Output: kind ``events`` with ``user_id``, ``item_id`` (int64, the file's ids as they are) and
``timestamp`` (int64). These files carry no clock, so **the timestamp is the interaction's
0-based position in its user's sequence** (0 for the first item, 1 for the next, ...); it
orders a user's history and nothing more (it is not comparable across users). Rows are
sorted by (user_id, timestamp), one chunk, so ``sorted_by_user`` is set. The dataset name is
the file stem (``Beauty``, ``Video``).

Parsing is vectorised (pyarrow splits the lines, casts the tokens); a line holding a
non-integer token is a malformed line, reported with its file, line number and token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.errors import BadLineCounter, BadLinePolicy, DataError
from terarec.data.schema import ITEM_ID, TIMESTAMP, USER_ID, check_events_table
from terarec.data.sources.base import SourceData
from terarec.data.sources.text import failing_rows, no_records, read_delimited, require_path

AmazonFormat = Literal["auto", "sequence", "pairs"]
AMAZON_FORMATS: tuple[str, ...] = ("auto", "sequence", "pairs")
_LINE = "line"


def _detect_format(tokens: pa.ListArray, counts: np.ndarray, blank: np.ndarray, path: Path, line_of) -> str:
    """pairs or sequence, from every line of the file (see the module docstring)."""
    if counts.max() <= 2:
        return "pairs"
    first_tokens = pc.list_element(pc.fill_null(tokens, pa.scalar([], tokens.type)).filter(pa.array(~blank)), 0)
    repeated = pc.count_distinct(first_tokens).as_py() != len(first_tokens)
    if not repeated:
        return "sequence"
    long_row = int(np.flatnonzero(counts > 2)[0])
    raise DataError(
        f"cannot tell the format: line {int(line_of(long_row))} has {int(counts[long_row])} tokens (a sequence "
        "'user item1 item2 ...') but user ids repeat across lines (pairs 'user item'); pass -o format=pairs "
        "or -o format=sequence",
        path=path,
    )


def load_amazon(
    path: str | Path, *, format: AmazonFormat = "auto", on_bad_line: BadLinePolicy = "error"
) -> SourceData:
    """Load an ICLRec sequence file or a SASRec pair file as an events table.

    Args:
        path: the text file (``Beauty.txt``, ``Video.txt``, ...; ``.gz`` is decompressed).
        format: ``"sequence"`` (``uid i1 i2 ...``), ``"pairs"`` (``uid iid``) or ``"auto"``.
        on_bad_line: ``"error"`` raises on the first malformed line, ``"skip"`` skips and counts.

    Returns:
        SourceData(kind="events") whose timestamp is each item's position in its user's sequence.

    Example:
        >>> data = load_amazon("../shared/datasets/amazon-beauty/Beauty.txt")  # doctest: +SKIP
        >>> data.chunks[0].num_rows  # doctest: +SKIP
        198502
    """
    if format not in AMAZON_FORMATS:
        raise ValueError(f"format must be one of {AMAZON_FORMATS}, got {format!r}")
    path = require_path(path, "an Amazon sequence (`uid i1 i2 ...`) or pair (`uid iid`) text file")
    counter = BadLineCounter(on_bad_line, path)
    # One string column per line: the unit separator never occurs in these files.
    table, problems = read_delimited(path, counter=counter, columns=[_LINE], types={_LINE: pa.string()}, delimiter="\x1f")
    # Trimmed first: Arrow's split makes an empty token of leading or trailing whitespace, and a
    # line of spaces only is blank.
    lines = pc.utf8_trim_whitespace(table.column(_LINE).combine_chunks())
    lines = pc.if_else(pc.equal(lines, ""), pa.scalar(None, pa.string()), lines)
    tokens = pc.utf8_split_whitespace(lines)
    counts = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False)
    blank = counts == 0
    if blank.all():
        raise DataError("empty file (no records)", path=path)
    if format == "auto":
        format = _detect_format(tokens, counts, blank, path, problems.line_map.lines)
    if format == "pairs":
        problems.add_mask(~blank & (counts != 2), lambda row: f"expected 2 tokens 'user item', got {counts[row]}")
    else:
        problems.add_mask(counts == 1, "a user id with no items (expected 'user item1 item2 ...')")
    problems.drop_rows(np.flatnonzero(blank))

    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    try:
        values = pc.cast(flat, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = failing_rows(flat, pa.int64())
        first_bad: dict[int, int] = {}
        for token in bad.tolist():
            first_bad.setdefault(int(parents[token]), token)
        bad_lines = np.array(sorted(first_bad), dtype=np.int64)
        problems.add_rows(bad_lines, lambda row: f"expected integer ids, got {flat[first_bad[row]].as_py()!r}")
        ok = np.ones(len(flat), dtype=bool)
        ok[bad] = False
        values = pc.cast(pc.if_else(pa.array(ok), flat, "0"), pa.int64()).to_numpy(zero_copy_only=False)

    # Apply the checks to the lines, then keep the tokens of the lines that survived.
    row_index = pa.table({"row": pa.array(np.arange(table.num_rows, dtype=np.int64))})
    kept_rows = problems.apply(row_index).column("row").to_numpy()
    keep_line = np.zeros(table.num_rows, dtype=bool)
    keep_line[kept_rows] = True
    keep_token = keep_line[parents]
    values, parents = values[keep_token], parents[keep_token]
    offsets = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(offsets)[:-1]])
    position_in_line = np.flatnonzero(keep_token) - starts[parents]
    is_user = position_in_line == 0
    line_user = np.zeros(table.num_rows, dtype=np.int64)
    line_user[parents[is_user]] = values[is_user]
    users = line_user[parents[~is_user]]
    items = values[~is_user]
    if users.size == 0:
        raise no_records("interactions", counter)

    # Position of each interaction within its user's sequence, in file order.
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    group_start = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[group_start, sorted_users.size])
    position = np.arange(sorted_users.size) - np.repeat(group_start, sizes)
    result = pa.table(
        {
            USER_ID: pa.array(sorted_users, pa.int64()),
            ITEM_ID: pa.array(items[order], pa.int64()),
            TIMESTAMP: pa.array(position, pa.int64()),
        }
    )
    result = check_events_table(result, path)
    return SourceData(
        name=path.name.split(".")[0],
        source="amazon",
        kind="events",
        chunks=[result],
        sorted_by_user=True,
        bad_lines=[counter],
    )
