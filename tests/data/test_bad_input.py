"""Bad input never loses data and never crashes with a traceback: one test per hole of issue 13."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from terarec.cli import app
from terarec.data.errors import DataError
from terarec.data.prepare import write_dataset
from terarec.data.schema import DATASET_MARKER, DatasetMeta
from terarec.data.sources import check_options, source_options, SOURCES
from terarec.data.sources.amazon import load_amazon
from terarec.data.sources.base import SourceData
from terarec.data.sources.criteo import load_criteo
from terarec.data.sources.events import load_events
from terarec.data.sources.movielens import load_movielens

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def prepare(*words: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "prepare", *words])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.replace("\n", "")


def events_csv(path: Path, rows: int = 30, extra: str = "") -> Path:
    header = "user_id,item_id,timestamp" + (",note" if extra else "")
    lines = [f"{row % 7},{row % 5},{1000 + row}" + (f",{extra}" if extra else "") for row in range(rows)]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def rows_of(folder: Path) -> int:
    return DatasetMeta.load(folder).num_rows


# ------------------------------------------------------------------ 1: --overwrite


def test_overwrite_leaves_a_folder_terarec_did_not_write(tmp_path: Path) -> None:
    source = events_csv(tmp_path / "clicks.csv")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, output = prepare("events", str(source), "--out", str(mine), "--overwrite")
    assert code == 2
    assert f"refusing to overwrite {mine}" in output and "marker" in output
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_overwrite_refuses_a_dataset_folder_holding_other_files(tmp_path: Path) -> None:
    source = events_csv(tmp_path / "clicks.csv")
    out = tmp_path / "ds"
    assert prepare("events", str(source), "--out", str(out))[0] == 0
    assert (out / DATASET_MARKER).is_file()
    (out / "notes.txt").write_text("keep me")
    code, output = prepare("events", str(source), "--out", str(out), "--overwrite")
    assert code == 2 and "notes.txt" in output
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_dataset_terarec_wrote_and_an_empty_folder(tmp_path: Path) -> None:
    source = events_csv(tmp_path / "clicks.csv", rows=30)
    out = tmp_path / "ds"
    assert prepare("events", str(source), "--out", str(out))[0] == 0
    events_csv(source, rows=40)
    assert prepare("events", str(source), "--out", str(out), "--overwrite")[0] == 0
    assert rows_of(out) == 40
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare("events", str(source), "--out", str(empty), "--overwrite")[0] == 0
    assert rows_of(empty) == 40


def test_a_folder_named_like_the_old_temporary_one_is_not_touched(tmp_path: Path) -> None:
    source = events_csv(tmp_path / "clicks.csv")
    neighbour = tmp_path / "ds.tmp"
    neighbour.mkdir()
    (neighbour / "keep.txt").write_text("x")
    assert prepare("events", str(source), "--out", str(tmp_path / "ds"))[0] == 0
    assert (neighbour / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.csv", "ds", "ds.tmp"]


# ------------------------------------------------------------------ 2: an unclosed quote


def test_unclosed_quote_is_named_and_skipping_keeps_every_other_row(tmp_path: Path) -> None:
    path = events_csv(tmp_path / "clicks.csv", rows=30)
    lines = path.read_text().splitlines()
    lines[3] = '2,"3,1002'
    path.write_text("\n".join(lines) + "\n")
    code, output = prepare("events", str(path), "--out", str(tmp_path / "a"))
    assert code == 2 and "clicks.csv:4" in output and "unclosed quote" in output
    code, output = prepare("events", str(path), "--out", str(tmp_path / "b"), "--on-bad-line", "skip")
    assert code == 0, output
    meta = DatasetMeta.load(tmp_path / "b")
    assert (meta.num_rows, meta.stats["bad_lines_skipped"]) == (29, 1)


def test_unclosed_quote_in_a_column_left_out_does_not_swallow_rows(tmp_path: Path) -> None:
    # The quote swallows every later line into one 4-field row whose 'note' is not read: the
    # row counts look right to the parser, so only counting the lines finds it.
    path = events_csv(tmp_path / "clicks.csv", rows=30, extra="ok")
    lines = path.read_text().splitlines()
    lines[2] = '1,1,1001,"unclosed'
    path.write_text("\n".join(lines) + "\n")
    data = load_events(path, on_bad_line="skip")
    assert data.chunks[0].num_rows == 29
    assert data.bad_lines[0].skipped == 1


# ------------------------------------------------------------------ 3: NaN and infinity


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("column", ["click", "price"])
def test_non_finite_labels_and_dense_values_are_bad_lines(tmp_path: Path, value: str, column: str) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id,timestamp,click,price\n1,2,3,1,0.5\n1,3,4,0,1.5\n2,2,5,1,2.0\n")
    text = path.read_text().splitlines()
    fields = text[2].split(",")
    fields[3 if column == "click" else 4] = value
    text[2] = ",".join(fields)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=f"clicks.csv:3, field '{column}': expected a finite number"):
        load_events(path, labels=["click"], dense=["price"])
    data = load_events(path, labels=["click"], dense=["price"], on_bad_line="skip")
    assert data.chunks[0].num_rows == 2


def test_non_finite_values_in_parquet_and_movielens_are_refused(tmp_path: Path) -> None:
    parquet = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "timestamp": [5, 6], "y": [1.0, np.nan]}), parquet)
    with pytest.raises(DataError, match="field 'y': expected finite numbers, row 1"):
        load_events(parquet, labels=["y"])
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t5\t100\n1\t3\tnan\t101\n")
    with pytest.raises(DataError, match="u.data:2, field 'rating': expected a finite number"):
        load_movielens(folder)


def test_write_dataset_refuses_non_finite_labels_from_any_source(tmp_path: Path) -> None:
    table = pa.table({"label": pa.array([1.0, np.inf], pa.float32()), "f": [1, 2]})
    data = SourceData("x", "test", "ctr", [table], sparse=["f"], labels=["label"])
    with pytest.raises(DataError, match="field 'label': expected finite numbers, row 1"):
        write_dataset(data, tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 4: binary files


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list:
    """What reaches sys.unraisablehook: pyarrow's "Exception ignored" noise lands there."""
    caught: list = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)
    return caught


