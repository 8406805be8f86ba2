"""Tests of the format loaders in terarec.data.sources, each on tiny fixture files of its own."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.data.errors import DataError
from terarec.data.sources.amazon import load_amazon
from terarec.data.sources.criteo import COLUMNS as CRITEO_COLUMNS
from terarec.data.sources.criteo import load_criteo, parse_hex
from terarec.data.sources.events import load_events
from terarec.data.sources.frappe import CONTEXT, load_frappe, load_frappe_splits
from terarec.data.sources.movielens import load_movielens
from terarec.features.hashing import hash_array


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def rows(data) -> list[dict]:
    return pa.concat_tables(list(data.chunks)).to_pylist()


# ------------------------------------------------------------------------------ MovieLens

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
U_USER = "22|25|M|writer|40206\n186|39|F|executive|00000\n196|49|M|writer|55105\n"
FLAGS_ANIMATION_COMEDY = "|".join("1" if i in (3, 5) else "0" for i in range(19))
FLAGS_UNKNOWN = "|".join("1" if i == 0 else "0" for i in range(19))
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://x|{FLAGS_ANIMATION_COMEDY}\n"
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{FLAGS_UNKNOWN}\n"
    f"377|Café (1994)|01-Jan-1994||http://z|{FLAGS_ANIMATION_COMEDY}\n"
)


def ml100k(tmp_path: Path, ratings: str = U_DATA) -> Path:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", ratings)
    write(folder / "u.user", U_USER)
    write(folder / "u.item", U_ITEM, encoding="latin-1")
    return folder


def test_movielens_100k_raw(tmp_path):
    data = load_movielens(ml100k(tmp_path))
    assert (data.name, data.source, data.kind, data.labels) == ("ml-100k", "movielens", "events", ["rating"])
    table = data.chunks[0]
    assert table.schema.field("rating").type == pa.float32()
    assert table.column_names == ["user_id", "item_id", "timestamp", "rating"]
    assert table.to_pylist()[0] == {"user_id": 196, "item_id": 242, "timestamp": 881250949, "rating": 3.0}
    assert table.num_rows == 3
    users = data.side_tables["users"].to_pylist()
    assert users[1] == {"user_id": 186, "age": 39, "gender": "F", "occupation": "executive", "zip_code": "00000"}
    items = data.side_tables["items"].to_pylist()
    assert items[0] == {"item_id": 242, "title": "Kolya (1996)", "genres": ["Animation", "Comedy"]}
    assert items[1]["genres"] == ["unknown"]
    assert items[2]["title"] == "Café (1994)"  # Latin-1 decoded
    # The ratings file itself may be given; the name is still the folder's.
    assert load_movielens(tmp_path / "ml-100k" / "u.data").name == "ml-100k"


def test_movielens_bad_line_reports_file_and_line(tmp_path):
    folder = ml100k(tmp_path, "1\t2\t3\t100\n1\t2\t3\n4\t5\t4\t200\n")
    with pytest.raises(DataError) as error:
        load_movielens(folder)
    assert "u.data:2" in str(error.value)
    assert "expected 4 fields" in str(error.value)


def test_movielens_non_integer_id_line(tmp_path):
    folder = ml100k(tmp_path, "1\t2\t3\t100\n1\t2\t3\t101\nx7\t5\t4\t200\n")
    with pytest.raises(DataError) as error:
        load_movielens(folder)
    assert "u.data:3" in str(error.value) and "user_id" in str(error.value) and "x7" in str(error.value)


def test_movielens_non_numeric_rating_names_field(tmp_path):
    folder = ml100k(tmp_path, "1\t2\tgood\t100\n")
    with pytest.raises(DataError) as error:
        load_movielens(folder)
    assert "u.data:1" in str(error.value) and "'rating'" in str(error.value)


def test_movielens_skip_counts_bad_lines(tmp_path):
    folder = ml100k(tmp_path, "1\t2\t3\t100\n1\t2\t3\n\n4\t5\tx\t200\n6\t7\t5\t300\n")
    data = load_movielens(folder, on_bad_line="skip")
    table = data.chunks[0]
    assert table.column("user_id").to_pylist() == [1, 6]
    counter = next(c for c in data.bad_lines if str(c.path).endswith("u.data"))
    assert counter.skipped == 2
    assert "u.data:2" in counter.first_examples[0] and "u.data:4" in counter.first_examples[1]


def test_movielens_negative_and_fractional_timestamps(tmp_path):
    with pytest.raises(DataError, match=r"u.data:2.*non-negative"):
        load_movielens(ml100k(tmp_path / "a", "1\t2\t3\t100\n1\t3\t3\t-5\n"))
    with pytest.raises(DataError, match=r"u.data:1.*'timestamp'.*integer"):
        load_movielens(ml100k(tmp_path / "b", "1\t2\t3\t100.5\n"))


def test_movielens_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        load_movielens(ml100k(tmp_path, ""))
    with pytest.raises(DataError, match="no such file") as error:
        load_movielens(tmp_path / "nowhere")
    assert "nowhere" in str(error.value) and "u.data" in str(error.value)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="ratings.dat"):
        load_movielens(tmp_path / "other")


def test_movielens_1m_dat(tmp_path):
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "2::Señor: A Title With :: Colons (1999)::Comedy\n",
        encoding="latin-1",
    )
    data = load_movielens(folder)
    assert data.name == "ml-1m"
    assert data.chunks[0].to_pylist()[1] == {"user_id": 1, "item_id": 661, "timestamp": 978302109, "rating": 3.0}
    assert data.side_tables["users"].to_pylist()[0] == {
        "user_id": 1, "gender": "F", "age": 1, "occupation": 10, "zip_code": "48067"
    }  # fmt: skip
    items = data.side_tables["items"].to_pylist()
    assert items[1]["genres"] == ["Animation", "Children's", "Musical"]
    assert items[2]["title"] == "Señor: A Title With :: Colons (1999)"


def test_movielens_dat_bad_line(tmp_path):
    folder = tmp_path / "ml-10m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2:1193::4::978298413\n")
    with pytest.raises(DataError, match=r"ratings.dat:3.*'::'"):
        load_movielens(folder)
    data = load_movielens(folder, on_bad_line="skip")
    assert data.chunks[0].num_rows == 2 and data.bad_lines[0].skipped == 1


def test_movielens_20m_csv(tmp_path):
    folder = tmp_path / "ml-20m"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n")
    write(
        folder / "movies.csv",
        'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n'
        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n'
        "30,Nothing (2000),(no genres listed)\n",
    )
    data = load_movielens(folder)
    assert data.name == "ml-20m"
    assert data.chunks[0].column("rating").to_pylist() == [3.5, 4.0]
    items = data.side_tables["items"].to_pylist()
    assert items[1]["title"] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert items[1]["genres"] == ["Adventure", "Drama"] and items[2]["genres"] == []
    assert "users" not in data.side_tables


def test_movielens_csv_bad_line_counts_the_header(tmp_path):
    folder = tmp_path / "ml-latest"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1.5\n")
    with pytest.raises(DataError, match=r"ratings.csv:3.*timestamp"):
        load_movielens(folder)


def test_movielens_csv_missing_column(tmp_path):
    folder = tmp_path / "ml-latest"
    write(folder / "ratings.csv", "userId,movieId,rating\n1,2,3.5\n")
    with pytest.raises(DataError, match="timestamp") as error:
        load_movielens(folder)
    assert "userId" in str(error.value)  # lists what the header has


def test_movielens_parquet(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    pq.write_table(
        pa.table({"user_id": [1, 2], "movie_id": [10, 20], "rating": [4, 5], "timestamp": [100, 200]}),
        folder / "data.parquet",
    )
    pq.write_table(pa.table({"user_id": [1, 2], "age": [30, 40], "gender": ["M", "F"]}), folder / "users.parquet")
    pq.write_table(
        pa.table({"movie_id": [10, 20], "movie_title": ["A", "B"], "Action": [1, 0], "Comedy": [1, 1]}),
        folder / "items.parquet",
    )
    data = load_movielens(folder)
    assert data.chunks[0].to_pylist() == [
        {"user_id": 1, "item_id": 10, "timestamp": 100, "rating": 4.0},
        {"user_id": 2, "item_id": 20, "timestamp": 200, "rating": 5.0},
    ]
    assert data.side_tables["items"].to_pylist()[0] == {"item_id": 10, "title": "A", "genres": ["Action", "Comedy"]}
    assert data.side_tables["users"].num_rows == 2


def test_movielens_parquet_errors(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    pq.write_table(pa.table({"user_id": [1], "movie_id": [10], "rating": [4]}), folder / "data.parquet")
    with pytest.raises(DataError, match="timestamp"):
        load_movielens(folder)
    pq.write_table(
        pa.table({"user_id": [1], "movie_id": [10], "rating": ["x"], "timestamp": [1]}), folder / "data.parquet"
    )
    with pytest.raises(DataError, match="'rating'"):
        load_movielens(folder)
    pq.write_table(
        pa.table({"user_id": [1, 1], "movie_id": [10, 11], "rating": [3, 4], "timestamp": [1, -1]}),
        folder / "data.parquet",
    )
    with pytest.raises(DataError, match="non-negative"):
        load_movielens(folder)


# ------------------------------------------------------------------------------ Amazon


def test_amazon_sequence_format(tmp_path):
    path = write(tmp_path / "Beauty.txt", "1 1 2 3\n2 4 1\n3 5 6 7 8\n")
    data = load_amazon(path)
    assert (data.name, data.kind, data.sorted_by_user) == ("Beauty", "events", True)
    table = data.chunks[0]
    assert table.num_rows == 9
    assert table.column("user_id").to_pylist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert table.column("item_id").to_pylist() == [1, 2, 3, 4, 1, 5, 6, 7, 8]
    assert table.column("timestamp").to_pylist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]


def test_amazon_pair_format(tmp_path):
    # A user's lines need not be adjacent: positions follow the file order per user.
    path = write(tmp_path / "Video.txt", "1 10\n1 11\n2 10\n1 12\n2 13\n")
    table = load_amazon(path).chunks[0]
    assert table.to_pylist() == [
        {"user_id": 1, "item_id": 10, "timestamp": 0},
        {"user_id": 1, "item_id": 11, "timestamp": 1},
        {"user_id": 1, "item_id": 12, "timestamp": 2},
        {"user_id": 2, "item_id": 10, "timestamp": 0},
        {"user_id": 2, "item_id": 13, "timestamp": 1},
    ]
    assert load_amazon(path, format="sequence").chunks[0].equals(table)  # 2-token lines read alike


def test_amazon_pairs_rejects_long_lines(tmp_path):
    path = write(tmp_path / "Video.txt", "1 10\n1 11 12\n")
    with pytest.raises(DataError, match=r"Video.txt:2.*2 tokens"):
        load_amazon(path, format="pairs")


def test_amazon_non_integer_token(tmp_path):
    path = write(tmp_path / "Beauty.txt", "1 1 2 3\n\n2 4 x9 1\n3 5 6\n")
    with pytest.raises(DataError) as error:
        load_amazon(path)
    assert "Beauty.txt:3" in str(error.value) and "x9" in str(error.value)
    data = load_amazon(path, on_bad_line="skip")
    assert data.bad_lines[0].skipped == 1
    assert data.chunks[0].column("user_id").to_pylist() == [1, 1, 1, 3, 3]


def test_amazon_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        load_amazon(write(tmp_path / "Beauty.txt", ""))
    with pytest.raises(DataError, match="empty file"):
        load_amazon(write(tmp_path / "Blank.txt", "\n\n"))
    with pytest.raises(DataError, match="no such file"):
        load_amazon(tmp_path / "Nope.txt")


# ------------------------------------------------------------------------------ Frappe

FRAPPE_HEADER = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity\n"


def frappe_line(user: int, item: int, daytime: str = "morning", country: str = "Spain", city: int = 0) -> str:
    return f"{user}\t{item}\t1\t{daytime}\tmonday\tworkday\tunknown\tfree\tsunny\t{country}\t{city}\n"


def frappe_log(tmp_path: Path, lines: list[str], name: str = "frappe.csv") -> Path:
    return write(tmp_path / name, FRAPPE_HEADER + "".join(lines))


def test_frappe_negative_sampling(tmp_path):
    lines = [frappe_line(u, i, d) for u in range(3) for i in range(u, u + 3) for d in ("morning", "night")]
    path = frappe_log(tmp_path, lines, "frappe.csv.gz")
    data = load_frappe(path)
    assert (data.kind, data.labels) == ("ctr", ["label"])
    assert data.sparse == ["user", "item", *CONTEXT]
    table = data.chunks[0]
    assert table.num_rows == 3 * len(lines)
    assert table.schema.field("label").type == pa.float32()
    assert table.schema.field("item").type == pa.int64() and table.schema.field("city").type == pa.int64()
    assert table.schema.field("country").type == pa.string()
    records = table.to_pylist()
    labels = [r["label"] for r in records]
    assert labels == [1.0, 0.0, 0.0] * len(lines)
    catalogue = set(range(5))
    keys = [tuple(r[c] for c in ("user", "item", *CONTEXT)) for r in records]
    positives = {k for k, r in zip(keys, records) if r["label"] == 1}
    assert len(positives) == len(lines)
    for index in range(0, len(records), 3):
        positive = records[index]
        for negative in records[index + 1 : index + 3]:
            assert negative["item"] in catalogue
            assert all(negative[c] == positive[c] for c in ("user", *CONTEXT))
    # No negative equals a positive (user, item, context).
    assert not any(k in positives for k, r in zip(keys, records) if r["label"] == 0)
    # Deterministic under the seed, different under another.
    assert load_frappe(path).chunks[0].equals(table)
    assert not load_frappe(path, seed=1).chunks[0].equals(table)


def test_frappe_redraws_clashes(tmp_path):
    # Catalogue {0, 1, 2}; user 0 in the morning used 0 and 1, so its negatives must all be 2.
    lines = [frappe_line(0, 0), frappe_line(0, 1), frappe_line(1, 2, "night")]
    table = load_frappe(frappe_log(tmp_path, lines)).chunks[0].to_pylist()
    negatives = [r["item"] for r in table if r["label"] == 0 and r["user"] == 0]
    assert negatives == [2, 2, 2, 2]
    with pytest.raises(DataError, match="every one of"):
        load_frappe(frappe_log(tmp_path, [frappe_line(0, 0), frappe_line(0, 1)], "full.csv"))


def test_frappe_bad_lines(tmp_path):
    lines = [frappe_line(0, 0), frappe_line(1, 1), "x\t2\t1\tmorning\tmonday\tworkday\tunknown\tfree\tsunny\tSpain\t0\n"]
    path = frappe_log(tmp_path, lines)
    with pytest.raises(DataError) as error:
        load_frappe(path)
    assert "frappe.csv:4" in str(error.value) and "'user'" in str(error.value)
    data = load_frappe(path, on_bad_line="skip")
    assert data.bad_lines[0].skipped == 1 and data.chunks[0].num_rows == 6


def test_frappe_missing_column_and_empty(tmp_path):
    path = write(tmp_path / "frappe.csv", "user\titem\tcnt\tdaytime\n0\t0\t1\tmorning\n")
    with pytest.raises(DataError, match="weekday") as error:
        load_frappe(path)
    assert "daytime" in str(error.value)
    with pytest.raises(DataError, match="empty file"):
        load_frappe(write(tmp_path / "empty" / "frappe.csv", ""))
    with pytest.raises(DataError, match="frappe.csv.gz"):
        load_frappe(tmp_path / "none")


SPLIT_HEADER = "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n"


def split_line(label: int, user: int) -> str:
    return f"{label},{user},7,morning,monday,workday,unknown,free,sunny,United States,3\n"


def test_frappe_splits(tmp_path):
    write(tmp_path / "train.csv.gz", SPLIT_HEADER + split_line(1, 0) + split_line(0, 1) + split_line(0, 2))
    write(tmp_path / "valid.csv", SPLIT_HEADER + split_line(1, 3))
    write(tmp_path / "test.csv.gz", SPLIT_HEADER + split_line(0, 4) + split_line(1, 5))
    data = load_frappe_splits(tmp_path)
    assert data.has_split and data.kind == "ctr" and data.labels == ["label"]
    table = data.chunks[0]
    assert table.schema.field("split").type == pa.int8()
    assert table.column("split").to_pylist() == [0, 0, 0, 1, 2, 2]
    assert table.column("label").to_pylist() == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert table.column("user").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert table.column("country").to_pylist()[0] == "United States"


def test_frappe_splits_errors(tmp_path):
    write(tmp_path / "train.csv", SPLIT_HEADER + split_line(1, 0) + split_line(2, 1))
    write(tmp_path / "valid.csv", SPLIT_HEADER + split_line(1, 3))
    with pytest.raises(DataError, match=r"test split.*test.csv.gz"):
        load_frappe_splits(tmp_path)
    write(tmp_path / "test.csv", SPLIT_HEADER + split_line(0, 4))
    with pytest.raises(DataError, match=r"train.csv:3.*'label'.*0 or 1"):
        load_frappe_splits(tmp_path)
    write(tmp_path / "train.csv", SPLIT_HEADER + "yes,1,7,morning,monday,workday,unknown,free,sunny,Spain,3\n")
    with pytest.raises(DataError, match=r"train.csv:2.*'label'"):
        load_frappe_splits(tmp_path)


# ------------------------------------------------------------------------------ Criteo


def criteo_line(label="1", ints=None, cats=None) -> str:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else ["68fd1e64"] * 26
    return "\t".join([label, *ints, *cats]) + "\n"


def test_criteo_values_and_nulls(tmp_path):
    ints = ["", "-1", *[str(i) for i in range(11)]]
    cats = ["", "FFFFFFFF", "0000000a", *["05db9164"] * 23]
    path = write(tmp_path / "day_0", criteo_line("0", ints, cats) + criteo_line())
    data = load_criteo(path)
    assert (data.name, data.kind) == ("criteo-day_0", "ctr")
    assert data.sparse == [f"C{i}" for i in range(1, 27)] and data.dense == [f"I{i}" for i in range(1, 14)]
    table = pa.concat_tables(list(data.chunks))
    assert table.column_names == list(CRITEO_COLUMNS)
    assert table.schema.field("I1").type == pa.float32() and table.schema.field("C1").type == pa.int64()
    first = table.to_pylist()[0]
    assert first["label"] == 0.0 and first["I1"] is None and first["I2"] == -1.0 and first["I3"] == 0.0
    assert first["C1"] is None and first["C2"] == 0xFFFFFFFF and first["C3"] == 10 and first["C4"] == 0x05DB9164
    assert table.column("C1").to_pylist()[1] == 0x68FD1E64
    assert table.column("label").to_pylist() == [0.0, 1.0]


def test_criteo_chunks(tmp_path):
    path = write(tmp_path / "train.txt", "".join(criteo_line(str(i % 2)) for i in range(5)))
    data = load_criteo(path, chunk_rows=2)
    assert data.name == "criteo"
    assert [chunk.num_rows for chunk in data.chunks] == [2, 2, 1]


@pytest.mark.parametrize(
    "bad, field, fragment",
    [
        (criteo_line("2"), "label", "0 or 1"),
        (criteo_line("1", ints=["1.5"] + ["1"] * 12), "I1", "integer"),
        (criteo_line("1", cats=["zz000000"] + ["1"] * 25), "C1", "hexadecimal"),
        (criteo_line("1", cats=["1"] * 25), None, "expected 40"),
    ],
)
def test_criteo_bad_lines(tmp_path, bad, field, fragment):
    path = write(tmp_path / "day_1", criteo_line() * 3 + bad + criteo_line())
    with pytest.raises(DataError) as error:
        list(load_criteo(path).chunks)
    assert "day_1:4" in str(error.value) and fragment in str(error.value)
    if field:
        assert f"'{field}'" in str(error.value)
    data = load_criteo(path, on_bad_line="skip")
    assert sum(chunk.num_rows for chunk in data.chunks) == 4
    assert data.bad_lines[0].skipped == 1


def test_criteo_line_numbers_after_skipped_lines(tmp_path):
    # Line 2 has too few fields (dropped by the parser), line 5 a bad hex value: still line 5,
    # across chunk groups too (chunk_rows=1).
    text = criteo_line() + "1\t2\n" + criteo_line() * 2 + criteo_line(cats=["xyz"] * 26) + criteo_line()
    path = write(tmp_path / "day_2", text)
    data = load_criteo(path, on_bad_line="skip", chunk_rows=1)
    assert sum(chunk.num_rows for chunk in data.chunks) == 4
    counter = data.bad_lines[0]
    assert counter.skipped == 2
    assert "day_2:2" in counter.first_examples[0] and "day_2:5" in counter.first_examples[1]
    with pytest.raises(DataError, match="day_2:2"):
        list(load_criteo(path, chunk_rows=1).chunks)


def test_criteo_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="empty file"):
        load_criteo(write(tmp_path / "day_3", ""))
    with pytest.raises(DataError, match="no such file"):
        load_criteo(tmp_path / "day_4")


def test_parse_hex_lengths():
    values, bad = parse_hex(pa.array(["a", "00000010", None, "ffffffffffffffff", "12345678901234567", "g"]))
    assert values[:2].tolist() == [10, 16] and values[3] == -1
    assert bad.tolist() == [False, False, False, False, True, True]


# ------------------------------------------------------------------------------ generic events


def test_events_csv(tmp_path):
    path = write(
        tmp_path / "clicks.csv",
        "uid,sku,ts,country,price,clicked,ignored\n"
        "alice,10,100,fr,1.5,1,a\n"
        "bob,11,200,de,,0,b\n"
        '"alice",12,300.0,fr,2,1,c\n',
    )
    data = load_events(
        path, user_column="uid", item_column="sku", time_column="ts",
        sparse=["country"], dense=["price"], labels=["clicked"],
    )  # fmt: skip
    assert (data.name, data.kind, data.sparse, data.dense, data.labels) == (
        "clicks", "events", ["country"], ["price"], ["clicked"]
    )  # fmt: skip
    table = data.chunks[0]
    assert table.column_names == ["user_id", "item_id", "timestamp", "country", "price", "clicked"]
    expected_users = hash_array(pa.array(["alice", "bob", "alice"]), "user_id").tolist()
    assert table.column("user_id").to_pylist() == expected_users
    assert table.column("item_id").to_pylist() == [10, 11, 12]  # integers kept as they are
    assert table.column("timestamp").to_pylist() == [100, 200, 300]
    assert table.schema.field("timestamp").type == pa.int64()
    assert table.column("price").to_pylist() == [1.5, None, 2.0]
    assert table.schema.field("clicked").type == pa.float32()


def test_events_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": [5, 6], "item_id": ["a", "b"], "timestamp": [1, 2], "y": [0.5, 1.0]}), path)
    table = load_events(path, labels=["y"]).chunks[0]
    assert table.column("user_id").to_pylist() == [5, 6]
    assert table.column("item_id").to_pylist() == hash_array(pa.array(["a", "b"]), "item_id").tolist()


def test_events_missing_column(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(DataError) as error:
        load_events(path, sparse=["country"])
    assert "country" in str(error.value) and "item_id" in str(error.value)
    parquet = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "timestamp": [3]}), parquet)
    with pytest.raises(DataError, match=r"clicked.*timestamp"):
        load_events(parquet, labels=["clicked"])


def test_events_labels_must_be_numeric(tmp_path):
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp,clicked\n1,2,3,1\n1,3,4,yes\n")
    with pytest.raises(DataError, match=r"e.csv:3.*'clicked'"):
        load_events(path, labels=["clicked"])
    parquet = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "timestamp": [3], "clicked": ["yes"]}), parquet)
    with pytest.raises(DataError, match="'clicked'"):
        load_events(parquet, labels=["clicked"])


def test_events_bad_timestamps(tmp_path):
    with pytest.raises(DataError, match=r"a.csv:3.*non-negative"):
        load_events(write(tmp_path / "a.csv", "user_id,item_id,timestamp\n1,2,3\n1,2,-3\n"))
    with pytest.raises(DataError, match=r"b.csv:2.*whole"):
        load_events(write(tmp_path / "b.csv", "user_id,item_id,timestamp\n1,2,3.5\n1,2,4\n"))
    with pytest.raises(DataError, match=r"c.csv:2.*'timestamp'"):
        load_events(write(tmp_path / "c.csv", "user_id,item_id,timestamp\n1,2,\n"))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [1.0, 2.5]}), parquet)
    with pytest.raises(DataError, match="'timestamp'"):
        load_events(parquet)
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [1, -2]}), parquet)
    with pytest.raises(DataError, match="non-negative"):
        load_events(parquet)


def test_events_skip_and_empty(tmp_path):
    path = write(tmp_path / "e.tsv", "user_id\titem_id\ttimestamp\n1\t2\t3\n1\t2\n\n4\t5\t6\n")
    data = load_events(path, delimiter="\t", on_bad_line="skip")
    assert data.chunks[0].column("user_id").to_pylist() == [1, 4]
    assert data.bad_lines[0].skipped == 1 and "e.tsv:3" in data.bad_lines[0].first_examples[0]
    with pytest.raises(DataError, match=r"e.tsv:3.*expected 3 fields"):
        load_events(path, delimiter="\t")
    with pytest.raises(DataError, match="empty file"):
        load_events(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match="no events"):
        load_events(write(tmp_path / "header.csv", "user_id,item_id,timestamp\n"))


def test_line_numbers_with_blank_lines_and_many_skips(tmp_path):
    # Blank lines and lines dropped by the parser must not shift the line numbers of later rows.
    text = "1\t2\t3\t100\n\n1\t2\n\n1\t2\t3\n5\t6\t1\t-1\n"
    data = load_movielens(ml100k(tmp_path, text), on_bad_line="skip")
    counter = next(c for c in data.bad_lines if str(c.path).endswith("u.data"))
    assert counter.skipped == 3
    assert [e.split(":")[1].split(",")[0] for e in counter.first_examples] == ["3", "5", "6"]
    assert np.array_equal(data.chunks[0].column("user_id").to_numpy(), [1])
