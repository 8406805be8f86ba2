"""Tests for terarec.data.prepare.write_dataset and the checks of terarec.data.schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import terarec.data.prepare as prepare
from terarec.data import schema
from terarec.data.errors import DataError
from terarec.data.prepare import write_dataset
from terarec.data.schema import DatasetMeta, check_events_table
from terarec.data.sources.base import SourceData
from terarec.data.splits import SplitConfig, leave_one_out, random_split, time_cutoffs, time_split

# ----------------------------------------------------------------------------- helpers


def events_table(num_users: int = 12, seed: int = 0) -> pa.Table:
    """Shuffled events with repeated timestamps within users and a ``seq`` column (source order)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 9, size=num_users)
    users = np.repeat(np.arange(num_users) * 10 + 5, counts)  # sparse, non-contiguous ids
    n = users.size
    timestamps = rng.integers(0, 6, size=n) * 100  # many ties
    items = rng.integers(0, 15, size=n)
    order = rng.permutation(n)
    return pa.table(
        {
            "user_id": pa.array(users[order], pa.int64()),
            "item_id": pa.array(items[order], pa.int64()),
            "timestamp": pa.array(timestamps[order], pa.int64()),
            "seq": pa.array(np.arange(n), pa.int64()),
            "click": pa.array(rng.integers(0, 2, size=n).astype(np.float32)),
        }
    )


def source(table: pa.Table, kind: str = "events", chunk_rows: int | None = None, **kwargs) -> SourceData:
    chunk_rows = chunk_rows or max(table.num_rows, 1)
    chunks = [table.slice(i, chunk_rows) for i in range(0, table.num_rows, chunk_rows)]
    defaults = {"sparse": ["user_id", "item_id"], "labels": ["click"]}
    defaults.update(kwargs)
    return SourceData(name="fixture", source="test", kind=kind, chunks=chunks, **defaults)


def read_all(folder: Path) -> pa.Table:
    meta = DatasetMeta.load(folder)
    return pa.concat_tables([pq.read_table(folder / part) for part in meta.parts])


def ctr_table(n: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "row": pa.array(np.arange(n), pa.int64()),
            "item_id": pa.array(rng.integers(0, 20, n), pa.int64()),
            "device": pa.array(rng.choice(["ios", "android"], n)),
            "price": pa.array(rng.random(n).astype(np.float32)),
            "click": pa.array(rng.integers(0, 2, n).astype(np.float32)),
        }
    )


# ----------------------------------------------------------------------------- events layout


def test_unsorted_events_get_sorted_with_stable_ties(tmp_path: Path) -> None:
    table = events_table()
    meta = write_dataset(source(table, chunk_rows=7), tmp_path / "ds", progress=False)
    out = read_all(tmp_path / "ds")
    assert out.num_rows == table.num_rows == meta.num_rows
    # Expected: a stable sort of the source rows by (user, timestamp).
    rows = list(zip(table["user_id"].to_pylist(), table["timestamp"].to_pylist(), table["seq"].to_pylist()))
    expected = sorted(rows, key=lambda r: (r[0], r[1]))
    assert list(zip(out["user_id"].to_pylist(), out["timestamp"].to_pylist(), out["seq"].to_pylist())) == expected
    # The split column is leave-one-out over the sorted rows.
    assert out["split"].type == pa.int8()
    assert out["split"].to_pylist() == leave_one_out(out["user_id"].to_numpy()).tolist()
    # Ties really were exercised.
    keys = list(zip(out["user_id"].to_pylist(), out["timestamp"].to_pylist()))
    assert len(set(keys)) < len(keys)


def test_each_part_holds_whole_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "ROWS_PER_PART", 5)
    table = events_table(num_users=20, seed=1)
    meta = write_dataset(source(table), tmp_path / "ds", progress=False)
    assert len(meta.parts) > 3
    seen: set[int] = set()
    total = 0
    for part in meta.parts:
        users = pq.read_table(tmp_path / "ds" / part, columns=["user_id"]).column(0).to_numpy()
        assert np.all(users[1:] >= users[:-1])
        mine = set(users.tolist())
        assert not mine & seen, f"{part} shares a user with an earlier part"
        seen |= mine
        total += users.size
    assert total == table.num_rows
    assert seen == set(table["user_id"].to_pylist())


