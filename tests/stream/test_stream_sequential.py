"""terarec stream with task: sequential: next-day ranking per chunk over a managed catalogue, histories
carried across chunks (and across a resume), loss on the chunk's events only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from terarec.config import ConfigError
from terarec.data.batches import SequenceBatch
from terarec.features.hashing import hash_array
from terarec.layers.jagged import next_item_split
from terarec.stream.loop import resume_stream, stream
from terarec.train.checkpoint import load_checkpoint
from terarec.train.experiment import load_config
from terarec.train.loop import load_task
from terarec.train.tasks import SequentialTask
from tests.stream.conftest import DAILY, SEQUENCE_CONFIG, stream_config_file

DAY = 86_400
TIMINGS = ("train_seconds", "examples_per_s")


def _day(folder: Path, day: int, columns: list[str]) -> pa.Table:
    return pq.read_table(folder / f"day-{day:04d}.parquet", columns=columns)


@pytest.fixture(scope="module")
def streamed(daily_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sequence")
    config = load_config(stream_config_file(daily_folder, tmp, "run", base=SEQUENCE_CONFIG))
    return stream(config, progress=False), config


def test_each_day_is_ranked_from_the_days_before_it(streamed, daily_folder: Path) -> None:
    result, _ = streamed
    chunks = result.chunks
    assert [c["name"] for c in chunks] == [f"day-{d:04d}.parquet" for d in range(DAILY.days)]
    first = chunks[0]["valid"]
    assert first["count"] == 0 and "ndcg@10" not in first  # no history yet: nobody to ask
    for day, chunk in enumerate(chunks):
        table = _day(daily_folder, day, ["user_id", "click"])
        clicked = table.column("click").to_numpy() > 0
        clicking_users = np.unique(table.column("user_id").to_numpy()[clicked]).size
        valid = chunk["valid"]
        assert valid["count"] + valid["users_without_history"] == clicking_users  # nobody dropped silently
        if day:
            assert valid["count"] > 0 and 0 <= valid["ndcg@10"] <= valid["hr@10"] <= 1
        assert chunk["carried"]["positives"] == int(clicked.sum())
    # Items released today are not in the catalogue the day before: some targets are misses, counted.
    assert sum(c["valid"]["targets_not_held"] for c in chunks) > 0
    assert all(c["steps"] > 0 and c["train_loss"] > 0 for c in chunks)
    rows = (result.run_dir / "chunks.csv").read_text().splitlines()
    assert "valid_ndcg@10" in rows[0] and "valid_targets_not_held" in rows[0] and "carried_users" in rows[0]


def test_the_catalogue_and_the_histories_stay_bounded_in_event_time(streamed, daily_folder: Path) -> None:
    result, config = streamed
    chunks = result.chunks
    assert all(c["vocab"]["size"] <= config.embedding.capacity for c in chunks)
    assert sum(c["vocab"]["evicted"] for c in chunks) > 0
    # The catalogue the day is ranked against is what the vocabulary held after the day before.
    assert [c["valid"]["catalogue"] for c in chunks[1:]] == [c["vocab"]["size"] for c in chunks[:-1]]
    task = load_task(result.run_dir)
    vocab = task.model.items.vocabularies["item_id"]
    held = vocab.row_ids[vocab.held()]
    assert int(vocab.row_last_seen[vocab.held()].min()) >= int(vocab.clock) - 1.5 * DAY
    last_days = pa.concat_tables(_day(daily_folder, d, ["item_id", "click"]) for d in (DAILY.days - 2, DAILY.days - 1))
    clicked = last_days.filter(pa.compute.greater(last_days.column("click"), 0)).column("item_id")
    assert held.numel() > 0 and set(held.tolist()) <= set(hash_array(clicked, "item_id").tolist())
    # Users without a click for 1.5 days are forgotten: the state holds only recent users.
    state = load_checkpoint(result.run_dir / "state.pt")["task_state"]["histories"]
    assert sum(c["carried"]["expired"] for c in chunks) > 0
    assert int(state["last_seen"].min()) >= int(state["last_seen"].max()) - 1.5 * DAY - DAY
    assert int(state["lengths"].max()) <= config.data.max_length and len(state["user_ids"]) == chunks[-1]["carried"]["users"]


def _task(tmp_path: Path, daily_folder: Path, **sections: dict) -> SequentialTask:
    config = load_config(stream_config_file(daily_folder, tmp_path, "unit", base=SEQUENCE_CONFIG, **sections))
    return SequentialTask.from_record(config, SequentialTask.streaming_record(config))


def _clicks(rows: list[tuple[int, int, int]]) -> pa.Table:
    users, items, times = zip(*rows)
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                     "timestamp": pa.array(times, pa.int64()), "click": pa.array([1.0] * len(rows), pa.float32())})


def test_only_held_items_are_ranked_and_a_target_not_held_is_a_counted_miss(tmp_path: Path,
                                                                              daily_folder: Path) -> None:
    task = _task(tmp_path, daily_folder, eval={"ks": [1], "protocol": "allow_repeats"},
                 embedding={"capacity": 2000})
    stream = task.stream
    stream.after_chunk(_clicks([(1, 100, 10), (1, 200, 20), (2, 100, 15)]))  # histories, no item admitted
    vocab = task.model.items.vocabularies["item_id"]
    vocab.train()
    vocab(torch.from_numpy(hash_array(pa.array([300]), "item_id")), torch.tensor([30]))
    # The catalogue holds item 300 only: 1,999 free rows of random weights may score higher, but are no candidates.
    metrics = stream.evaluate(_clicks([(1, 300, DAY), (1, 100, DAY + 1), (3, 300, DAY)]))
    assert metrics["count"] == 1 and metrics["users_without_history"] == 1 and metrics["catalogue"] == 1
    assert metrics["hr@1"] == 1.0 and metrics["targets_not_held"] == 0
    metrics = stream.evaluate(_clicks([(1, 400, DAY), (2, 300, DAY)]))  # 400 never admitted
    assert metrics["count"] == 2 and metrics["targets_not_held"] == 1 and metrics["hr@1"] == 0.5


def test_training_predicts_the_days_events_only(tmp_path: Path, daily_folder: Path) -> None:
    task = _task(tmp_path, daily_folder, model={"dropout": 0.0, "num_negatives": 0})  # full softmax: no draws
    task.stream.after_chunk(_clicks([(1, 100, 10), (1, 200, 20), (2, 300, 15)]))
    vocab = task.model.items.vocabularies["item_id"]
    vocab.train()
    vocab(torch.from_numpy(hash_array(pa.array([100, 200, 300, 400, 500]), "item_id")))
    (_, batch), = list(task.stream.batches(_clicks([(1, 400, DAY), (2, 500, DAY), (2, 100, DAY + 5)]), None))
    assert batch.lengths.tolist() == [3, 3] and batch.target_mask.tolist() == [False, False, True, False, True, True]
    model = task.model.eval()
    is_input, is_target, lengths = next_item_split(batch.lengths)
    users = model.encode(batch, is_input, lengths)
    predicted = batch.target_mask[is_target]  # 400 after 200; 500 after 300; 100 after 500
    rows = model.items.rows(batch.item_ids.values()[is_target][predicted])
    logits = model.head.normalise(users[predicted]) @ model.head.normalise(model.items.weight).T / model.head.temperature
    logits[:, 0] = -torch.inf  # the full softmax's candidates: every row but the default one
    expected = F.cross_entropy(logits, rows)
    torch.testing.assert_close(model.loss(batch), expected)
    everything = SequenceBatch(batch.user_ids, batch.item_ids, batch.timestamps, batch.actions)
    assert not torch.allclose(model.loss(everything), expected)  # the stored history's pairs would count too


def test_a_stopped_sequential_stream_resumes_to_the_same_metrics_weights_and_histories(daily_folder: Path,
                                                                                          tmp_path: Path) -> None:
    folder = tmp_path / "arriving"
    folder.mkdir()
    for day in range(3):
        shutil.copy(daily_folder / f"day-{day:04d}.parquet", folder)
    hstu = {"name": "hstu", "embedding_dim": 8, "num_layers": 1, "max_length": 12, "dropout": 0.1,
            "num_negatives": 16, "num_time_buckets": 16}
    first = stream(load_config(stream_config_file(folder, tmp_path, "stopped", base=SEQUENCE_CONFIG, model=hstu)),
                   progress=False)
    assert len(first.chunks) == 3
    for day in range(3, DAILY.days):  # the next days arrive; the run continues after chunk 3
        shutil.copy(daily_folder / f"day-{day:04d}.parquet", folder)
    resumed = resume_stream(first.run_dir, progress=False)
    whole = stream(load_config(stream_config_file(daily_folder, tmp_path, "whole", base=SEQUENCE_CONFIG, model=hstu)),
                   progress=False)

    def outcome(run_dir: Path):
        state = load_checkpoint(run_dir / "state.pt")
        return state["model"], state["task_state"]["histories"]

    assert len(resumed.chunks) == DAILY.days
    strip = lambda chunks: [{k: v for k, v in c.items() if k not in TIMINGS} for c in chunks]  # noqa: E731
    assert strip(resumed.chunks) == strip(whole.chunks)
    (weights, histories), (expected_weights, expected_histories) = outcome(resumed.run_dir), outcome(whole.run_dir)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[name], expected_weights[name]) for name in weights)
    assert all(torch.equal(histories[name], expected_histories[name]) for name in expected_histories)


def test_a_sequential_stream_frozen_after_day_one_keeps_its_catalogue_but_follows_the_users(
        daily_folder: Path, tmp_path: Path) -> None:
    config = load_config(stream_config_file(daily_folder, tmp_path, "frozen", base=SEQUENCE_CONFIG,
                                            stream={"train_chunks": 1, "max_chunks": 3}))
    chunks = stream(config, progress=False).chunks
    assert [c["trained"] for c in chunks] == [True, False, False]
    assert [c["vocab"]["admitted"] for c in chunks[1:]] == [0, 0]
    assert chunks[2]["valid"]["catalogue"] == chunks[0]["vocab"]["size"]
    assert chunks[2]["carried"]["users"] > chunks[0]["carried"]["users"]  # histories still advance


def test_a_sequential_stream_config_it_cannot_run_is_refused(daily_folder: Path, tmp_path: Path) -> None:
    for sections, message in [({"stream": {"delta_every": 1}}, "stream.delta_every"),
                              ({"embedding": {"vocabulary": "exact"}}, "vocabulary: managed"),
                              ({"eval": {"protocol": "sampled"}}, "eval.protocol")]:
        config = load_config(stream_config_file(daily_folder, tmp_path, "refused", base=SEQUENCE_CONFIG, **sections))
        with pytest.raises(ConfigError, match=message):
            stream(config, progress=False)


def test_user_histories_keep_each_users_last_events_and_expire_in_event_time() -> None:
    from terarec.data.user_histories import UserHistories

    rng = np.random.default_rng(0)
    histories, oracle, last = UserHistories(max_length=4), {}, {}
    for day in range(6):
        users = np.sort(rng.choice(50, size=12, replace=False))
        counts = rng.integers(1, 7, size=users.size)
        items = rng.integers(0, 10**12, size=int(counts.sum()))
        times = day * DAY + np.sort(rng.integers(0, DAY, size=items.size))  # any order within a user is kept
        histories.store(users, histories.extend(users, items, times, counts))
        at = 0
        for user, count in zip(users.tolist(), counts.tolist()):
            oracle[user] = (oracle.get(user, []) + list(zip(items[at:at + count].tolist(),
                                                            times[at:at + count].tolist())))[-4:]
            last[user] = int(times[at + count - 1])
            at += count
        dropped = histories.expire(day * DAY + DAY - 1, 1.5 * DAY)
        gone = [user for user, seen in last.items() if seen < day * DAY + DAY - 1 - 1.5 * DAY]
        assert dropped == len(gone)
        for user in gone:
            del oracle[user], last[user]
        asked = np.arange(50)
        values, stamps, lengths = histories.get(asked)
        expected = [oracle.get(user, []) for user in asked.tolist()]
        assert lengths.tolist() == [len(pairs) for pairs in expected]
        assert list(zip(values.tolist(), stamps.tolist())) == [pair for pairs in expected for pair in pairs]
    restored = UserHistories(max_length=4)
    restored.load_state_dict(histories.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(restored.get(np.arange(50)), histories.get(np.arange(50))))
    with pytest.raises(ValueError, match="max_length 4"):
        UserHistories(max_length=5).load_state_dict(histories.state_dict())
