"""Tests for terarec.data.vocabularies.vocabulary_ids, the one vocabulary builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import terarec.data.prepare as prepare
from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.data.vocabularies import vocabulary_ids
from terarec.features.hashing import hash_array
from terarec.features.vocabulary import DistinctIds


def _dataset(folder: Path, monkeypatch) -> pa.Table:
    rng = np.random.default_rng(0)
    n = 600
    table = pa.table({
        "user_id": pa.array(np.repeat(np.arange(60), 10), pa.int64()),
        "item_id": pa.array(rng.integers(0, 300, n), pa.int64()),
        "timestamp": pa.array(np.tile(np.arange(10), 60), pa.int64()),
        "genre": pa.array([None if i % 7 == 0 else f"g{i % 5}" for i in range(n)], pa.string()),
    })
    monkeypatch.setattr(prepare, "ROWS_PER_ROW_GROUP", 64)  # many row groups: the pass streams
    monkeypatch.setattr(prepare, "ROWS_PER_PART", 200)
    write_dataset(SourceData(name="t", source="test", kind="events", chunks=[table]), folder, progress=False)
    return pa.concat_tables(pq.read_table(folder / part) for part in sorted(p.name for p in folder.glob("part-*")))


def test_fits_each_key_over_one_split_or_every_row(tmp_path: Path, monkeypatch) -> None:
    rows = _dataset(tmp_path / "d", monkeypatch)
    train = rows.filter(pc.equal(rows["split"], 0))
    vocabularies = vocabulary_ids(tmp_path / "d", ["item_id", "genre"])
    for key in ("item_id", "genre"):
        expected = np.unique(hash_array(train[key], key))
        np.testing.assert_array_equal(vocabularies[key], expected)
    assert vocabularies["genre"].size == 5 + 1  # g0..g4 and the null id
    every = vocabulary_ids(tmp_path / "d", ["item_id"], split=None)["item_id"]
    np.testing.assert_array_equal(every, np.unique(hash_array(rows["item_id"], "item_id")))
    assert every.size > vocabularies["item_id"].size


def test_ids_of_decides_what_a_key_holds(tmp_path: Path, monkeypatch) -> None:
    rows = _dataset(tmp_path / "d", monkeypatch)
    doubled = vocabulary_ids(
        tmp_path / "d", ["twice"], split="test", columns=["item_id"],
        ids_of=lambda table: {"twice": table["item_id"].to_numpy() * 2},
    )["twice"]
    test_items = rows.filter(pc.equal(rows["split"], 2))["item_id"].to_numpy()
    np.testing.assert_array_equal(doubled, np.unique(test_items * 2))


def test_distinct_ids_merges_pending_batches() -> None:
    seen = DistinctIds()
    rng = np.random.default_rng(1)
    batches = [rng.integers(-(2**62), 2**62, 1000) for _ in range(5)] + [np.array([7, 7, 7])]
    for batch in batches:
        seen.update(batch)
    np.testing.assert_array_equal(seen.values(), np.unique(np.concatenate(batches)))
    assert len(seen) == np.unique(np.concatenate(batches)).size
