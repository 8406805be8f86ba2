"""MovieLens ratings (GroupLens, https://grouplens.org/datasets/movielens/) as an events table.

Recognised layouts (``path`` is the folder, or its ratings file):

* **ml-100k** (raw): ``u.data``, tab-separated ``user item rating timestamp``; ``u.user``,
  ``|``-separated ``id|age|gender|occupation|zip``; ``u.item``, ``|``-separated Latin-1
  ``id|title|release date|video release date|IMDb URL|`` and 19 genre flags (unknown,
  Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama, Fantasy,
  Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western).
* **ml-100k** (Parquet): ``data.parquet`` (user_id, movie_id, rating, timestamp),
  ``users.parquet`` (user_id, age, gender, occupation, zip_code), ``items.parquet``
  (movie_id, movie_title, release_date, video_release_date, IMDb_URL, the 19 genre flags).
* **ml-1m / ml-10m**: ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp``; ``users.dat``
  (ml-1m only) ``UserID::Gender::Age::Occupation::Zip-code``; ``movies.dat``
  ``MovieID::Title::Genres`` with ``|``-joined genres (Latin-1 in ml-1m).
* **ml-20m / ml-25m / ml-latest**: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``),
  ``movies.csv`` (header ``movieId,title,genres``, titles quoted where they hold commas).

Output: kind ``events`` with ``user_id`` (int64), ``item_id`` (int64, the MovieLens movie id),
``timestamp`` (int64, seconds since the epoch) and ``rating`` (float32, the label), in file
order. Side tables where the files exist: ``users`` (``user_id`` and the attributes the
release has: age, gender, occupation, zip_code) and ``items`` (``item_id``, ``title``,
``genres`` as list<string>; "(no genres listed)" becomes an empty list). The dataset name is
the folder's name (e.g. ``ml-100k``).

CTR options (ML-100K as CTR, for DIN / DIEN / SIM): ``like_threshold=4`` adds the label
``like`` (float32, 1 where rating >= 4; labels become ``[like, rating]``); ``features=true``
joins the side tables onto every event (the user's columns, e.g. age, gender, occupation,
zip_code; the movie's ``genres`` as list<string> and ``genre``, its first listed genre) and
declares them sparse; ``history_length=N`` adds ``hist_item_id``, ``hist_rating`` (whole
stars, int64) and with ``features`` ``hist_genre``: the movies, ratings and genres of the
user's N most recent earlier events (``terarec.data.history``).

The ratings files are parsed by pyarrow (``::`` is rewritten to a tab first); only the small
user / movie files are read line by line.
"""

from __future__ import annotations

import csv as pycsv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.errors import BadLineCounter, BadLinePolicy, DataError
from terarec.data.schema import ITEM_ID, TIMESTAMP, USER_ID, check_events_table, check_finite
from terarec.data.sources.base import SourceData
from terarec.data.sources.parquet import parquet_schema, read_parquet
from terarec.data.sources.text import (
    INT64_LIMIT,
    check_not_empty,
    flag_bad_timestamps,
    flag_non_finite,
    no_records,
    read_delimited,
    read_header,
    require_path,
    text_lines,
)

RATING = "rating"
LIKE = "like"
GENRE = "genre"
RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv", "data.parquet")
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRES = "(no genres listed)"
_RATING_TYPES: dict[str, pa.DataType] = {
    USER_ID: pa.int64(),
    ITEM_ID: pa.int64(),
    RATING: pa.float32(),
    TIMESTAMP: pa.int64(),
}
_ITEMS_SCHEMA = pa.schema([(ITEM_ID, pa.int64()), ("title", pa.string()), ("genres", pa.list_(pa.string()))])


