"""Ranking batches: training windows cover every training event once; impressions end with
their candidate after the same history DIN reads."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from terarec.data.prepare import write_dataset
from terarec.data.ranking import RankingDataset, add_ranking_history
from terarec.data.vocabularies import vocabulary_ids
from terarec.data.sources.base import SourceData
from terarec.data.splits import SplitConfig
from terarec.features.hashing import hash_ints


def _prepared(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), [3, 9, 1, 14, 6, 7])
    times = np.concatenate([np.sort(rng.choice(1000, n, replace=False)) for n in [3, 9, 1, 14, 6, 7]])
    n = users.size
    table = pa.table({
        "user_id": users, "item_id": rng.integers(0, 30, n), "timestamp": times,
        "hour": rng.integers(0, 24, n), "age_bucket": users % 3,
        "click": rng.integers(0, 2, n).astype(np.float32), "watch_time": rng.random(n).astype(np.float32) * 60,
    })
    table = add_ranking_history(table, ["click", "watch_time", "hour"], max_length=4)
    source = SourceData(name="tiny", source="test", kind="events", chunks=[table], sparse=["item_id", "hour"],
                        labels=["click"], sorted_by_user=True)
    write_dataset(source, tmp_path / "data", SplitConfig(method="time", valid_fraction=0.2, test_fraction=0.2),
                  progress=False)
    return tmp_path / "data", table


def test_training_windows_cover_each_training_event_once(tmp_path) -> None:
    folder, _ = _prepared(tmp_path)
    dataset = RankingDataset(folder, "train", ["click", "watch_time"], ["hour"], ["age_bucket"], max_events=4,
                             batch_size=3)
    batches = list(dataset)
    assert all(int(b.lengths.max()) <= 4 and not bool(b.is_candidate.any()) for b in batches)
    events = sum(int(b.lengths.sum()) for b in batches)
    train_rows = dataset.meta.split["counts"]["train"]
    assert events == train_rows
    ids = vocabulary_ids(folder, ["item_id", "hour"])
    assert ids["hour"].size > 0 and (np.diff(ids["hour"]) > 0).all()  # sorted, distinct


def test_impressions_end_with_their_candidate(tmp_path) -> None:
    folder, table = _prepared(tmp_path)
    dataset = RankingDataset(folder, "test", ["click", "watch_time"], ["hour"], max_events=4, batch_size=4)
    batches = list(dataset)
    assert sum(len(b) for b in batches) == dataset.meta.split["counts"]["test"]
    for batch in batches:
        ends = torch.cumsum(batch.lengths, 0) - 1
        assert batch.is_candidate.nonzero().flatten().tolist() == ends.tolist()
        assert batch.labels.shape == (len(batch), 2)
    # the first test impression: its history is the user's 4 latest strictly earlier events
    batch = batches[0]
    user, candidate_time = int(batch.user_ids[0]), int(batch.timestamps[int(batch.lengths[0]) - 1])
    rows = table.filter(pc.equal(table.column("user_id"), user)).to_pydict()
    earlier = [i for i, t in zip(rows["item_id"], rows["timestamp"]) if t < candidate_time][-4:]
    got = batch.item_ids[: int(batch.lengths[0]) - 1]
    assert got.tolist() == hash_ints(np.array(earlier, dtype=np.int64), "item_id").tolist()
