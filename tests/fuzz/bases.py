"""Small valid inputs of every source, the starting points the fuzz suite mutates.

Each ``Base`` writes its files into a folder and says which file a mutation targets, how
that file is laid out (delimiter, header, which field holds an id and which a number) and
how many rows of the prepared table each of its lines gives, so that a mutation can say
exactly how many rows a run may produce.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class Target:
    """A text file of a base that mutations change.

    Args:
        name: file name inside the case folder.
        delimiter: field separator.
        header: the first line names the columns.
        id_field: index of a field holding an integer id.
        number_field: index of a field holding a number (label, rating, timestamp, count).
        rows_per_line: rows of the prepared table each line gives (0 for a side file's lines).
        quoting: the format honours double quotes.
    """

    @property
    def is_side_file(self) -> bool:
        """Its lines give no rows of the prepared table (users, movies)."""
        return self.rows_per_line is NONE

    name: str
    delimiter: str
    header: bool
    id_field: int
    number_field: int
    rows_per_line: Callable[[str], int]
    quoting: bool = False


@dataclass
class Base:
    """A source's valid input: files, the path and options to pass, and the rows it gives.

    Args:
        name: names the cases.
        source: the ``terarec data prepare`` source.
        files: file name -> bytes, or a pyarrow Table for a Parquet file.
        arg: the path argument, relative to the case folder ("." for the folder itself).
        options: extra command-line words (``-o key=value``).
        targets: the text files mutations may change.
        parquet: the Parquet file mutations may change.
        yaml: the YAML config mutations may change.
        kind: ``text``, ``parquet`` or ``yaml``.
    """

    name: str
    source: str
    files: dict[str, bytes | pa.Table]
    arg: str
    options: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    kind: str = "text"

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, pa.Table):
                pq.write_table(content, path)
            else:
                path.write_bytes(content)

    def rows(self) -> int:
        """Rows the unchanged base gives."""
        if self.kind == "parquet":
            return next(t for t in self.files.values() if isinstance(t, pa.Table)).num_rows
        if self.kind == "yaml":
            return SYNTHETIC_ROWS
        return sum(rows_of_text(self.files[target.name].decode(), target) for target in self.targets)


def rows_of_text(text: str, target: Target) -> int:
    lines = text.split("\n")[1 if target.header else 0 :]
    return sum(target.rows_per_line(line) for line in lines if line.strip())


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


ONE = lambda line: 1  # noqa: E731
NONE = lambda line: 0  # noqa: E731
SYNTHETIC_ROWS = 3000
GENRE_FLAGS = 19


def movielens_100k(rng: random.Random) -> Base:
    ratings = [f"{u}\t{i}\t{rng.randint(1, 5)}\t{880000000 + k}" for k, (u, i) in
               enumerate((rng.randint(1, 8), rng.randint(1, 15)) for _ in range(40))]
    users = [f"{u}|{20 + u}|{'MF'[u % 2]}|technician|8571{u}" for u in range(1, 9)]
    items = [f"{i}|Movie {i} (1995)|01-Jan-1995||http://x/{i}|" + "|".join("1" if g == i % GENRE_FLAGS else "0"
                                                                           for g in range(GENRE_FLAGS))
             for i in range(1, 16)]
    return Base(
        "ml-100k", "movielens", {"ml-100k/u.data": _text(ratings), "ml-100k/u.user": _text(users),
                                 "ml-100k/u.item": _text(items)}, "ml-100k",
        targets=[Target("ml-100k/u.data", "\t", False, 0, 3, ONE), Target("ml-100k/u.user", "|", False, 0, 1, NONE),
                 Target("ml-100k/u.item", "|", False, 0, 5, NONE)],
    )


def movielens_1m(rng: random.Random) -> Base:
    ratings = [f"{rng.randint(1, 8)}::{rng.randint(1, 15)}::{rng.randint(1, 5)}::{978300000 + k}" for k in range(40)]
    users = [f"{u}::{'MF'[u % 2]}::25::{u % 20}::4806{u}" for u in range(1, 9)]
    movies = [f"{i}::Movie {i} (1995)::Animation|Comedy" for i in range(1, 16)]
    return Base(
        "ml-1m", "movielens", {"ml-1m/ratings.dat": _text(ratings), "ml-1m/users.dat": _text(users),
                               "ml-1m/movies.dat": _text(movies)}, "ml-1m",
        targets=[Target("ml-1m/ratings.dat", "::", False, 0, 3, ONE), Target("ml-1m/users.dat", "::", False, 0, 2, NONE),
                 Target("ml-1m/movies.dat", "::", False, 0, 0, NONE)],
    )


def movielens_20m(rng: random.Random) -> Base:
    ratings = ["userId,movieId,rating,timestamp"] + [
        f"{rng.randint(1, 8)},{rng.randint(1, 15)},{rng.choice(['0.5', '3.0', '4.5', '5.0'])},{1112486027 + k}"
        for k in range(40)]
    movies = ["movieId,title,genres"] + [f'{i},"Movie {i}, The (1995)",Adventure|Comedy' for i in range(1, 16)]
    return Base(
        "ml-20m", "movielens", {"ml-20m/ratings.csv": _text(ratings), "ml-20m/movies.csv": _text(movies)}, "ml-20m",
        targets=[Target("ml-20m/ratings.csv", ",", True, 0, 3, ONE, quoting=True),
                 Target("ml-20m/movies.csv", ",", True, 0, 0, NONE, quoting=True)],
    )


def movielens_parquet(rng: random.Random) -> Base:
    table = pa.table({
        "user_id": pa.array([rng.randint(1, 8) for _ in range(40)], pa.int64()),
        "movie_id": pa.array([rng.randint(1, 15) for _ in range(40)], pa.int64()),
        "rating": pa.array([float(rng.randint(1, 5)) for _ in range(40)], pa.float64()),
        "timestamp": pa.array([880000000 + k for k in range(40)], pa.int64()),
    })
    return Base("ml-parquet", "movielens", {"ml-pq/data.parquet": table}, "ml-pq", kind="parquet")


def amazon_sequences(rng: random.Random) -> Base:
    lines = [" ".join(str(v) for v in [u, *(rng.randint(1, 30) for _ in range(rng.randint(2, 6)))])
             for u in range(1, 13)]
    return Base("amazon-seq", "amazon", {"Beauty.txt": _text(lines)}, "Beauty.txt",
                targets=[Target("Beauty.txt", " ", False, 0, 1, lambda line: len(line.split()) - 1)])


def amazon_pairs(rng: random.Random) -> Base:
    lines = [f"{rng.randint(1, 8)} {rng.randint(1, 30)}" for _ in range(40)]
    return Base("amazon-pairs", "amazon", {"Video.txt": _text(lines)}, "Video.txt",
                targets=[Target("Video.txt", " ", False, 0, 1, ONE)])


FRAPPE_HEADER = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity"


def frappe_raw(rng: random.Random) -> Base:
    lines = [FRAPPE_HEADER] + [
        f"{rng.randint(0, 9)}\t{rng.randint(0, 19)}\t{rng.randint(1, 9)}\t{rng.choice(['morning', 'evening'])}\t"
        f"{rng.choice(['monday', 'sunday'])}\tweekday\tunknown\tfree\tsunny\tSpain\t{rng.randint(0, 5)}"
        for _ in range(30)]
    return Base("frappe-raw", "frappe", {"frappe.csv": _text(lines)}, "frappe.csv",
                targets=[Target("frappe.csv", "\t", True, 0, 10, lambda line: 3)])


FRAPPE_SPLIT_HEADER = "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city"


def frappe_splits(rng: random.Random) -> Base:
    def split(rows: int) -> bytes:
        return _text([FRAPPE_SPLIT_HEADER] + [
            f"{rng.randint(0, 1)},{rng.randint(0, 9)},{rng.randint(0, 19)},morning,monday,weekday,unknown,free,"
            f"sunny,Spain,{rng.randint(0, 5)}" for _ in range(rows)])

    return Base(
        "frappe-splits", "frappe-splits",
        {"splits/train.csv": split(20), "splits/valid.csv": split(8), "splits/test.csv": split(8)}, "splits",
        targets=[Target(f"splits/{name}.csv", ",", True, 1, 0, ONE, quoting=True) for name in ("train", "valid", "test")],
    )


def criteo(rng: random.Random) -> Base:
    lines = ["\t".join([str(rng.randint(0, 1)), *(str(rng.randint(0, 99)) if rng.random() > 0.1 else ""
                                                  for _ in range(13)),
                        *(f"{rng.getrandbits(32):08x}" if rng.random() > 0.1 else "" for _ in range(26))])
             for _ in range(30)]
    return Base("criteo", "criteo", {"day_0": _text(lines)}, "day_0",
                targets=[Target("day_0", "\t", False, 15, 0, ONE)])


EVENTS_OPTIONS = ["-o", "sparse=[country]", "-o", "dense=[price]", "-o", "labels=[click]"]


def events_csv(rng: random.Random) -> Base:
    lines = ["user_id,item_id,timestamp,country,price,click"] + [
        f"{rng.randint(1, 8)},{rng.randint(1, 20)},{1000 + k},{rng.choice(['fr', 'de', 'es'])},"
        f"{rng.randint(1, 99) / 4},{rng.randint(0, 1)}" for k in range(30)]
    return Base("events-csv", "events", {"clicks.csv": _text(lines)}, "clicks.csv", EVENTS_OPTIONS,
                targets=[Target("clicks.csv", ",", True, 0, 4, ONE, quoting=True)])


def events_parquet(rng: random.Random) -> Base:
    table = pa.table({
        "user_id": pa.array([rng.randint(1, 8) for _ in range(30)], pa.int64()),
        "item_id": pa.array([rng.randint(1, 20) for _ in range(30)], pa.int64()),
        "timestamp": pa.array([1000 + k for k in range(30)], pa.int64()),
        "country": pa.array([rng.choice(["fr", "de"]) for _ in range(30)]),
        "price": pa.array([rng.randint(1, 99) / 4 for _ in range(30)], pa.float64()),
        "click": pa.array([float(rng.randint(0, 1)) for _ in range(30)], pa.float64()),
    })
    return Base("events-parquet", "events", {"clicks.parquet": table}, "clicks.parquet", EVENTS_OPTIONS,
                kind="parquet")


SYNTHETIC_YAML = f"""num_rows: {SYNTHETIC_ROWS}
num_fields: 4
min_cardinality: 3
max_cardinality: 6
num_terms: 4
orders: [2]
order_weights: [1.0]
term_mean: 0.5
rows_per_chunk: 1000
seed: 3
"""


def synthetic_ctr(rng: random.Random) -> Base:
    return Base("synthetic-ctr", "synthetic-ctr", {"data.yaml": SYNTHETIC_YAML.encode()}, "data.yaml", kind="yaml")


BASES: list[Callable[[random.Random], Base]] = [
    movielens_100k, movielens_1m, movielens_20m, movielens_parquet, amazon_sequences, amazon_pairs, frappe_raw,
    frappe_splits, criteo, events_csv, events_parquet, synthetic_ctr,
]