def load_movielens(
    path: str | Path,
    *,
    on_bad_line: BadLinePolicy = "error",
    like_threshold: float | None = None,
    features: bool = False,
    history_length: int = 0,
) -> SourceData:
    """Load a MovieLens release (a folder, or its ratings file) as an events table.

    Args:
        path: the release folder (``ml-100k``, ``ml-1m``, ...) or its ratings file
            (``u.data``, ``ratings.dat``, ``ratings.csv``, ``data.parquet``).
        on_bad_line: ``"error"`` raises a DataError naming file and line of the first
            malformed record; ``"skip"`` skips malformed records and counts them.
        like_threshold: add the 0/1 label ``like`` = rating >= like_threshold.
        features: join user and movie columns onto every event (sparse features).
        history_length: add each event's earlier items, ratings (and genres), the last N.

    Returns:
        SourceData(kind="events", labels=["rating"]) with ``users`` / ``items`` side tables
        where the release has them.

    Example:
        >>> data = load_movielens("../shared/datasets/ml-100k")  # doctest: +SKIP
        >>> data.name, data.chunks[0].num_rows  # doctest: +SKIP
        ('ml-100k', 100000)
    """
    path = require_path(path, f"a MovieLens folder holding one of {list(RATINGS_FILES)}")
    if path.is_dir():
        folder = path
        found = [folder / name for name in RATINGS_FILES if (folder / name).is_file()]
        if not found:
            raise DataError(
                f"not a MovieLens folder: none of {list(RATINGS_FILES)} is there "
                f"(it holds {sorted(p.name for p in folder.iterdir())[:20]})",
                path=folder,
            )
        ratings = found[0]
    else:
        ratings, folder = path, path.parent
        if ratings.name not in RATINGS_FILES:
            raise DataError(f"not a MovieLens ratings file; expected one of {list(RATINGS_FILES)}", path=ratings)
    name = folder.resolve().name
    counters: list[BadLineCounter] = []
    side: dict[str, pa.Table] = {}

    def counter_for(file: Path) -> BadLineCounter:
        counters.append(BadLineCounter(on_bad_line, file))
        return counters[-1]

    kind = ratings.name
    if kind == "data.parquet":
        table = _parquet_ratings(ratings)
        if (folder / "users.parquet").is_file():
            side["users"] = _parquet_users(folder / "users.parquet")
        if (folder / "items.parquet").is_file():
            side["items"] = _parquet_items(folder / "items.parquet")
    else:
        if kind == "u.data":
            table = _text_ratings(ratings, counter_for(ratings), delimiter="\t")
            users, items = folder / "u.user", folder / "u.item"
            if users.is_file():
                side["users"] = _users_100k(users, counter_for(users))
            if items.is_file():
                side["items"] = _items_100k(items, counter_for(items))
        elif kind == "ratings.dat":
            table = _text_ratings(ratings, counter_for(ratings), delimiter="::")
            users, movies = folder / "users.dat", folder / "movies.dat"
            if users.is_file():
                side["users"] = _users_dat(users, counter_for(users))
            if movies.is_file():
                side["items"] = _movies_dat(movies, counter_for(movies))
        else:  # ratings.csv
            table = _csv_ratings(ratings, counter_for(ratings))
            movies = folder / "movies.csv"
            if movies.is_file():
                side["items"] = _movies_csv(movies, counter_for(movies))
    if table.num_rows == 0:
        raise no_records("ratings", counters[0]) if counters else DataError("no ratings", path=ratings)
    table = check_events_table(table, ratings)
    labels, sparse = [RATING], []
    if like_threshold is not None:
        if isinstance(like_threshold, bool) or not isinstance(like_threshold, (int, float)):
            raise DataError(f"like_threshold must be a number, got {like_threshold!r}", field="like_threshold")
        like = pc.cast(pc.greater_equal(table.column(RATING), float(like_threshold)), pa.float32())
        table, labels = table.append_column(LIKE, like), [LIKE, RATING]
    if features:
        table, added = _with_side_features(table, side, folder)
        sparse = [USER_ID, ITEM_ID, *added]
    if history_length:
        if isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 0:
            raise DataError(f"history_length must be a whole number >= 0, got {history_length!r}",
                            field="history_length")
        # Imported here: terarec.data.history needs torch, which plain loading does not.
        from terarec.data.history import add_history, history_column

        # Earlier ratings are known when an event is scored; whole stars (half stars rounded up).
        stars = pc.cast(pc.ceil(table.column(RATING)), pa.int64())
        columns = {ITEM_ID: None, **({GENRE: None} if GENRE in table.column_names else {}), RATING: stars}
        table = add_history(table, columns, history_length)
        sparse = (sparse or [USER_ID, ITEM_ID]) + [history_column(column) for column in columns]
    return SourceData(
        name=name,
        source="movielens",
        kind="events",
        chunks=[table],
        sparse=sparse,
        labels=labels,
        side_tables=side,
        bad_lines=counters,
    )


