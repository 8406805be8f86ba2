"""End-to-end training on small fixtures with a learnable signal, plus the embedding modules and models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from terarec.data.batches import SequenceBatch, make_loader
from terarec.data.ctr_dataset import CTRDataset, FeatureSpec
from terarec.embedding.collection import PooledEmbeddings, SequenceEmbeddings, remap
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.eval.evaluate import evaluate_ranking
from terarec.features.hashing import hash_ints, hash_strings
from terarec.models.bag_of_items import BagOfItems
from terarec.models.inputs import ModelInputs
from terarec.train.checkpoint import load_checkpoint
from terarec.train.experiment import load_config
from terarec.train.loop import RunResult, load_task, train
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """train() sets torch's thread count for the process; give other test modules theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _ctr_events(num_users: int = 300, events_per_user: int = 10, seed: int = 0) -> pa.Table:
    """Click = (item is odd) XOR (device is ios), with 10% of labels flipped.

    No single feature says anything about the click (every item and device clicks half the
    time), so the popularity baseline sits near AUC 0.5 while a model crossing item x device
    can reach ~0.9.
    """
    rng = np.random.default_rng(seed)
    n = num_users * events_per_user
    users = np.repeat(np.arange(num_users), events_per_user)
    items = rng.integers(0, 40, n)
    ios = rng.random(n) < 0.5
    click = ((items % 2 == 1) ^ ios).astype(np.float32)
    flip = rng.random(n) < 0.1
    click[flip] = 1 - click[flip]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "timestamp": pa.array(np.tile(np.arange(events_per_user), num_users) * 60, pa.int64()),
            "device": pa.array(np.where(ios, "ios", "android")),
            "click": pa.array(click),
        }
    )


def _sequence_events(num_users: int = 240, length: int = 7, seed: int = 0) -> pa.Table:
    """Each user stays in one group of 10 items (6 groups) and sees 7 distinct items of it."""
    rng = np.random.default_rng(seed)
    users, items, timestamps = [], [], []
    for user in range(num_users):
        group = user % 6
        chosen = rng.permutation(10)[:length] + 10 * group
        users += [user] * length
        items += chosen.tolist()
        timestamps += list(range(length))
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "timestamp": pa.array(timestamps, pa.int64()),
            "click": pa.array(np.ones(len(users), np.float32)),
        }
    )