def test_split_counts_and_stats_match_the_data(tmp_path: Path) -> None:
    table = events_table(num_users=15, seed=2)
    meta = write_dataset(source(table), tmp_path / "ds", progress=False)
    out = read_all(tmp_path / "ds")
    counts = np.bincount(out["split"].to_numpy(), minlength=3)
    on_disk = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert on_disk["split"]["counts"] == {"train": counts[0], "valid": counts[1], "test": counts[2]}
    assert on_disk["split"]["method"] == "leave_one_out"
    assert on_disk["num_rows"] == table.num_rows
    assert on_disk["stats"]["num_users"] == len(set(table["user_id"].to_pylist())) == 15
    assert on_disk["stats"]["num_items"] == len(set(table["item_id"].to_pylist()))
    assert on_disk["columns"]["split"] == "int8"
    assert on_disk["sparse"] == ["user_id", "item_id"] and on_disk["labels"] == ["click"]
    # DatasetMeta round trip.
    assert DatasetMeta.load(tmp_path / "ds") == meta


def test_sorted_by_user_source_is_streamed(tmp_path: Path) -> None:
    table = events_table(num_users=10, seed=3)
    table = table.take(np.lexsort((table["timestamp"].to_numpy(), table["user_id"].to_numpy())))
    users = table["user_id"].to_numpy()
    # Chunks of whole users.
    bounds = [0] + [i for i in range(1, users.size) if users[i] != users[i - 1] and i % 3 == 0] + [users.size]
    chunks = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
    data = SourceData("fixture", "test", "events", chunks, sorted_by_user=True)
    meta = write_dataset(data, tmp_path / "ds", progress=False)
    assert len(meta.parts) == len(chunks)
    assert read_all(tmp_path / "ds")["seq"].to_pylist() == table["seq"].to_pylist()


def test_sorted_by_user_source_with_user_across_chunks_is_an_error(tmp_path: Path) -> None:
    table = events_table(num_users=3, seed=3)
    table = table.take(np.lexsort((table["timestamp"].to_numpy(), table["user_id"].to_numpy())))
    first_user_rows = int((table["user_id"].to_numpy() == table["user_id"][0].as_py()).sum())
    if first_user_rows < 2:
        table = pa.concat_tables([table.slice(0, 1), table])
        first_user_rows += 1
    chunks = [table.slice(0, 1), table.slice(1)]
    with pytest.raises(DataError, match="continues across chunks"):
        write_dataset(SourceData("f", "t", "events", chunks, sorted_by_user=True), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.tmp").exists()


# ----------------------------------------------------------------------------- split methods


def test_time_split_two_pass_writes_cutoffs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "ROWS_PER_PART", 6)
    rng = np.random.default_rng(4)
    table = events_table(num_users=12, seed=4)
    table = table.set_column(2, "timestamp", pa.array(rng.permutation(table.num_rows) * 10, pa.int64()))
    split = SplitConfig(method="time", valid_fraction=0.2, test_fraction=0.2)
    meta = write_dataset(source(table), tmp_path / "ds", split, progress=False)
    assert len(meta.parts) > 1
    expected_cutoffs = time_cutoffs(table["timestamp"].to_numpy(), 0.2, 0.2)
    assert meta.split["cutoffs"] == expected_cutoffs
    assert meta.split["method"] == "time"
    assert meta.split["valid_fraction"] == 0.2 and meta.split["test_fraction"] == 0.2
    on_disk = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert on_disk["split"]["cutoffs"] == expected_cutoffs
    out = read_all(tmp_path / "ds")
    assert out["split"].to_pylist() == time_split(out["timestamp"].to_numpy(), expected_cutoffs).tolist()
    counts = np.bincount(out["split"].to_numpy(), minlength=3)
    assert meta.split["counts"] == {"train": counts[0], "valid": counts[1], "test": counts[2]}
    assert out.schema.field("split").type == pa.int8()
    # Still sorted by (user, time) after the second pass.
    keys = list(zip(out["user_id"].to_pylist(), out["timestamp"].to_pylist()))
    assert keys == sorted(keys)


def test_time_split_config_is_not_mutated_for_the_next_dataset(tmp_path: Path) -> None:
    split = SplitConfig(method="time", valid_fraction=0.2, test_fraction=0.2)
    first = events_table(num_users=8, seed=5)
    write_dataset(source(first), tmp_path / "a", split, progress=False)
    second = events_table(num_users=8, seed=6)
    second = second.set_column(2, "timestamp", pa.array(second["timestamp"].to_numpy() + 10_000, pa.int64()))
    meta = write_dataset(source(second), tmp_path / "b", split, progress=False)
    # The second dataset's cut-offs come from its own timestamps, not the first one's.
    assert meta.split["cutoffs"] == time_cutoffs(second["timestamp"].to_numpy(), 0.2, 0.2)


def test_time_split_with_given_cutoffs_is_one_pass(tmp_path: Path) -> None:
    table = events_table(num_users=6, seed=7)
    meta = write_dataset(source(table), tmp_path / "ds", SplitConfig(method="time", cutoffs=[200, 400]), progress=False)
    out = read_all(tmp_path / "ds")
    assert meta.split["cutoffs"] == [200, 400]
    assert out["split"].to_pylist() == time_split(out["timestamp"].to_numpy(), [200, 400]).tolist()