# ---------------------------------------------------------------------------- ratings


def _finish_ratings(table: pa.Table, problems, path: Path) -> pa.Table:
    flag_bad_timestamps(table, TIMESTAMP, problems)
    flag_non_finite(table, [RATING], problems)
    return problems.apply(table).select([USER_ID, ITEM_ID, TIMESTAMP, RATING])


def _text_ratings(path: Path, counter: BadLineCounter, delimiter: str) -> pa.Table:
    """u.data (tabs) or ratings.dat ('::', rewritten to tabs so that pyarrow can split it)."""
    data = None
    if delimiter == "::":
        check_not_empty(path)
        data = path.read_bytes().replace(b"::", b"\t")
    table, problems = read_delimited(
        path,
        counter=counter,
        columns=[USER_ID, ITEM_ID, RATING, TIMESTAMP],
        types=_RATING_TYPES,
        delimiter="\t",
        required=list(_RATING_TYPES),
        data=data,
        separator="'::'" if delimiter == "::" else None,
    )
    return _finish_ratings(table, problems, path)


def _csv_ratings(path: Path, counter: BadLineCounter) -> pa.Table:
    """ratings.csv of ml-20m / ml-25m / ml-latest: header userId,movieId,rating,timestamp."""
    rename = {"userId": USER_ID, "movieId": ITEM_ID, "rating": RATING, "timestamp": TIMESTAMP}
    table, problems = read_delimited(
        path,
        counter=counter,
        header=True,
        types={source: _RATING_TYPES[target] for source, target in rename.items()},
        delimiter=",",
        quoting=True,
        required=list(rename),
    )
    table = table.rename_columns([rename[name] for name in table.column_names])
    return _finish_ratings(table, problems, path)


def _parquet_ratings(path: Path) -> pa.Table:
    """data.parquet: user_id, movie_id (or item_id), rating, timestamp."""
    check_not_empty(path)
    item = "movie_id" if "movie_id" in parquet_schema(path).names else ITEM_ID
    table = read_parquet(path, [USER_ID, item, RATING, TIMESTAMP])
    if table.num_rows == 0:
        raise DataError("empty file (no rows)", path=path)
    rating = table.column(RATING)
    if not (pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type)):
        raise DataError(f"expected numeric ratings, got {rating.type}", path=path, field=RATING)
    if rating.null_count:
        row = int(np.flatnonzero(pc.is_null(rating).to_numpy(zero_copy_only=False))[0])
        raise DataError(f"null rating in row {row}", path=path, field=RATING)
    check_finite(table, [RATING], path)
    return pa.table(
        {
            USER_ID: table.column(USER_ID),
            ITEM_ID: table.column(item),
            TIMESTAMP: table.column(TIMESTAMP),
            RATING: rating.cast(pa.float32()),
        }
    )


# ---------------------------------------------------------------------------- side tables


def _with_side_features(table: pa.Table, side: dict[str, pa.Table], folder: Path) -> tuple[pa.Table, list[str]]:
    """Each event with its user's columns and its movie's ``genres`` and ``genre`` (first genre);
    ids missing from a side table get nulls. Row order is kept."""
    if not side:
        raise DataError("features=true needs the users / items files beside the ratings", path=folder)
    added = []
    for key, side_table in ((USER_ID, side.get("users")), (ITEM_ID, side.get("items"))):
        if side_table is None:
            continue
        ids = side_table.column(key).to_numpy()  # unique (checked when read), not empty
        order = np.argsort(ids, kind="stable")
        wanted = table.column(key).to_numpy()
        rows = order[np.searchsorted(ids, wanted, sorter=order).clip(max=ids.size - 1)]
        take = pa.array(rows, mask=ids[rows] != wanted)
        names = [n for n in side_table.column_names if n != key] if key == USER_ID else ["genres"]
        for name in names:
            table = table.append_column(name, side_table.column(name).take(take))
            added.append(name)
        if key == ITEM_ID:
            genres = table.column("genres").combine_chunks()
            lengths = pc.fill_null(pc.list_value_length(genres), 0).to_numpy()
            starts = genres.offsets.to_numpy()[:-1]
            first = genres.values.take(pa.array(np.where(lengths > 0, starts, 0), mask=lengths == 0))
            table = table.append_column(GENRE, first)
            added.append(GENRE)
    return table, added


