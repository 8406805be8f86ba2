"""Ways to break an input, each with the row counts a run may then give.

A mutation returns the new bytes of the file it changed and an ``Expect``: the row counts
acceptable for a run that skipped nothing (``clean``) and for one that skipped malformed
records (``skipped``). An empty set means the run must fail with a clear error.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.fuzz.bases import Base, Target, rows_of_text

LONG_BYTES = 3_000_000  # beyond pyarrow.csv's 1 MiB block


@dataclass
class Expect:
    """Acceptable outcomes of one case besides a clear error.

    Args:
        clean: row counts a successful run that skipped nothing may give.
        skipped: row counts a successful run that skipped records may give.
        needs_warning: a successful run must print a warning (a file cut mid-line).
    """

    clean: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)
    needs_warning: bool = False


# ----------------------------------------------------------------------------- text files


@dataclass
class TextFile:
    """A target file split into lines, with the helpers mutations share."""

    target: Target
    text: str
    total: int  # rows of the whole base

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")[:-1]  # the bases end with a newline

    def data_lines(self) -> list[int]:
        first = 1 if self.target.header else 0
        return [i for i in range(first, len(self.lines)) if self.lines[i].strip()]

    def rows(self, index: int) -> int:
        return self.target.rows_per_line(self.lines[index])

    def join(self, lines: list[str]) -> bytes:
        return ("\n".join(lines) + "\n").encode()

    def fields(self, index: int) -> list[str]:
        return self.lines[index].split(self.target.delimiter)

    def with_field(self, index: int, which: int, value: str) -> bytes:
        fields = self.fields(index)
        fields[which % len(fields)] = value
        lines = list(self.lines)
        lines[index] = self.target.delimiter.join(fields)
        return self.join(lines)

    def value_change(self, index: int, new: bytes | None = None) -> Expect:
        """A line whose value changed: kept (as many rows as the new line gives), or skipped."""
        return Expect({self.total + self.delta(new)}, {self.total - self.rows(index)})

    def delta(self, new: bytes | None) -> int:
        """Rows the changed file gives beyond the original (a whitespace format counts tokens)."""
        if new is None:
            return 0
        try:
            text = new.decode()
        except UnicodeDecodeError:
            return 0
        return rows_of_text(text, self.target) - rows_of_text(self.text, self.target)


TextMutation = Callable[[TextFile, random.Random], tuple[bytes, Expect]]


def _pick(file: TextFile, rng: random.Random) -> int:
    return rng.choice(file.data_lines())


def value_mutation(which: str, value: str | Callable[[str], str]) -> TextMutation:
    def mutate(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
        index = _pick(file, rng)
        position = file.target.id_field if which == "id" else file.target.number_field
        old = file.fields(index)[position % len(file.fields(index))]
        new = value(old) if callable(value) else value
        data = file.with_field(index, position, new)
        return data, file.value_change(index, data)

    return mutate


def truncate_mid_line(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    index = _pick(file, rng)
    before = "\n".join(file.lines[:index]) + ("\n" if index else "")
    line = file.lines[index]
    cut = rng.randint(1, max(1, len(line) - 1))
    rows_before = file.total - sum(file.rows(i) for i in file.data_lines() if i >= index)
    possible = set(range(rows_before, rows_before + file.rows(index) + 1))
    return (before + line[:cut]).encode(), Expect(possible, {rows_before}, needs_warning=True)


def truncate_at_line_end(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    index = _pick(file, rng)
    kept = file.total - sum(file.rows(i) for i in file.data_lines() if i > index)
    return file.join(file.lines[: index + 1]), Expect({kept})


def drop_field(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    index = _pick(file, rng)
    lines = list(file.lines)
    lines[index] = file.target.delimiter.join(file.fields(index)[:-1])
    after = rows_of_text(file.join(lines).decode(), file.target) - rows_of_text(file.text, file.target)
    return file.join(lines), Expect({file.total + after}, {file.total - file.rows(index)})


def extra_field(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    index = _pick(file, rng)
    lines = list(file.lines)
    lines[index] = lines[index] + file.target.delimiter + "7"
    after = rows_of_text(file.join(lines).decode(), file.target) - rows_of_text(file.text, file.target)
    return file.join(lines), Expect({file.total + after}, {file.total - file.rows(index)})


def bad_bytes(data: bytes) -> Callable[[TextFile, random.Random], tuple[bytes, Expect]]:
    def mutate(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
        index = _pick(file, rng)
        lines = [line.encode() for line in file.lines]
        cut = rng.randint(0, len(lines[index]))
        lines[index] = lines[index][:cut] + data + lines[index][cut:]
        return b"\n".join(lines) + b"\n", file.value_change(index)

    return mutate


def random_bytes_in_line(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    junk = bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(12))
    return bad_bytes(junk)(file, rng)


def latin1_in_line(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return bad_bytes("é".encode("latin-1"))(file, rng)


def long_line(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return bad_bytes(b"x" * LONG_BYTES)(file, rng)


def long_valid_sequence(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    """A user with a few hundred thousand items (only where a line may be that long)."""
    index = _pick(file, rng)
    lines = list(file.lines)
    added = 400_000
    lines[index] = lines[index] + " " + " ".join(str(1 + item % 1000) for item in range(added))
    return file.join(lines), Expect({file.total + added}, {file.total - file.rows(index)})


def bom(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return b"\xef\xbb\xbf" + file.text.encode(), Expect({file.total}, {file.total - file.rows(file.data_lines()[0])})


def utf16(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return file.text.encode("utf-16"), Expect()


def crlf(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return file.text.replace("\n", "\r\n").encode(), Expect({file.total})


def cr_only(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return file.text.replace("\n", "\r").encode(), Expect({file.total})


def binary_file(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    return bytes(rng.getrandbits(8) for _ in range(4000)), Expect()


def empty_file(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    side_file = file.target.rows_per_line(file.lines[-1]) == 0
    return b"", Expect({file.total} if side_file else set())


def header_only(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    side_file = file.target.rows_per_line(file.lines[-1]) == 0
    kept = file.lines[:1] if file.target.header else [" ", ""]
    return file.join(kept), Expect({file.total} if side_file else set())


def duplicate_header(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    """The first column named twice, every line one field longer."""
    delimiter = file.target.delimiter
    lines = list(file.lines)
    start = 0
    if file.target.header:
        lines[0] = lines[0] + delimiter + lines[0].split(delimiter)[0]
        start = 1
    for i in range(start, len(lines)):
        lines[i] = lines[i] + delimiter + "1"
    data = file.join(lines)
    return data, Expect({file.total + file.delta(data)}, set(range(file.total + 1)))


def blank_lines(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    lines = list(file.lines)
    for _ in range(3):
        lines.insert(rng.randint(1 if file.target.header else 0, len(lines)), rng.choice(["", "  ", "\t"]))
    return file.join(lines), Expect({file.total})


def duplicate_line(file: TextFile, rng: random.Random) -> tuple[bytes, Expect]:
    index = _pick(file, rng)
    lines = list(file.lines)
    lines.insert(index, lines[index])
    return file.join(lines), Expect({file.total + file.rows(index)}, {file.total})


TEXT_MUTATIONS: dict[str, TextMutation] = {
    "truncate-mid-line": truncate_mid_line,
    "truncate-at-line-end": truncate_at_line_end,
    "drop-field": drop_field,
    "extra-field": extra_field,
    "wrong-type-id": value_mutation("id", "abc"),
    "wrong-type-number": value_mutation("number", "1.5e"),
    "nan": value_mutation("number", "nan"),
    "inf": value_mutation("number", "inf"),
    "minus-inf": value_mutation("number", "-inf"),
    "overflow-number": value_mutation("number", "1e400"),
    "negative-id": value_mutation("id", "-3"),
    "huge-id": value_mutation("id", str(2**63)),
    "huger-id": value_mutation("id", "-" + "9" * 25),
    "empty-field": value_mutation("number", ""),
    "spaces-around-id": value_mutation("id", lambda old: f" {old} "),
    "unclosed-quote": value_mutation("id", lambda old: '"' + old),
    "quote-inside": value_mutation("number", lambda old: old + '"x'),
    "quoted-value": value_mutation("id", lambda old: f'"{old}"'),
    "latin-1": latin1_in_line,
    "binary-bytes": random_bytes_in_line,
    "nul-byte": bad_bytes(b"\x00"),
    "bom": bom,
    "utf-16": utf16,
    "crlf": crlf,
    "cr-only": cr_only,
    "binary-file": binary_file,
    "long-line": long_line,
    "long-valid-sequence": long_valid_sequence,
    "empty-file": empty_file,
    "header-only": header_only,
    "duplicate-header": duplicate_header,
    "blank-lines": blank_lines,
    "duplicate-line": duplicate_line,
}


# ----------------------------------------------------------------------------- Parquet files


def _set(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, column)


def _with_null(table: pa.Table, name: str) -> pa.Table:
    values = table.column(name).to_pylist()
    values[len(values) // 2] = None
    return _set(table, name, pa.array(values, table.column(name).type))


def _with_value(name: str, value, kind: pa.DataType | None = None) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(name).to_pylist()
        values[len(values) // 3] = value
        return _set(table, name, pa.array(values, kind or table.column(name).type))

    return change


def _to_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


ParquetMutation = Callable[[pa.Table, Base, random.Random], tuple[bytes, Expect]]


def parquet_change(change: Callable[[pa.Table, Base], pa.Table], ok: bool) -> ParquetMutation:
    def mutate(table: pa.Table, base: Base, rng: random.Random) -> tuple[bytes, Expect]:
        changed = change(table, base)
        return _to_bytes(changed), Expect({changed.num_rows} if ok else set())

    return mutate


def _label(base: Base) -> str:
    return "rating" if base.source == "movielens" else "click"


def _item(base: Base) -> str:
    return "movie_id" if base.source == "movielens" else "item_id"


PARQUET_MUTATIONS: dict[str, ParquetMutation] = {
    "string-ids": parquet_change(lambda t, b: _set(t, "user_id", pc.cast(t.column("user_id"), pa.string())),
                                 ok=True),
    "string-timestamps": parquet_change(lambda t, b: _set(t, "timestamp", pc.cast(t.column("timestamp"), pa.string())),
                                        ok=False),
    "string-labels": parquet_change(lambda t, b: _set(t, _label(b), pc.cast(t.column(_label(b)), pa.string())),
                                    ok=False),
    "list-labels": parquet_change(
        lambda t, b: _set(t, _label(b), pa.array([[v] for v in t.column(_label(b)).to_pylist()])), ok=False),
    "fractional-timestamps": parquet_change(
        lambda t, b: _set(t, "timestamp", pc.add(pc.cast(t.column("timestamp"), pa.float64()), 0.5)), ok=False),
    "datetime-timestamps": parquet_change(
        lambda t, b: _set(t, "timestamp", pc.cast(pc.multiply(t.column("timestamp"), 1000), pa.timestamp("ms"))),
        ok=True),
    "null-user": parquet_change(lambda t, b: _with_null(t, "user_id"), ok=False),
    "null-item": parquet_change(lambda t, b: _with_null(t, _item(b)), ok=False),
    "null-timestamp": parquet_change(lambda t, b: _with_null(t, "timestamp"), ok=False),
    "null-label": parquet_change(lambda t, b: _with_null(t, _label(b)), ok=False),
    "nan-label": parquet_change(lambda t, b: _with_value(_label(b), float("nan"))(t), ok=False),
    "inf-label": parquet_change(lambda t, b: _with_value(_label(b), float("inf"))(t), ok=False),
    "negative-timestamp": parquet_change(lambda t, b: _with_value("timestamp", -5)(t), ok=False),
    "negative-id": parquet_change(lambda t, b: _with_value("user_id", -5)(t), ok=True),
    "huge-id": parquet_change(
        lambda t, b: _set(t, "user_id", pa.array([2**63 + v for v in t.column("user_id").to_pylist()], pa.uint64())),
        ok=False),
    "missing-column": parquet_change(lambda t, b: t.drop_columns(["timestamp"]), ok=False),
    "extra-column": parquet_change(lambda t, b: t.append_column("extra", pa.array(range(t.num_rows))), ok=True),
    "duplicate-column": parquet_change(lambda t, b: t.append_column("user_id", t.column("user_id")), ok=False),
    "zero-rows": parquet_change(lambda t, b: t.slice(0, 0), ok=False),
    "dictionary-ids": parquet_change(lambda t, b: _set(t, "user_id", pc.dictionary_encode(t.column("user_id"))),
                                     ok=True),
    "truncated": lambda t, b, rng: (_to_bytes(t)[: rng.randint(10, len(_to_bytes(t)) - 10)], Expect()),
    "binary-file": lambda t, b, rng: (bytes(rng.getrandbits(8) for _ in range(4000)), Expect()),
    "empty-file": lambda t, b, rng: (b"", Expect()),
    "csv-named-parquet": lambda t, b, rng: (b"user_id,item_id,timestamp\n1,2,3\n", Expect()),
    # A null dense value is allowed (events); movielens has no dense column, so its rating is made null.
    "null-dense": parquet_change(lambda t, b: _with_null(t, "price" if "price" in t.column_names else "rating"),
                                 ok=True),
}


# ----------------------------------------------------------------------------- YAML configs


def yaml_replace(key: str, value: str, ok_rows: int | None = None) -> Callable[[str, random.Random], tuple[bytes, Expect]]:
    def mutate(text: str, rng: random.Random) -> tuple[bytes, Expect]:
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines()]
        return ("\n".join(lines) + "\n").encode(), Expect({ok_rows} if ok_rows is not None else set())

    return mutate


def _yaml(text: bytes, *rows: int) -> Callable[[str, random.Random], tuple[bytes, Expect]]:
    return lambda base_text, rng: (text, Expect(set(rows)))


def _yaml_of(change: Callable[[str], bytes], *rows: int) -> Callable[[str, random.Random], tuple[bytes, Expect]]:
    return lambda base_text, rng: (change(base_text), Expect(set(rows)))


YAML_MUTATIONS: dict[str, Callable[[str, random.Random], tuple[bytes, Expect]]] = {
    "wrong-type-rows": yaml_replace("num_rows", "many"),
    "wrong-type-orders": yaml_replace("orders", "two"),
    "float-seed": yaml_replace("seed", "1.5"),
    "nan-mean": yaml_replace("term_mean", ".nan"),
    "inf-decay": yaml_replace("term_mean", ".inf"),
    "negative-rows": yaml_replace("num_rows", "-3"),
    "negative-seed": yaml_replace("seed", "-1"),
    "huge-rows": yaml_replace("num_rows", "9" * 25),
    "huge-cardinality": yaml_replace("max_cardinality", str(10**12)),
    "huge-fields": yaml_replace("num_fields", str(10**9)),
    "huge-chunk": yaml_replace("rows_per_chunk", str(2**62)),
    "zero-rows": yaml_replace("num_rows", "0"),
    "order-too-high": yaml_replace("orders", "[9]"),
    "unknown-key": _yaml_of(lambda text: (text + "num_row: 5\n").encode()),
    "duplicate-key": _yaml_of(lambda text: (text + "num_rows: 10\n").encode()),
    "empty-file": _yaml(b""),
    "comment-only": _yaml(b"# nothing\n"),
    "binary-file": lambda text, rng: (bytes(rng.getrandbits(8) for _ in range(2000)), Expect()),
    "nul-byte": _yaml_of(lambda text: text.replace("seed", "se\x00ed").encode()),
    "utf-16": _yaml_of(lambda text: text.encode("utf-16")),
    "bom": _yaml_of(lambda text: b"\xef\xbb\xbf" + text.encode(), 3000),
    "crlf": _yaml_of(lambda text: text.replace("\n", "\r\n").encode(), 3000),
    "a-list": _yaml(b"- 1\n- 2\n"),
    "a-scalar": _yaml(b"3000\n"),
    "bad-indent": _yaml_of(lambda text: text.replace("num_fields", "  num_fields").encode()),
    "truncated": _yaml_of(lambda text: text[: text.index("orders") + 12].encode()),
    "long-comment": _yaml_of(lambda text: (text + "# " + "x" * 3_000_000 + "\n").encode(), 3000),
    "unclosed-quote": yaml_replace("term_mean", '"0.5'),
}