def test_ctr_random_split_over_chunks_and_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "ROWS_PER_PART", 40)
    table = ctr_table(300)
    split = SplitConfig(method="random", valid_fraction=0.2, test_fraction=0.1, seed=11)
    meta = write_dataset(
        source(table, kind="ctr", chunk_rows=70, sparse=["item_id", "device"], dense=["price"]),
        tmp_path / "ds",
        split,
        progress=False,
    )
    assert len(meta.parts) == 9  # 4 chunks of 70 -> 2 parts of <= 40 each, then one chunk of 20
    out = read_all(tmp_path / "ds")
    assert out["row"].to_pylist() == list(range(300))  # CTR rows keep their order
    expected = random_split(300, 0.2, 0.1, seed=11)
    assert out["split"].to_pylist() == expected.tolist()
    assert meta.split["seed"] == 11 and meta.split["method"] == "random"
    counts = np.bincount(expected, minlength=3)
    assert meta.split["counts"] == {"train": counts[0], "valid": counts[1], "test": counts[2]}
    assert meta.kind == "ctr" and meta.dense == ["price"]
    assert meta.stats["num_items"] == len(set(table["item_id"].to_pylist()))
    assert "num_users" not in meta.stats


def test_ctr_default_split_is_random(tmp_path: Path) -> None:
    meta = write_dataset(source(ctr_table(50), kind="ctr"), tmp_path / "ds", progress=False)
    assert meta.split["method"] == "random"


