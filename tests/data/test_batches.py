"""Tests for terarec.data.batches: CTR and sequence batches streamed from prepared datasets."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

import terarec.data.prepare as prepare
from terarec.data.batches import make_loader
from terarec.data.ctr_dataset import CTRDataset, FeatureSpec, ctr_batch_from_table
from terarec.data.sequence_dataset import SequenceDataset, SequenceSpec, _length_buckets
from terarec.data.errors import DataError
from terarec.data.prepare import write_dataset
from terarec.data.schema import DatasetMeta
from terarec.data.sources.base import SourceData
from terarec.data.splits import SplitConfig
from terarec.features.hashing import hash_ints, hash_strings, null_id

NUM_CTR_ROWS = 403

# ----------------------------------------------------------------------------- fixtures


def _ctr_table(n: int = NUM_CTR_ROWS) -> pa.Table:
    rng = np.random.default_rng(0)
    tags = [None if i % 17 == 0 else list(rng.integers(0, 9, size=i % 4)) for i in range(n)]
    price = rng.normal(0, 50, size=n).astype(np.float32)
    return pa.table(
        {
            # One row per "user" so every row can be identified in a batch by its user id.
            "user_id": pa.array(np.arange(n) + 1000, pa.int64()),
            "item_id": pa.array(rng.integers(0, 30, n), pa.int64()),
            "device": pa.array([None if i % 11 == 0 else ("ios" if i % 3 else "web") for i in range(n)]),
            "tags": pa.array(tags, type=pa.list_(pa.int64())),
            "price": pa.array([None if i % 7 == 0 else float(p) for i, p in enumerate(price)], pa.float32()),
            "click": pa.array((np.arange(n) % 3 == 0).astype(np.float32)),
        }
    )


@pytest.fixture(scope="module")
def ctr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctr") / "ds"
    table = _ctr_table()
    data = SourceData(
        "ctr-fixture",
        "test",
        "ctr",
        [table.slice(0, 150), table.slice(150)],
        sparse=["item_id", "device", "tags"],
        dense=["price"],
        labels=["click"],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prepare, "ROWS_PER_PART", 100)
        mp.setattr(prepare, "ROWS_PER_ROW_GROUP", 16)
        write_dataset(data, folder, SplitConfig("random", 0.2, 0.2, seed=3), progress=False)
    return folder


def _split_rows(folder: Path, split_code: int) -> pa.Table:
    meta = DatasetMeta.load(folder)
    table = pa.concat_tables([pq.read_table(folder / p) for p in meta.parts])
    return table.filter(pc.equal(table["split"], split_code))


def _collect(batches) -> tuple[list[int], list[float]]:
    users, labels = [], []
    for batch in batches:
        users += batch.user_ids.tolist()
        labels += batch.labels[:, 0].tolist()
    return users, labels


# ----------------------------------------------------------------------------- CTRDataset


@pytest.mark.parametrize("split, code", [("train", 0), ("valid", 1), ("test", 2)])
def test_ctr_dataset_yields_every_row_of_the_split_once(ctr_folder: Path, split: str, code: int) -> None:
    expected = _split_rows(ctr_folder, code)
    assert expected.num_rows > 20
    ds = CTRDataset(ctr_folder, split, batch_size=32)
    assert len(DatasetMeta.load(ctr_folder).parts) > 2
    assert len(ds.units) > 10  # many row groups
    users, labels = _collect(ds)
    assert Counter(zip(users, labels)) == Counter(zip(expected["user_id"].to_pylist(), expected["click"].to_pylist()))
    assert ds.num_rows == expected.num_rows


def test_ctr_dataset_batch_sizes(ctr_folder: Path) -> None:
    ds = CTRDataset(ctr_folder, "train", batch_size=50)
    sizes = [len(b) for b in ds]
    assert sum(sizes) == ds.num_rows
    assert all(s == 50 for s in sizes[:-1]) and 0 < sizes[-1] <= 50
    assert len(ds) == len(sizes)
    dropped = CTRDataset(ctr_folder, "train", batch_size=50, drop_last=True, shuffle=True)
    sizes = [len(b) for b in dropped]
    assert sizes == [50] * (dropped.num_rows // 50) == [50] * len(dropped)


def test_ctr_dataset_shuffle_is_seeded(ctr_folder: Path) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        ds = CTRDataset(ctr_folder, "train", batch_size=16, shuffle=True, seed=seed, shuffle_row_groups=2)
        ds.set_epoch(epoch)
        return _collect(ds)[0]

    plain = _collect(CTRDataset(ctr_folder, "train", batch_size=16))[0]
    first = order(0, 0)
    assert first == order(0, 0)
    assert sorted(first) == sorted(plain)
    assert first != plain
    assert order(0, 1) != first
    assert sorted(order(0, 1)) == sorted(plain)
    assert order(1, 0) != first


def test_ctr_shuffle_mixes_rows_within_a_row_group(tmp_path: Path) -> None:
    table = _ctr_table(200)
    data = SourceData("one-group", "test", "ctr", [table], sparse=["item_id"], labels=["click"])
    write_dataset(data, tmp_path / "ds", SplitConfig("random", 0.1, 0.1, seed=0), progress=False)
    ds = CTRDataset(tmp_path / "ds", "train", batch_size=1000, shuffle=True)
    assert len(ds.units) == 1  # nothing to gain from visiting row groups in another order
    plain = _collect(CTRDataset(tmp_path / "ds", "train", batch_size=1000))[0]
    shuffled = _collect(ds)[0]
    assert shuffled != plain and sorted(shuffled) == plain


def test_ctr_batch_features(ctr_folder: Path) -> None:
    table = _split_rows(ctr_folder, 0)
    by_user = {row["user_id"]: row for row in table.to_pylist()}
    for batch in CTRDataset(ctr_folder, "train", batch_size=40):
        kjt = batch.sparse_features
        assert kjt.keys() == ["item_id", "device", "tags"]
        assert kjt.stride() == len(batch)
        rows = [by_user[u] for u in batch.user_ids.tolist()]
        # Single-valued features: one id per row, nulls -> the slot's null id.
        assert kjt["item_id"].lengths().tolist() == [1] * len(rows)
        assert kjt["item_id"].values().tolist() == hash_ints(np.array([r["item_id"] for r in rows]), "item_id").tolist()
        devices = [null_id("device") if r["device"] is None else hash_strings([r["device"]], "device")[0] for r in rows]
        assert kjt["device"].values().tolist() == [int(d) for d in devices]
        # Multi-hot: lengths are list lengths (null list -> 0), values the flattened ids.
        assert kjt["tags"].lengths().tolist() == [len(r["tags"] or []) for r in rows]
        flat = [t for r in rows for t in (r["tags"] or [])]
        assert kjt["tags"].values().tolist() == hash_ints(np.array(flat, dtype=np.int64), "tags").tolist()
        # Dense: nulls -> 0, float32, (B, 1).
        assert batch.dense_features.dtype == torch.float32
        assert batch.dense_features.shape == (len(rows), 1)
        expected = np.array([0.0 if r["price"] is None else r["price"] for r in rows], np.float32)
        np.testing.assert_array_equal(batch.dense_features[:, 0].numpy(), expected)
        assert batch.labels.shape == (len(rows), 1)
        assert batch.labels[:, 0].tolist() == [r["click"] for r in rows]


def test_ctr_batch_from_table_log1p_and_nulls() -> None:
    table = pa.table(
        {
            "a": pa.array([1, 2, 3, 4], pa.int64()),
            "x": pa.array([0.0, None, -3.0, 100.0], pa.float32()),
            "y": pa.array([1.0, 2.0, None, 0.5], pa.float64()),
            "click": pa.array([0.0, 1.0, 0.0, 1.0], pa.float32()),
            "like": pa.array([1.0, 1.0, 0.0, 0.0], pa.float32()),
        }
    )
    spec = FeatureSpec(sparse=["a"], dense=["x", "y"], labels=["click", "like"], dense_transform="log1p")
    batch = ctr_batch_from_table(table, spec)
    expected_x = np.array([0.0, 0.0, -np.log1p(3.0), np.log1p(100.0)], np.float32)
    expected_y = np.array([np.log1p(1.0), np.log1p(2.0), 0.0, np.log1p(0.5)], np.float32)
    np.testing.assert_allclose(batch.dense_features.numpy(), np.stack([expected_x, expected_y], 1), rtol=1e-6)
    assert batch.labels.tolist() == [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert batch.user_ids.tolist() == [-1, -1, -1, -1]  # no user column
    plain = ctr_batch_from_table(table, FeatureSpec(sparse=["a"], dense=["x"], labels=["click"]))
    assert plain.dense_features[:, 0].tolist() == [0.0, 0.0, -3.0, 100.0]


def test_ctr_dataset_with_log1p_spec(ctr_folder: Path) -> None:
    spec = FeatureSpec(sparse=["item_id"], dense=["price"], labels=["click"], dense_transform="log1p")
    raw = CTRDataset(ctr_folder, "valid", FeatureSpec(["item_id"], ["price"], ["click"]), batch_size=1000)
    transformed = CTRDataset(ctr_folder, "valid", spec, batch_size=1000)
    (a,), (b,) = list(raw), list(transformed)
    x = a.dense_features.numpy()
    np.testing.assert_allclose(b.dense_features.numpy(), np.sign(x) * np.log1p(np.abs(x)), rtol=1e-6)
    assert b.sparse_features.keys() == ["item_id"]


def test_ctr_loader_with_two_workers_matches_single_process(ctr_folder: Path) -> None:
    single = _collect(make_loader(CTRDataset(ctr_folder, "train", batch_size=32), num_workers=0))
    multi = _collect(make_loader(CTRDataset(ctr_folder, "train", batch_size=32), num_workers=2))
    assert Counter(zip(*multi)) == Counter(zip(*single))
    assert len(multi[0]) == len(set(multi[0]))
    shuffled = _collect(make_loader(CTRDataset(ctr_folder, "train", batch_size=32, shuffle=True), num_workers=2))
    assert Counter(zip(*shuffled)) == Counter(zip(*single))


def test_ctr_dataset_errors(ctr_folder: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        CTRDataset(ctr_folder, "validation")
    with pytest.raises(DataError, match="nope"):
        CTRDataset(ctr_folder, "train", FeatureSpec(sparse=["nope"], labels=["click"]))
    with pytest.raises(ValueError, match="batch_size"):
        CTRDataset(ctr_folder, "train", batch_size=0)
    with pytest.raises(ValueError, match="dense_transform"):
        CTRDataset(ctr_folder, "train", FeatureSpec(sparse=["item_id"], labels=["click"], dense_transform="log"))


# ----------------------------------------------------------------------------- SequenceDataset


def _write_events(folder: Path, rows: list[tuple], split: SplitConfig | None = None, columns=("click", "watch")) -> Path:
    """rows: (user, item, timestamp, click, watch); written in reverse to exercise the sort."""
    rows = list(reversed(rows))
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "item_id": pa.array([r[1] for r in rows], pa.int64()),
            "timestamp": pa.array([r[2] for r in rows], pa.int64()),
            "click": pa.array([r[3] for r in rows], pa.float32()),
            "watch": pa.array([r[4] for r in rows], pa.float32()),
        }
    )
    write_dataset(SourceData("seq", "test", "events", [table], labels=["click"]), folder, split, progress=False)
    return folder


def _event(user: int, item: int, ts: int, click: float = 1.0) -> tuple:
    return (user, item, ts, click, item * 0.5)


ITEM_OF_ID = {int(h): i for i, h in enumerate(hash_ints(np.arange(200), "item_id"))}


def _sequences(ds) -> dict[int, tuple]:
    """user -> (history items, history timestamps, target item, target timestamp, actions)."""
    out: dict[int, tuple] = {}
    for batch in ds:
        lengths = batch.lengths.tolist()
        items = [ITEM_OF_ID[int(v)] for v in batch.item_ids.values()]
        assert batch.timestamps.shape[0] == len(items) == batch.actions.shape[0]
        offset = 0
        for i, user in enumerate(batch.user_ids.tolist()):
            assert user not in out
            hist = items[offset : offset + lengths[i]]
            ts = batch.timestamps[offset : offset + lengths[i]].tolist()
            actions = batch.actions[offset : offset + lengths[i]].tolist()
            target = target_ts = None
            if batch.target_item_ids is not None:
                target = ITEM_OF_ID[int(batch.target_item_ids[i])]
                target_ts = int(batch.target_timestamps[i])
            out[user] = (hist, ts, target, target_ts, actions)
            offset += lengths[i]
    return out


LOO_EVENTS = (
    [_event(1, 10 + k, k + 1) for k in range(5)]  # 5 events: 3 train, valid, test
    + [_event(2, 20, 1), _event(2, 21, 2)]  # 2 events: valid, test
    + [_event(3, 30, 1)]  # 1 event: train
    + [_event(4, 40 + k, k + 1) for k in range(8)]  # 8 events: 6 train, valid, test
)


@pytest.fixture(scope="module")
def loo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_events(tmp_path_factory.mktemp("loo") / "ds", LOO_EVENTS)


def test_sequence_train_leave_one_out(loo_folder: Path) -> None:
    seqs = _sequences(SequenceDataset(loo_folder, "train", SequenceSpec(max_length=3), batch_size=2))
    assert sorted(seqs) == [1, 4]  # user 2 has no train events, user 3 only one
    assert seqs[1][0] == [10, 11, 12] and seqs[1][1] == [1, 2, 3]
    assert seqs[4][0] == [42, 43, 44, 45] and seqs[4][1] == [3, 4, 5, 6]  # max_length + 1 most recent
    assert seqs[1][2] is None  # no targets in training batches


def test_sequence_valid_and_test_leave_one_out(loo_folder: Path) -> None:
    spec = SequenceSpec(max_length=3)
    valid = _sequences(SequenceDataset(loo_folder, "valid", spec))
    assert sorted(valid) == [1, 4]  # user 2's valid event has no history before it
    assert valid[1][:4] == ([10, 11, 12], [1, 2, 3], 13, 4)
    assert valid[4][:4] == ([43, 44, 45], [4, 5, 6], 46, 7)
    test = _sequences(SequenceDataset(loo_folder, "test", spec))
    assert sorted(test) == [1, 2, 4]
    assert test[1][:4] == ([11, 12, 13], [2, 3, 4], 14, 5)  # history includes the valid event
    assert test[2][:4] == ([20], [1], 21, 2)
    assert test[4][:4] == ([44, 45, 46], [5, 6, 7], 47, 8)


def test_sequence_time_split(tmp_path: Path) -> None:
    events = (
        [_event(1, 100 + k, t) for k, t in enumerate([1, 5, 12, 15, 22, 25])]
        + [_event(2, 110, 11), _event(2, 111, 21)]
        + [_event(3, 120 + k, t) for k, t in enumerate([2, 3, 4])]
        + [_event(4, 130, 3), _event(4, 131, 25), _event(4, 132, 30)]
    )
    folder = _write_events(tmp_path / "ds", events, SplitConfig("time", cutoffs=[10, 20]))
    spec = SequenceSpec(max_length=3)
    train = _sequences(SequenceDataset(folder, "train", spec))
    assert {u: s[0] for u, s in train.items()} == {1: [100, 101], 3: [120, 121, 122]}
    valid = _sequences(SequenceDataset(folder, "valid", spec))
    # Target is the first event after the cut-off, not the last valid one.
    assert {u: s[:4] for u, s in valid.items()} == {1: ([100, 101], [1, 5], 102, 12)}
    test = _sequences(SequenceDataset(folder, "test", spec))
    assert {u: s[:4] for u, s in test.items()} == {
        1: ([101, 102, 103], [5, 12, 15], 104, 22),
        2: ([110], [11], 111, 21),
        4: ([130], [3], 131, 25),
    }


def test_sequence_keep_if_and_actions(tmp_path: Path) -> None:
    clicks1 = [1, 0, 1, 0, 1]  # items 10..14; the valid event (13) is not clicked
    clicks4 = [1, 1, 1, 1, 0, 1, 1, 1]  # items 40..47; 44 is not clicked
    events = [_event(1, 10 + k, k + 1, c) for k, c in enumerate(clicks1)] + [
        _event(4, 40 + k, k + 1, c) for k, c in enumerate(clicks4)
    ]
    folder = _write_events(tmp_path / "ds", events)
    spec = SequenceSpec(max_length=3, keep_if="click", actions=["click", "watch"])
    train = _sequences(SequenceDataset(folder, "train", spec))
    assert train[1][0] == [10, 12]
    assert train[4][0] == [41, 42, 43, 45]
    valid = _sequences(SequenceDataset(folder, "valid", spec))
    assert sorted(valid) == [4]  # user 1's valid event is filtered out, so no target
    assert valid[4][:3] == ([42, 43, 45], [3, 4, 6], 46)
    test = _sequences(SequenceDataset(folder, "test", spec))
    assert test[1][:3] == ([10, 12], [1, 3], 14)
    # Actions are aligned with the history values.
    for seqs in (train, valid, test):
        for hist, _, _, _, actions in seqs.values():
            assert [a[1] for a in actions] == [item * 0.5 for item in hist]
            assert [a[0] for a in actions] == [1.0] * len(hist)
    # Without keep_if the not-clicked events appear, with click action 0.
    all_events = _sequences(SequenceDataset(folder, "train", SequenceSpec(max_length=10, actions=["click"])))
    assert all_events[1][0] == [10, 11, 12]
    assert [a[0] for a in all_events[1][4]] == [1.0, 0.0, 1.0]
    no_actions = next(iter(SequenceDataset(folder, "train", SequenceSpec())))
    assert no_actions.actions.shape == (no_actions.item_ids.values().numel(), 0)


def test_sequence_min_length(loo_folder: Path) -> None:
    seqs = _sequences(SequenceDataset(loo_folder, "train", SequenceSpec(max_length=3, min_length=4)))
    assert sorted(seqs) == [4]
    seqs = _sequences(SequenceDataset(loo_folder, "train", SequenceSpec(max_length=3, min_length=1)))
    assert sorted(seqs) == [1, 3, 4]


def test_sequence_spec_checks(loo_folder: Path, ctr_folder: Path) -> None:
    with pytest.raises(DataError, match="liked"):
        SequenceDataset(loo_folder, "train", SequenceSpec(keep_if="liked"))
    with pytest.raises(DataError, match="events"):
        SequenceDataset(ctr_folder, "train")
    with pytest.raises(ValueError, match="max_length"):
        SequenceDataset(loo_folder, "train", SequenceSpec(max_length=0))


@pytest.fixture(scope="module")
def many_users_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    events = []
    for user in range(80):
        for k in range(int(rng.integers(1, 12))):
            events.append(_event(user, int(rng.integers(0, 200)), k * 10 + int(rng.integers(0, 5)), float(rng.integers(0, 2))))
    folder = tmp_path_factory.mktemp("many") / "ds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prepare, "ROWS_PER_PART", 60)
        _write_events(folder, events)
    assert len(DatasetMeta.load(folder).parts) > 3
    return folder


@pytest.mark.parametrize("split", ["train", "test"])
def test_sequence_workers_give_the_same_users(many_users_folder: Path, split: str) -> None:
    spec = SequenceSpec(max_length=4, actions=["watch"])

    def collect(workers: int, shuffle: bool = False) -> dict:
        ds = SequenceDataset(many_users_folder, split, spec, batch_size=7, shuffle=shuffle)
        return {u: (tuple(s[0]), s[2]) for u, s in _sequences(make_loader(ds, num_workers=workers)).items()}

    single = collect(0)
    assert len(single) > 40
    assert collect(2) == single
    assert collect(2, shuffle=True) == single


@pytest.mark.parametrize("window", [0, 2])
def test_sequence_workers_deal_batches_in_turn_so_the_order_is_kept(many_users_folder: Path, window: int) -> None:
    """Two DataLoader workers yield the very batches of no worker, in order, over several parts
    (each worker builds every other batch), not batches of users dealt to each worker."""
    def batches(workers: int) -> list[list[int]]:
        ds = SequenceDataset(many_users_folder, "train", batch_size=5, shuffle=True, seed=3, bucket_window=window)
        ds.set_epoch(2)
        return [b.user_ids.tolist() for b in make_loader(ds, num_workers=workers)]

    assert batches(2) == batches(0)


def test_sequence_shuffle_is_seeded(many_users_folder: Path) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        ds = SequenceDataset(many_users_folder, "train", batch_size=5, shuffle=True, seed=seed)
        ds.set_epoch(epoch)
        return [u for b in ds for u in b.user_ids.tolist()]

    plain = [u for b in SequenceDataset(many_users_folder, "train", batch_size=5) for u in b.user_ids.tolist()]
    assert plain == sorted(plain)
    assert order(0, 0) == order(0, 0) != plain
    assert order(0, 1) != order(0, 0)
    assert sorted(order(0, 1)) == plain


def test_sequence_length_buckets_are_seeded_and_cut_batches_of_similar_length(many_users_folder: Path) -> None:
    def batches(seed: int, window: int, epoch: int = 0) -> list[list[tuple[int, int]]]:
        ds = SequenceDataset(many_users_folder, "train", batch_size=5, shuffle=True, seed=seed, bucket_window=window)
        ds.set_epoch(epoch)
        return [list(zip(b.user_ids.tolist(), b.lengths.tolist(), strict=True)) for b in ds]

    def padding(all_batches) -> int:  # padded slots of the attention rectangles
        return sum(len(b) * max(n for _, n in b) - sum(n for _, n in b) for b in all_batches)

    bucketed, shuffled = batches(0, window=4), batches(0, window=0)
    assert bucketed == batches(0, window=4)
    assert bucketed != batches(1, window=4) and bucketed != batches(0, window=4, epoch=1)
    users = [u for b in bucketed for u, _ in b]
    assert sorted(users) == sorted(u for b in shuffled for u, _ in b) and len(set(users)) == len(users)
    assert padding(bucketed) < padding(shuffled)  # (parts of 60 rows here: windows of a dozen users)
    windows = [bucketed[i : i + 4] for i in range(0, len(bucketed), 4)]
    assert any([max(n for _, n in b) for b in w] != sorted([max(n for _, n in b) for b in w], reverse=True)
               for w in windows)  # a window's batches are not served longest first
    with pytest.raises(ValueError, match="bucket_window"):
        SequenceDataset(many_users_folder, "train", bucket_window=-1)


def test_length_buckets_cut_equal_event_counts_per_window() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 51, 1000)
    order = rng.permutation(1000)
    batches = _length_buckets(order, lengths, batch_size=32, window=8, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert len(batches) == 4 * 8  # windows of 256, 256, 256 and 232 users: 8 batches each
    for start in range(0, 1000, 256):
        window = [b for b in batches if set(b.tolist()) <= set(order[start : start + 256].tolist())]
        events = [int(lengths[b].sum()) for b in window]
        assert max(events) - min(events) <= 2 * 50  # equal up to a user or two
        spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in window)
        assert all(high <= next_low for (_, high), (next_low, _) in pairwise(spans))  # sorted, not interleaved
    again = _length_buckets(order, lengths, batch_size=32, window=8, rng=np.random.default_rng(1))
    assert [b.tolist() for b in batches] == [b.tolist() for b in again]


def test_user_column_names_the_user_for_gauc() -> None:
    table = pa.table({"user": pa.array([7, 8, None], pa.int64()), "item": [1, 2, 3], "label": [1.0, 0.0, 1.0]})
    spec = FeatureSpec(sparse=["item"], labels=["label"], user_column="user")
    assert ctr_batch_from_table(table, spec).user_ids.tolist() == [7, 8, -1]
    default = FeatureSpec(sparse=["item"], labels=["label"])
    assert ctr_batch_from_table(table, default).user_ids.tolist() == [-1, -1, -1]