def _int(text: str) -> int:
    return int(text.strip())


def _unique_ids(ids: list[int], lines: list[int], counter: BadLineCounter, what: str) -> list[bool]:
    """Flags the rows to keep: a repeated id is a bad line (it would give one id two records)."""
    first: dict[int, int] = {}
    keep = []
    for value, line in zip(ids, lines):
        if value in first:
            counter.record(line, f"duplicate {what} {value} (first on line {first[value]})", what)
            keep.append(False)
        else:
            first[value] = line
            keep.append(True)
    return keep


def _parse_lines(path: Path, counter: BadLineCounter, split, fields: int, separator: str, parse) -> list[tuple]:
    """Split each non-blank line, check the field count, and parse it; bad lines go to the counter."""
    records = []
    for number, line in enumerate(text_lines(path, counter), start=1):
        if not line.strip():
            continue
        parts = split(line)
        if len(parts) != fields:
            counter.record(number, f"expected {fields} fields separated by {separator}, got {len(parts)}: {line[:80]!r}")
            continue
        try:
            records.append((number, *parse(parts)))
        except ValueError as error:
            counter.record(number, f"bad value: {error}")
    if not records and counter.skipped == 0:
        raise DataError("empty file (no records)", path=path)
    return records


def _id_field(text: str, field: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{field} must be an integer, got {text!r}") from None
    if not -INT64_LIMIT <= value < INT64_LIMIT:
        raise ValueError(f"{field} must be an integer from -2**63 to 2**63 - 1 (int64), got {text.strip()}")
    return value


def _users_table(
    records: list[tuple], names: list[str], types: list[pa.DataType], counter: BadLineCounter
) -> pa.Table:
    keep = _unique_ids([r[1] for r in records], [r[0] for r in records], counter, USER_ID)
    records = [r for r, k in zip(records, keep) if k]
    columns = {name: pa.array([r[i + 1] for r in records], type=kind) for i, (name, kind) in enumerate(zip(names, types))}
    return pa.table(columns)


def _items_table(records: list[tuple], counter: BadLineCounter) -> pa.Table:
    keep = _unique_ids([r[1] for r in records], [r[0] for r in records], counter, ITEM_ID)
    records = [r for r, k in zip(records, keep) if k]
    return pa.table(
        [
            pa.array([r[1] for r in records], pa.int64()),
            pa.array([r[2] for r in records], pa.string()),
            pa.array([r[3] for r in records], pa.list_(pa.string())),
        ],
        schema=_ITEMS_SCHEMA,
    )


def _users_100k(path: Path, counter: BadLineCounter) -> pa.Table:
    """u.user: id|age|gender|occupation|zip."""
    records = _parse_lines(
        path, counter, lambda line: line.split("|"), 5, "'|'",
        lambda p: (_id_field(p[0], "user id"), _id_field(p[1], "age"), p[2], p[3], p[4]),
    )  # fmt: skip
    return _users_table(
        records,
        [USER_ID, "age", "gender", "occupation", "zip_code"],
        [pa.int64(), pa.int64(), pa.string(), pa.string(), pa.string()],
        counter,
    )


def _items_100k(path: Path, counter: BadLineCounter) -> pa.Table:
    """u.item: id|title|release date|video release date|url|19 genre flags (Latin-1)."""

    def parse(parts: list[str]) -> tuple:
        flags = parts[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise ValueError(f"genre flags must be 0 or 1, got {flags}")
        genres = [genre for genre, flag in zip(GENRES_100K, flags) if flag == "1"]
        return _id_field(parts[0], "movie id"), parts[1], genres

    records = _parse_lines(path, counter, lambda line: line.split("|"), 5 + len(GENRES_100K), "'|'", parse)
    return _items_table(records, counter)


def _users_dat(path: Path, counter: BadLineCounter) -> pa.Table:
    """users.dat (ml-1m): UserID::Gender::Age::Occupation::Zip-code; occupation is a code 0-20."""
    records = _parse_lines(
        path, counter, lambda line: line.split("::"), 5, "'::'",
        lambda p: (_id_field(p[0], "user id"), p[1], _id_field(p[2], "age"), _id_field(p[3], "occupation"), p[4]),
    )  # fmt: skip
    return _users_table(
        records,
        [USER_ID, "gender", "age", "occupation", "zip_code"],
        [pa.int64(), pa.string(), pa.int64(), pa.int64(), pa.string()],
        counter,
    )


def _genres(text: str) -> list[str]:
    text = text.strip()
    if not text or text == NO_GENRES:
        return []
    return text.split("|")


def _movies_dat(path: Path, counter: BadLineCounter) -> pa.Table:
    """movies.dat: MovieID::Title::Genres (a title may itself hold '::', so split from both ends)."""

    def split(line: str) -> list[str]:
        if line.count("::") < 2:
            return line.split("::")
        head, rest = line.split("::", 1)
        title, genres = rest.rsplit("::", 1)
        return [head, title, genres]

    records = _parse_lines(
        path, counter, split, 3, "'::'", lambda p: (_id_field(p[0], "movie id"), p[1], _genres(p[2]))
    )
    return _items_table(records, counter)


def _movies_csv(path: Path, counter: BadLineCounter) -> pa.Table:
    """movies.csv: header movieId,title,genres; quoted titles."""
    check_not_empty(path)
    header = read_header(path, ",", quoting=True)
    expected = ["movieId", "title", "genres"]
    missing = [name for name in expected if name not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; the header has {header}", path=path, field=missing[0])
    position = [header.index(name) for name in expected]
    lines = text_lines(path, counter)
    records = []
    # Line by line: a quoted title may hold commas but not a line end, so an unclosed quote
    # costs its own line only.
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            fields = next(pycsv.reader([line], strict=True))
        except pycsv.Error as error:
            counter.record(number, f"cannot split the line as CSV: {error}")
            continue
        if len(fields) != len(header):
            counter.record(number, f"expected {len(header)} fields separated by commas, got {len(fields)}")
            continue
        try:
            movie = _id_field(fields[position[0]], "movieId")
        except ValueError as error:
            counter.record(number, str(error), "movieId")
            continue
        records.append((number, movie, fields[position[1]], _genres(fields[position[2]])))
    return _items_table(records, counter)


def _parquet_users(path: Path) -> pa.Table:
    table = read_parquet(path)
    if USER_ID not in table.column_names:
        raise DataError(f"missing column '{USER_ID}'; the file has {table.column_names}", path=path, field=USER_ID)
    _check_unique(table.column(USER_ID), path, USER_ID)
    return table.replace_schema_metadata(None)


def _parquet_items(path: Path) -> pa.Table:
    """items.parquet: movie_id, movie_title, ..., one 0/1 column per genre."""
    table = read_parquet(path)
    item = "movie_id" if "movie_id" in table.column_names else ITEM_ID
    title = "movie_title" if "movie_title" in table.column_names else "title"
    missing = [name for name in (item, title) if name not in table.column_names]
    if missing:
        raise DataError(f"missing column(s) {missing}; the file has {table.column_names}", path=path, field=missing[0])
    _check_unique(table.column(item), path, item)
    flags = [name for name in GENRES_100K if name in table.column_names]
    if flags:
        matrix = np.stack([table.column(name).fill_null(0).to_numpy() for name in flags], axis=1) != 0
        names = np.array(flags, dtype=object)
        genres = [names[row].tolist() for row in matrix]
    elif "genres" in table.column_names:
        genres = [_genres(text or "") for text in table.column("genres").to_pylist()]
    else:
        genres = [[] for _ in range(table.num_rows)]
    return pa.table(
        [table.column(item).cast(pa.int64()), table.column(title).cast(pa.string()), pa.array(genres, pa.list_(pa.string()))],
        schema=_ITEMS_SCHEMA,
    )


def _check_unique(column: pa.ChunkedArray, path: Path, field: str) -> None:
    if column.null_count:
        raise DataError("null id", path=path, field=field)
    if pc.count_distinct(column).as_py() != len(column):
        values, counts = np.unique(column.to_numpy(), return_counts=True)
        raise DataError(f"duplicate id {values[counts > 1][0]}", path=path, field=field)