def test_leave_one_out_on_ctr_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="leave_one_out"):
        write_dataset(source(ctr_table(30), kind="ctr"), tmp_path / "ds", SplitConfig("leave_one_out"), progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.tmp").exists()


def test_given_split_is_kept(tmp_path: Path) -> None:
    table = ctr_table(60)
    codes = np.array([2, 0, 1] * 20, dtype=np.int8)
    table = table.append_column("split", pa.array(codes, pa.int8()))
    meta = write_dataset(source(table, kind="ctr", chunk_rows=25, has_split=True), tmp_path / "ds", progress=False)
    assert meta.split["method"] == "given"
    assert read_all(tmp_path / "ds")["split"].to_pylist() == codes.tolist()
    assert meta.split["counts"] == {"train": 20, "valid": 20, "test": 20}


def test_given_split_conflicts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no split of its own"):
        write_dataset(source(ctr_table(10), kind="ctr"), tmp_path / "a", SplitConfig("given"), progress=False)
    table = ctr_table(10).append_column("split", pa.array([0] * 10, pa.int8()))
    with pytest.raises(DataError, match="its own split"):
        write_dataset(source(table, kind="ctr", has_split=True), tmp_path / "b", SplitConfig("random"), progress=False)
    # A source that claims a split but a chunk lacks the column.
    with pytest.raises(DataError, match="no split column"):
        write_dataset(source(ctr_table(10), kind="ctr", has_split=True), tmp_path / "c", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- folder safety


def test_overwrite_refused_without_flag(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_dataset(source(events_table(5, seed=0)), out, progress=False)
    before = (out / "dataset.yaml").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(source(events_table(7, seed=1)), out, progress=False)
    assert (out / "dataset.yaml").read_text() == before
    meta = write_dataset(source(events_table(7, seed=1)), out, overwrite=True, progress=False)
    assert meta.stats["num_users"] == 7
    assert DatasetMeta.load(out).stats["num_users"] == 7
    assert not (tmp_path / "ds.tmp").exists()


def _failing_chunks(table: pa.Table, fail_after: int):
    for i in range(0, table.num_rows, 10):
        if i // 10 == fail_after:
            raise RuntimeError("source broke mid-way")
        yield table.slice(i, 10)


@pytest.mark.parametrize("kind", ["events_unsorted", "events_sorted", "ctr"])
def test_failing_source_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(prepare, "ROWS_PER_PART", 10)
    if kind == "ctr":
        table, data_kind, sorted_by_user = ctr_table(100), "ctr", False
    else:
        table, data_kind = pa.table({"user_id": np.arange(100), "item_id": np.arange(100), "timestamp": np.arange(100)}), "events"
        sorted_by_user = kind == "events_sorted"
    data = SourceData("broken", "test", data_kind, _failing_chunks(table, fail_after=3), sorted_by_user=sorted_by_user)
    with pytest.raises(RuntimeError, match="mid-way"):
        write_dataset(data, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    assert not (tmp_path / "ds.tmp").exists()
    assert list(tmp_path.iterdir()) == []


def test_failing_source_keeps_the_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    meta = write_dataset(source(events_table(5)), out, progress=False)
    table = pa.table({"user_id": np.arange(50), "item_id": np.arange(50), "timestamp": np.arange(50)})
    data = SourceData("broken", "test", "events", _failing_chunks(table, fail_after=2), sorted_by_user=True)
    with pytest.raises(RuntimeError):
        write_dataset(data, out, overwrite=True, progress=False)
    assert DatasetMeta.load(out) == meta
    assert read_all(out).num_rows == meta.num_rows
    assert not (tmp_path / "ds.tmp").exists()


def test_empty_source_is_an_error(tmp_path: Path) -> None:
    empty = pa.table({"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64()), "timestamp": pa.array([], pa.int64())})
    with pytest.raises(DataError, match="no rows"):
        write_dataset(SourceData("e", "t", "events", [empty]), tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_side_tables_are_written(tmp_path: Path) -> None:
    items = pa.table({"item_id": [1, 2], "name": ["a", "b"]})
    data = source(events_table(4), side_tables={"items": items})
    meta = write_dataset(data, tmp_path / "ds", progress=False)
    assert meta.side_tables == {"items": "items.parquet"}
    assert pq.read_table(tmp_path / "ds" / "items.parquet").equals(items)


# ----------------------------------------------------------------------------- check_events_table


def _events(**columns) -> pa.Table:
    base = {"user_id": pa.array([1, 2, 3]), "item_id": pa.array([1, 2, 3]), "timestamp": pa.array([0, 10, 20])}
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    "columns, field_name, reason",
    [
        ({"item_id": None}, "item_id", "missing required column"),
        ({"timestamp": None}, "timestamp", "missing required column"),
        ({"timestamp": pa.array([0, -5, 20])}, "timestamp", "non-negative, row 1"),
        ({"timestamp": pa.array([0.0, 1.5, 2.0])}, "timestamp", "row 1 has 1.5"),
        ({"timestamp": pa.array([0.0, float("nan"), 2.0])}, "timestamp", "row 1 has nan"),
        ({"timestamp": pa.array([0.0, float("inf"), 2.0])}, "timestamp", "do not fit in int64"),
        ({"item_id": pa.array([1, 2**63 + 5, 3], pa.uint64())}, "item_id", "do not fit in int64"),
        ({"user_id": pa.array([1.0, 2.5, 3.0])}, "user_id", "expected integers, row 1"),
        ({"user_id": pa.array([1, None, 3], pa.int64())}, "user_id", "null value in row 1"),
        ({"timestamp": pa.array([0, 1, None], pa.int64())}, "timestamp", "null value in row 2"),
        ({"item_id": pa.array(["a", "b", "c"])}, "item_id", "integer column"),
    ],
)
def test_check_events_table_errors_name_the_field(columns: dict, field_name: str, reason: str) -> None:
    with pytest.raises(DataError) as error:
        check_events_table(_events(**columns), path="events.csv")
    assert error.value.field == field_name
    assert f"field '{field_name}'" in str(error.value)
    assert reason in str(error.value)
    assert "events.csv" in str(error.value)


def test_check_events_table_casts_to_int64() -> None:
    table = _events(user_id=pa.array([1, 2, 3], pa.int32()), timestamp=pa.array([0.0, 5.0, 7.0]))
    out = check_events_table(table)
    for name in ("user_id", "item_id", "timestamp"):
        assert out.schema.field(name).type == pa.int64()
    assert out["timestamp"].to_pylist() == [0, 5, 7]
    assert out.column_names == table.column_names


def test_bad_events_in_a_source_are_reported_by_write_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="timestamp"):
        write_dataset(SourceData("bad", "t", "events", [_events(timestamp=pa.array([0, -1, 3]))]), tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- DatasetMeta.load


def test_dataset_meta_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset.yaml is missing"):
        DatasetMeta.load(tmp_path)


def test_dataset_meta_load_unknown_key(tmp_path: Path) -> None:
    meta = DatasetMeta(name="x", source="t", kind="events", num_rows=1)
    meta.save(tmp_path)
    raw = yaml.safe_load((tmp_path / "dataset.yaml").read_text())
    raw["num_rowz"] = 3
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="num_rowz") as error:
        DatasetMeta.load(tmp_path)
    assert "dataset.yaml" in str(error.value)


def test_dataset_meta_load_newer_format(tmp_path: Path) -> None:
    DatasetMeta(name="x", source="t", kind="events", num_rows=1, format_version=schema.FORMAT_VERSION + 1).save(tmp_path)
    with pytest.raises(DataError, match="upgrade"):
        DatasetMeta.load(tmp_path)


def test_dataset_meta_save_round_trip(tmp_path: Path) -> None:
    meta = DatasetMeta(name="x", source="t", kind="ctr", num_rows=4, sparse=["a"], split={"counts": {"train": 4}})
    meta.save(tmp_path)
    assert DatasetMeta.load(tmp_path) == meta
    assert not list(tmp_path.glob("*.tmp"))