def _ctr_config(folder: Path, tmp: Path, *extra: str):
    return load_config(
        None,
        [
            "name=xor",
            "task=ctr",
            f"data.path={folder}",
            "data.sparse=[item_id, device]",
            "data.labels=[click]",
            "data.batch_size=64",
            "data.eval_batch_size=256",
            "model={name: embedding_mlp, embedding_dim: 8, hidden: [32]}",
            "train.epochs=3",
            "train.learning_rate=0.03",
            "train.threads=1",
            "train.patience=0",
            f"run_dir={tmp}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def ctr_run(ctr_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    tmp = tmp_path_factory.mktemp("runs")
    return train(_ctr_config(ctr_data, tmp), progress=False, run_dir=tmp / "mlp")


# ----------------------------------------------------------------------------- CTR end to end


def test_ctr_training_learns_the_cross(ctr_run: RunResult, ctr_data: Path, tmp_path: Path) -> None:
    baseline = train(
        _ctr_config(ctr_data, tmp_path, "model={name: popularity, smoothing: 5.0}"), progress=False, run_dir=tmp_path / "pop"
    )
    assert baseline.best_epoch == 0
    assert 0.35 < baseline.test["auc"] < 0.65  # one feature alone says nothing
    assert ctr_run.test["auc"] > 0.75
    assert ctr_run.test["auc"] > baseline.test["auc"] + 0.1
    assert ctr_run.test["logloss"] < baseline.test["logloss"]
    assert 1 <= ctr_run.best_epoch <= 3
    assert [e["epoch"] for e in ctr_run.epochs] == [1, 2, 3]
    assert ctr_run.epochs[-1]["train_loss"] < ctr_run.epochs[0]["train_loss"]


def test_run_folder_contents(ctr_run: RunResult) -> None:
    run_dir = ctr_run.run_dir
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.json", "train.log", "checkpoint.pt", "steps.csv",
                                                 "epochs.csv", "tensorboard", "curves.png"}
    assert not list(run_dir.glob("*.tmp*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == ctr_run.best_epoch
    # gauc is NaN here (one test row per user): metrics.json stays strict JSON and writes null.
    assert math.isnan(ctr_run.test["gauc"]) and metrics["test"]["gauc"] is None
    finite = {k: v for k, v in ctr_run.test.items() if k != "gauc"}
    assert {k: metrics["test"][k] for k in finite} == pytest.approx(finite)
    json.loads((run_dir / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert metrics["selection_metric"] == "auc"
    assert len(metrics["epochs"]) == 3
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "embedding_mlp" and config["train"]["epochs"] == 3
    log = (run_dir / "train.log").read_text()
    assert "epoch 1" in log and "best epoch" in log
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["epoch"] == ctr_run.best_epoch
    assert checkpoint["metrics"] == pytest.approx(ctr_run.valid, nan_ok=True)
    assert set(checkpoint["inputs"]["vocabularies"]) == {"item_id", "device"}


def test_load_task_reproduces_test_metrics(ctr_run: RunResult) -> None:
    task = load_task(ctr_run.run_dir)
    assert task.config.model["name"] == "embedding_mlp"
    test = task.evaluate("test")
    assert test == pytest.approx(ctr_run.test, rel=1e-6, abs=1e-9, nan_ok=True)
    assert task.evaluate("valid") == pytest.approx(ctr_run.valid, rel=1e-6, abs=1e-9, nan_ok=True)


def test_same_seed_gives_identical_metrics(ctr_run: RunResult, ctr_data: Path, tmp_path: Path) -> None:
    again = train(_ctr_config(ctr_data, tmp_path), progress=False, run_dir=tmp_path / "again")
    exactly = dict(rel=0, abs=0, nan_ok=True)
    assert again.test == pytest.approx(ctr_run.test, **exactly)
    assert [e["train_loss"] for e in again.epochs] == [e["train_loss"] for e in ctr_run.epochs]
    for mine, theirs in zip(again.epochs, ctr_run.epochs, strict=True):
        assert mine["valid"] == pytest.approx(theirs["valid"], **exactly)


def test_different_seed_gives_different_training(ctr_run: RunResult, ctr_data: Path, tmp_path: Path) -> None:
    other = train(_ctr_config(ctr_data, tmp_path, "train.seed=1", "train.epochs=1"), progress=False, run_dir=tmp_path / "s1")
    assert other.epochs[0]["train_loss"] != ctr_run.epochs[0]["train_loss"]


def test_new_run_dir_is_made_under_run_dir(ctr_data: Path, tmp_path: Path) -> None:
    result = train(
        _ctr_config(ctr_data, tmp_path, "train.epochs=1", "train.max_steps_per_epoch=2", "train.checkpoint=false"),
        progress=False,
    )
    assert result.run_dir.parent == tmp_path and result.run_dir.name.startswith("xor-")
    assert result.epochs[0]["steps"] == 2
    assert not (result.run_dir / "checkpoint.pt").exists()
    assert (result.run_dir / "metrics.json").exists()


# ----------------------------------------------------------------------------- sequential end to end


def _seq_config(folder: Path, tmp: Path, model: str):
    return load_config(
        None,
        [
            "name=groups",
            "task=sequential",
            f"data.path={folder}",
            "data.batch_size=32",
            "data.eval_batch_size=128",
            "data.max_length=10",
            f"model={model}",
            "train.epochs=3",
            "train.learning_rate=0.02",
            "train.threads=1",
            "eval.ks=[10, 20]",
            f"run_dir={tmp}",
        ],
    )


class RandomScores(torch.nn.Module):
    """Scores every catalogue row at random (row 0, the unknown row, excluded like real models)."""

    def __init__(self, vocabulary: ExactVocabulary) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.generator = torch.Generator().manual_seed(0)

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vocabulary(ids)

    def score_catalogue(self, batch: SequenceBatch) -> torch.Tensor:
        scores = torch.rand(len(batch), self.vocabulary.num_rows, generator=self.generator)
        scores[:, 0] = -torch.inf
        return scores


def _in_unit_interval(metrics: dict[str, float]) -> None:
    for key in ("hr@10", "ndcg@10", "mrr", "hr@20", "ndcg@20"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["ndcg@10"] <= metrics["hr@10"] <= metrics["hr@20"]


def test_sequential_models(seq_data: Path, tmp_path: Path) -> None:
    bag = train(_seq_config(seq_data, tmp_path, "{name: bag_of_items, embedding_dim: 16}"), progress=False, run_dir=tmp_path / "bag")
    popular = train(_seq_config(seq_data, tmp_path, "{name: most_popular}"), progress=False, run_dir=tmp_path / "pop")
    for result in (bag, popular):
        _in_unit_interval(result.test)
        assert result.test["count"] == 240  # every user has a test target with history
    assert popular.best_epoch == 0

    task = load_task(bag.run_dir)
    again = task.evaluate("test")
    assert again.pop("protocol") == bag.test["protocol"] == "exclude_history"
    assert again == pytest.approx({k: v for k, v in bag.test.items() if k != "protocol"}, rel=1e-6, abs=1e-9)
    random_model = RandomScores(task.inputs.item_vocabulary)
    loader = make_loader(task.dataset("test"))
    random_metrics = evaluate_ranking(random_model, loader, [10, 20])
    _in_unit_interval(random_metrics)
    # 4 unseen items of the user's group among 54 candidates: a model that learned the groups
    # ranks the target in the top 10 nearly always, random scores about 10/54 of the time.
    assert random_metrics["hr@10"] < 0.35
    assert bag.test["hr@10"] > 0.8
    assert bag.test["hr@10"] > random_metrics["hr@10"] + 0.3
    assert bag.test["mrr"] > random_metrics["mrr"]
    assert bag.test["ndcg@10"] > popular.test["ndcg@10"]
    record = json.loads((bag.run_dir / "metrics.json").read_text())
    assert record["selection_metric"] == "ndcg@10"
    assert record["test"]["protocol"] == "exclude_history" and record["test"]["repeated_targets"] == 0


# ----------------------------------------------------------------------------- embeddings and models


def test_remap_and_pooled_embeddings() -> None:
    vocabularies = {
        "item_id": ExactVocabulary(hash_ints(np.array([1, 2, 3]), "item_id")),
        "device": ExactVocabulary(hash_strings(["ios", "web"], "device")),
    }
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["item_id", "device"],
        values=torch.from_numpy(
            np.concatenate([hash_ints(np.array([3, 1, 2, 99]), "item_id"), hash_strings(["web", "tv"], "device")])
        ),
        lengths=torch.tensor([1, 3, 1, 1]),  # item: row 0 one id, row 1 three ids (one unknown)
    )
    item_row = {i: int(vocabularies["item_id"](torch.from_numpy(hash_ints(np.array([i]), "item_id")))[0]) for i in (1, 2, 3)}
    device_row = int(vocabularies["device"](torch.from_numpy(hash_strings(["web"], "device")))[0])
    assert sorted(item_row.values()) == [1, 2, 3] and device_row in (1, 2)
    rows = remap(kjt, torch.nn.ModuleDict(vocabularies))
    assert rows["item_id"].values().tolist() == [item_row[3], item_row[1], item_row[2], 0]
    assert rows["device"].values().tolist() == [device_row, 0]
    assert rows.lengths().tolist() == [1, 3, 1, 1]
    assert int(vocabularies["item_id"].unknown_count) == 1

    emb = PooledEmbeddings(vocabularies, embedding_dim=4)
    out = emb(kjt)
    assert out.values().shape == (2, 8)
    item_table = emb.tables.embedding_bags["t_item_id"].weight
    device_table = emb.tables.embedding_bags["t_device"].weight
    assert item_table.shape == (4, 4) and device_table.shape == (3, 4)
    pooled = out.to_dict()
    torch.testing.assert_close(pooled["item_id"][0], item_table[item_row[3]])
    torch.testing.assert_close(pooled["item_id"][1], item_table[item_row[1]] + item_table[item_row[2]] + item_table[0])  # sum pooling
    torch.testing.assert_close(pooled["device"][1], device_table[0])  # unknown -> default row


def test_bag_of_items_prefix_means_and_scores() -> None:
    ids = hash_ints(np.arange(6), "item_id")
    vocab = ExactVocabulary(ids)
    model = BagOfItems(BagOfItems.Config(embedding_dim=4), ModelInputs(vocabularies={"item_id": vocab}))
    histories = [[0, 1, 2], [4], [5, 3]]
    values = torch.from_numpy(hash_ints(np.array([i for h in histories for i in h]), "item_id"))
    lengths = torch.tensor([len(h) for h in histories])
    batch = SequenceBatch(
        user_ids=torch.arange(3),
        item_ids=KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=values, lengths=lengths),
        timestamps=torch.zeros(6, dtype=torch.int64),
        actions=torch.zeros(6, 0),
        target_item_ids=torch.from_numpy(hash_ints(np.array([3, 0, 1]), "item_id")),
    )
    weight = model.items.weight.detach()
    row = {i: int(vocab(torch.from_numpy(ids[i : i + 1]))[0]) for i in range(6)}
    means, rows, _ = model._prefix_means(batch)
    expected = []
    for history in histories:
        for t in range(len(history)):
            expected.append(torch.stack([weight[row[i]] for i in history[: t + 1]]).mean(0))
    torch.testing.assert_close(means.detach(), torch.stack(expected))
    assert rows.tolist() == [row[i] for h in histories for i in h]
    scores = model.score_catalogue(batch)
    assert scores.shape == (3, 7)
    assert torch.isinf(scores[:, 0]).all()
    torch.testing.assert_close(scores[1, 1:].detach(), weight[1:] @ weight[row[4]])
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    sampled = BagOfItems(BagOfItems.Config(embedding_dim=4, num_negatives=3), ModelInputs(vocabularies={"item_id": vocab}))
    assert torch.isfinite(sampled.loss(batch))


def test_sequence_embeddings_rows() -> None:
    vocab = ExactVocabulary(np.array([10, 20]))
    emb = SequenceEmbeddings(vocab, embedding_dim=3)
    assert emb.num_rows == 3
    assert emb.rows(torch.tensor([20, 10, 5])).tolist() == [2, 1, 0]
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=torch.tensor([20, 5]), lengths=torch.tensor([2]))
    out = emb(kjt)
    torch.testing.assert_close(out.values(), emb.weight[[2, 0]])


def test_ctr_models_forward_on_real_batches(ctr_data: Path) -> None:
    from terarec.models.embedding_mlp import EmbeddingMLP
    from terarec.models.popularity import ItemPopularity
    from terarec.train.setup import ctr_vocabularies

    spec = FeatureSpec(sparse=["item_id", "device"], labels=["click"])
    ds = CTRDataset(ctr_data, "train", spec, batch_size=100)
    vocabularies = ctr_vocabularies(ctr_data, ds.meta, spec)
    assert vocabularies["item_id"].num_rows == 41 and vocabularies["device"].num_rows == 3
    inputs = ModelInputs(vocabularies=vocabularies, labels=["click"])
    batch = next(iter(ds))
    logits = EmbeddingMLP(EmbeddingMLP.Config(embedding_dim=4, hidden=[8]), inputs)(batch)
    assert logits.shape == (100, 1)
    popularity = ItemPopularity(ItemPopularity.Config(smoothing=0.0), inputs)
    popularity.fit_statistics(ds)
    # With no smoothing the probability is each item's training click rate.
    probs = torch.sigmoid(popularity(batch))[:, 0]
    item_rows = vocabularies["item_id"](batch.sparse_features["item_id"].values())
    rate = popularity.positives[:, 0] / popularity.impressions[:, 0].clamp(min=1)
    torch.testing.assert_close(probs, rate[item_rows].clamp(1e-6, 1 - 1e-6), rtol=1e-4, atol=1e-5)
    assert int(popularity.impressions.sum()) == ds.num_rows
