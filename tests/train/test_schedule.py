"""Learning-rate warm-up and plateau decay, the embedding L2 penalty, and the CSV logs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from terarec.config import ConfigError
from terarec.embedding.collection import PooledEmbeddings
from terarec.embedding.engine import EmbeddingEngineConfig, FusedPooledEmbeddings
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.train.experiment import load_config
from terarec.train.loop import LearningRates, embedding_penalty, train
from tests.train.test_train import _ctr_config


def _engine(rate: float) -> FusedPooledEmbeddings:
    return FusedPooledEmbeddings({"item": ExactVocabulary(np.arange(1, 6))}, 4,
                                 EmbeddingEngineConfig(optimizer="sgd", learning_rate=rate))


def test_warm_up_ramps_dense_and_sparse_rates_linearly_then_holds() -> None:
    model = nn.ModuleDict({"dense": nn.Linear(2, 1), "tables": _engine(0.5)})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rates = LearningRates(optimizer, model, warmup_steps=4, sparse_learning_rate=0.5)
    seen = []
    for step in range(6):
        rates.step(step)
        seen.append((optimizer.param_groups[0]["lr"], model["tables"].tables.config.learning_rate))
    assert [d for d, _ in seen] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    assert [s for _, s in seen] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])


def test_plateau_decay_scales_every_rate_and_persists() -> None:
    model = nn.ModuleDict({"dense": nn.Linear(2, 1), "tables": _engine(0.5)})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rates = LearningRates(optimizer, model, warmup_steps=0, sparse_learning_rate=0.5)
    rates.decay(0.1)
    rates.step(100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    assert model["tables"].tables.config.learning_rate == pytest.approx(0.05)
    rates.decay(1.0)  # off
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_embedding_penalty_is_half_lambda_times_squared_norm_of_parameter_tables() -> None:
    model = nn.ModuleDict({"emb": PooledEmbeddings({"a": ExactVocabulary(np.arange(1, 4)),
                                                    "b": ExactVocabulary(np.arange(1, 3))}, 4)})
    tables = model["emb"].table_weights()
    assert len(tables) == 2
    expected = 0.5 * 0.05 * sum(float(t.detach().square().sum()) for t in tables)
    assert float(embedding_penalty(model, 0.05)) == pytest.approx(expected)
    assert embedding_penalty(model, 0.0) is None
    assert embedding_penalty(nn.Linear(2, 2), 0.05) is None  # no tables: nothing to add


def test_engine_weight_decay_shrinks_the_rows_a_batch_touches() -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    config = EmbeddingEngineConfig(optimizer="sgd", learning_rate=1.0, weight_decay=0.1)
    assert config.resolved_backend() == "torch"  # FBGEMM's CPU kernels ignore weight decay
    with pytest.raises(ValueError, match="weight_decay"):
        EmbeddingEngineConfig(optimizer="sgd", weight_decay=0.1, backend="fbgemm")
    emb = FusedPooledEmbeddings({"item": ExactVocabulary(np.arange(1, 6))}, 4, config)
    before = emb.weight("item").clone()
    ids = torch.tensor([2], dtype=torch.int64)  # row 2
    features = KeyedJaggedTensor.from_lengths_sync(["item"], ids, torch.tensor([1]))
    (emb(features).values() * 0.0).sum().backward()  # zero loss gradient: only the decay acts
    after = emb.weight("item")
    torch.testing.assert_close(after[2], 0.9 * before[2])
    torch.testing.assert_close(after[[0, 1, 3, 4, 5]], before[[0, 1, 3, 4, 5]])


def test_run_writes_step_and_epoch_csv_logs(tmp_path: Path) -> None:
    folder = _small_ctr_data(tmp_path)
    config = _ctr_config(folder, tmp_path, "train.epochs=2", "train.log_every=5", "train.warmup_steps=10",
                         "train.plateau_decay=0.5", "embedding.regularization=0.001")
    result = train(config, progress=False, run_dir=tmp_path / "run")
    with (result.run_dir / "steps.csv").open() as handle:
        steps = list(csv.DictReader(handle))
    with (result.run_dir / "epochs.csv").open() as handle:
        epochs = list(csv.DictReader(handle))
    total_steps = sum(e["steps"] for e in result.epochs)
    assert len(steps) == total_steps // 5
    assert [int(row["step"]) for row in steps] == list(range(5, total_steps + 1, 5))
    assert float(steps[0]["learning_rate"]) == pytest.approx(0.03 * 5 / 10)  # warming up
    assert all(np.isfinite(float(row["train_loss"])) for row in steps)
    assert [int(row["epoch"]) for row in epochs] == [1, 2]
    assert "valid_auc" in epochs[0] and 0 <= float(epochs[0]["valid_auc"]) <= 1


def _small_ctr_data(tmp_path: Path) -> Path:
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.base import SourceData
    from tests.train.test_train import _ctr_events

    folder = tmp_path / "data"
    data = SourceData("xor", "test", "events", [_ctr_events(num_users=60)], sparse=["user_id", "item_id", "device"],
                      labels=["click"])
    write_dataset(data, folder, progress=False)
    return folder


@pytest.mark.parametrize("override", ["train.warmup_steps=-1", "train.plateau_decay=0", "train.plateau_decay=2",
                                      "train.log_every=0", "train.learning_rate=0"])
def test_bad_train_options_name_the_field(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, ["name=x", "task=ctr", "data.path=.", "model={name: dlrm}", override])


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime as real_datetime

    from terarec.train import loop

    class FrozenClock:
        @staticmethod
        def now() -> real_datetime:
            return real_datetime(2026, 1, 1, 12, 0, 0)

    monkeypatch.setattr(loop, "datetime", FrozenClock)
    config = load_config(None, ["name=x", "task=ctr", "data.path=.", "model={name: dlrm}", f"run_dir={tmp_path}"])
    folders = {loop.new_run_dir(config) for _ in range(3)}
    assert len(folders) == 3 and all(folder.is_dir() for folder in folders)