BINARY = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))


@pytest.mark.parametrize(
    "source, name",
    [("events", "clicks.csv"), ("criteo", "day_0"), ("amazon", "Beauty.txt"), ("movielens", "u.data"),
     ("frappe", "frappe.csv")],
)
def test_binary_file_is_a_clear_error_without_noise(tmp_path: Path, unraisable: list, source: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BINARY)
    for policy in ("error", "skip"):
        code, output = prepare(source, str(path), "--out", str(tmp_path / f"out-{policy}"), "--on-bad-line", policy)
        assert code == 2 and "error:" in output, output
        assert name in output
    assert unraisable == []


def test_criteo_binary_line_is_named_and_skippable(tmp_path: Path, unraisable: list) -> None:
    good = "\t".join(["1"] + ["3"] * 13 + ["0000000a"] * 26)
    path = tmp_path / "day_1"
    path.write_bytes((good + "\n").encode() * 3 + BINARY[:300].replace(b"\n", b"").replace(b"\r", b"") + b"\n" + (good + "\n").encode())
    with pytest.raises(DataError, match="day_1:4"):
        list(load_criteo(path).chunks)
    data = load_criteo(path, on_bad_line="skip")
    assert sum(chunk.num_rows for chunk in data.chunks) == 4
    assert data.bad_lines[0].skipped == 1
    assert unraisable == []


# ------------------------------------------------------------------ 5: one very long line


