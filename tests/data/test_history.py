"""Each event's earlier history (terarec.data.history) and ML-100K as CTR (the movielens options)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from terarec.data.ctr_dataset import FeatureSpec, ctr_batch_from_table, id_slot
from terarec.data.history import add_history, history_ranges
from terarec.data.sources.movielens import load_movielens
from tests.data.test_sources import ml100k


def _events(seed: int = 0, n: int = 400) -> pa.Table:
    """Few users, coarse timestamps (many ties), rows in random order."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, 7, n), pa.int64()),
            "item_id": pa.array(np.arange(n), pa.int64()),  # unique: the item names the event
            "timestamp": pa.array(rng.integers(0, 30, n), pa.int64()),
            "genre": pa.array([f"g{i % 3}" for i in range(n)]),
        }
    )


def _expected(table: pa.Table, max_length: int) -> list[list[int]]:
    """Brute force: the same user's events with a smaller timestamp, by (timestamp, row), last N."""
    users, times = table["user_id"].to_numpy(), table["timestamp"].to_numpy()
    items = table["item_id"].to_numpy()
    out = []
    for row in range(table.num_rows):
        earlier = [j for j in range(table.num_rows) if users[j] == users[row] and times[j] < times[row]]
        earlier.sort(key=lambda j: (times[j], j))
        out.append([int(items[j]) for j in earlier][-max_length:] if earlier else [])
    return out


@pytest.mark.parametrize("max_length", [1, 4, 1000])
def test_history_is_the_strictly_earlier_events_of_the_user(max_length: int) -> None:
    table = _events()
    got = add_history(table, ["item_id"], max_length).column("hist_item_id").to_pylist()
    assert got == _expected(table, max_length)


def test_no_event_sees_itself_a_tie_or_a_later_event() -> None:
    table = _events(seed=1)
    with_history = add_history(table, ["item_id", "timestamp"], 50)
    users, times = table["user_id"].to_numpy(), table["timestamp"].to_numpy()
    by_item = {int(item): row for row, item in enumerate(table["item_id"].to_numpy())}
    for row, (items, stamps) in enumerate(
        zip(with_history["hist_item_id"].to_pylist(), with_history["hist_timestamp"].to_pylist())
    ):
        assert row not in [by_item[item] for item in items]
        assert all(users[by_item[item]] == users[row] for item in items)
        assert all(stamp < times[row] for stamp in stamps)  # ties excluded too
        assert stamps == sorted(stamps)  # oldest first


def test_ties_share_one_history() -> None:
    table = pa.table({"user_id": [1, 1, 1, 1], "item_id": [10, 11, 12, 13], "timestamp": [5, 5, 1, 9]})
    assert add_history(table, ["item_id"], 10)["hist_item_id"].to_pylist() == [[12], [12], [], [12, 10, 11]]


def test_columns_are_aligned_and_row_order_is_kept() -> None:
    table = _events(seed=2)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    a = add_history(table, ["item_id", "genre"], 1000)
    b = add_history(shuffled, ["item_id", "genre"], 1000)
    genre_of = dict(zip(table["item_id"].to_pylist(), table["genre"].to_pylist()))
    for items, genres in zip(a["hist_item_id"].to_pylist(), a["hist_genre"].to_pylist()):
        assert genres == [genre_of[i] for i in items]
    assert a.select(["user_id", "item_id", "timestamp", "genre"]).equals(table)
    # The same events make each history whatever the row order (which orders ties among them).
    by_item = lambda t: {i: sorted(h) for i, h in zip(t["item_id"].to_pylist(), t["hist_item_id"].to_pylist())}
    assert by_item(a) == by_item(b)


def test_history_of_values_that_are_not_columns() -> None:
    table = pa.table({"user_id": [1, 1], "item_id": [3, 4], "timestamp": [1, 2]})
    out = add_history(table, {"rating": pa.array([5, 2], pa.int64())}, 3)
    assert out["hist_rating"].to_pylist() == [[], [5]]
    with pytest.raises(ValueError, match="max_length"):
        history_ranges(np.array([1]), np.array([1]), 0)


def test_history_ids_share_the_target_slot() -> None:
    assert id_slot("hist_item_id") == "item_id" and id_slot("item_id") == "item_id" and id_slot("hist_") == "hist_"
    table = add_history(pa.table({"user_id": [1, 1], "item_id": [7, 8], "timestamp": [1, 2]}), ["item_id"], 5)
    features = ctr_batch_from_table(table, FeatureSpec(sparse=["item_id", "hist_item_id"])).sparse_features
    assert features["hist_item_id"].values().tolist() == features["item_id"].values()[:1].tolist()


def test_movielens_as_ctr_with_features_and_history(tmp_path: Path) -> None:
    ratings = "196\t242\t3\t100\n196\t302\t5\t200\n196\t377\t4\t200\n196\t242\t1\t300\n22\t377\t1\t50\n"
    data = load_movielens(ml100k(tmp_path, ratings), like_threshold=4, features=True, history_length=2)
    assert data.labels == ["like", "rating"]
    assert data.sparse == ["user_id", "item_id", "age", "gender", "occupation", "zip_code", "genres", "genre",
                           "hist_item_id", "hist_genre", "hist_rating"]
    rows = data.chunks[0].to_pylist()
    assert [r["like"] for r in rows] == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert rows[0]["occupation"] == "writer" and rows[0]["genres"] == ["Animation", "Comedy"]
    assert [r["genre"] for r in rows[:3]] == ["Animation", "unknown", "Animation"]
    # The two events at time 200 see only the one at 100; the one at 300 sees the last two.
    assert [r["hist_item_id"] for r in rows] == [[], [242], [242], [302, 377], []]
    assert rows[3]["hist_rating"] == [5, 4] and rows[3]["hist_genre"] == ["unknown", "Animation"]


def test_movielens_ctr_options_are_checked(tmp_path: Path) -> None:
    from terarec.data.errors import DataError

    folder = ml100k(tmp_path)
    with pytest.raises(DataError, match="like_threshold"):
        load_movielens(folder, like_threshold="high")
    with pytest.raises(DataError, match="history_length"):
        load_movielens(folder, history_length=-1)
    (folder / "u.user").unlink()
    (folder / "u.item").unlink()
    with pytest.raises(DataError, match="features=true needs"):
        load_movielens(folder, features=True)