def test_a_user_with_a_million_items_parses(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt"
    long_line = "7 " + " ".join(str(item) for item in range(1, 600_001))  # about 4 MB, beyond pyarrow's block
    path.write_text("1 2 3\n" + long_line + "\n9 4 5\n")
    data = load_amazon(path)
    assert data.chunks[0].num_rows == 2 + 600_000 + 2


def test_criteo_long_garbage_line_is_named_and_skippable(tmp_path: Path) -> None:
    good = "\t".join(["0"] + ["1"] * 13 + ["ffffffff"] * 26)
    path = tmp_path / "day_2"
    path.write_text(f"{good}\n{good}\n{'x' * 6_000_000}\n{good}\n")
    with pytest.raises(DataError, match="day_2:3: expected 40 tab-separated fields"):
        list(load_criteo(path).chunks)
    data = load_criteo(path, on_bad_line="skip", chunk_rows=1)
    assert sum(chunk.num_rows for chunk in data.chunks) == 3
    assert data.bad_lines[0].skipped == 1


# ------------------------------------------------------------------ 6: amazon format


def test_one_long_line_does_not_turn_pairs_into_sequences(tmp_path: Path) -> None:
    path = tmp_path / "Video.txt"
    path.write_text("1 10\n1 11\n2 12\n2 13 14\n3 10\n")
    with pytest.raises(DataError, match="Video.txt: cannot tell the format: line 4 has 3 tokens.*format=pairs"):
        load_amazon(path)
    data = load_amazon(path, format="pairs", on_bad_line="skip")
    assert data.chunks[0].num_rows == 4 and data.bad_lines[0].skipped == 1


def test_auto_format_reads_sequences_and_pairs(tmp_path: Path) -> None:
    sequences = tmp_path / "Beauty.txt"
    sequences.write_text("1 10 11 12\n2 12\n3 10 13\n")
    assert load_amazon(sequences).chunks[0].num_rows == 6
    pairs = tmp_path / "Video.txt"
    pairs.write_text("1 10\n1 11\n2 12\n")
    assert load_amazon(pairs).chunks[0].num_rows == 3


# ------------------------------------------------------------------ 11: a file cut mid-line


def test_a_file_without_a_final_newline_is_warned_about_naming_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t5\t880001020\n1\t3\t4\t8")  # cut inside the timestamp
    data = load_movielens(folder)
    assert data.chunks[0].num_rows == 2
    assert any("u.data:2" in warning and "line end" in warning for warning in data.bad_lines[0].warnings)
    code, output = prepare("movielens", str(folder), "--out", str(tmp_path / "out"))
    assert code == 0 and "warning:" in output and "u.data:2" in output


def test_criteo_without_a_final_newline_is_warned_about(tmp_path: Path) -> None:
    good = "\t".join(["0"] + ["1"] * 13 + ["ffffffff"] * 26)
    path = tmp_path / "day_3"
    path.write_text(f"{good}\n{good}")
    data = load_criteo(path)
    assert sum(chunk.num_rows for chunk in data.chunks) == 2
    assert [w for w in data.bad_lines[0].warnings if "day_3:2" in w]


def test_a_file_with_a_final_newline_gets_no_warning(tmp_path: Path) -> None:
    path = events_csv(tmp_path / "clicks.csv")
    assert load_events(path).bad_lines[0].warnings == []


# ------------------------------------------------------------------ 12: ids beyond int64


@pytest.mark.parametrize("column, value", [("user_id", "9223372036854775808"), ("item_id", "-9223372036854775809"),
                                           ("timestamp", "18446744073709551616")])
def test_values_beyond_int64_name_the_line_and_can_be_skipped(tmp_path: Path, column: str, value: str) -> None:
    path = events_csv(tmp_path / "clicks.csv", rows=10)
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[["user_id", "item_id", "timestamp"].index(column)] = value
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"clicks.csv:6, field '{column}'") as error:
        load_events(path)
    assert "Float" not in str(error.value)
    data = load_events(path, on_bad_line="skip")
    assert data.chunks[0].num_rows == 9 and data.bad_lines[0].skipped == 1


def test_movielens_id_beyond_int64_names_the_line(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::2::5::100\n9223372036854775808::3::4::101\n")
    with pytest.raises(DataError, match="ratings.dat:2, field 'user_id': expected an integer"):
        load_movielens(folder)


# ------------------------------------------------------------------ 13: loader options


def test_mistyped_option_names_the_nearest(tmp_path: Path) -> None:
    code, output = prepare("amazon", str(tmp_path), "--out", str(tmp_path / "o"), "-o", "fromat=pairs")
    assert code == 2 and "no option 'fromat'; did you mean 'format'?" in output


def test_one_column_name_is_a_list_of_one(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id,timestamp,country\n1,2,3,fr\n1,3,4,de\n2,2,5,fr\n")
    assert check_options("events", {"sparse": "country"}) == {"sparse": ["country"]}
    out = tmp_path / "out"
    assert prepare("events", str(path), "--out", str(out), "-o", "sparse=country")[0] == 0
    assert DatasetMeta.load(out).sparse == ["country"]


def test_option_of_the_wrong_type_names_it() -> None:
    with pytest.raises(ValueError, match="negatives: expected an integer, got 'two'"):
        check_options("frappe", {"negatives": "two"})


def test_every_option_of_every_source_is_documented() -> None:
    help_text = runner.invoke(app, ["data", "prepare", "--help"], env={"COLUMNS": "200"}).output
    docs = (ROOT / "docs" / "data.md").read_text()
    for name in SOURCES:
        for option in source_options(name):
            if option == "on_bad_line":
                continue  # --on-bad-line
            assert option in help_text, (name, option)
            assert f"`{option}" in docs, (name, option)


# ------------------------------------------------------------------ 14: train --help


def test_train_help_names_a_config_that_exists() -> None:
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    named = [word.rstrip(".,") for word in help_text.split() if word.startswith("configs/")]
    assert named
    for path in named:
        assert (ROOT / path).is_file(), path
