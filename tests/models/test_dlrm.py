"""DLRM and its dot interaction; declared crosses flowing from config to the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.layers.interaction import DotInteraction
from terarec.models.dlrm import DLRM
from terarec.models.inputs import ModelInputs
from terarec.train.experiment import load_config
from terarec.train.loop import train
from terarec.train.tasks import build_task


def test_dot_interaction_matches_loop() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5)
    expected = torch.stack([
        torch.stack([x[b, i] @ x[b, j] for i in range(4) for j in range(i + 1, 4)]) for b in range(3)
    ])
    assert torch.allclose(DotInteraction(4)(x), expected, atol=1e-6)


@pytest.mark.parametrize("num_dense", [0, 3])
def test_dlrm_shapes(num_dense: int) -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from terarec.data.batches import CTRBatch

    vocabularies = {"a": ExactVocabulary(np.arange(5)), "b": ExactVocabulary(np.arange(7))}
    model = DLRM(DLRM.Config(embedding_dim=4, bottom_mlp=[8], top_mlp=[16]),
                 ModelInputs(vocabularies=vocabularies, num_dense=num_dense, labels=["click", "like"]))
    batch = CTRBatch(
        KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.tensor([1, 1, 1, 1])),
        torch.randn(2, num_dense), torch.zeros(2, 2), torch.zeros(2, dtype=torch.long),
    )
    assert model(batch).shape == (2, 2)


def _config(folder: Path, tmp: Path, *extra: str):
    return load_config(None, [
        "task=ctr", f"data.path={folder}", "data.labels=[click]", "data.batch_size=64",
        "model={name: dlrm, embedding_dim: 8, top_mlp: [16]}", "train.epochs=3", "train.learning_rate=0.03",
        "train.threads=1", "train.patience=0", f"run_dir={tmp}", *extra,
    ])


def test_declared_cross_reaches_the_model(xor_data: Path, tmp_path: Path) -> None:
    cross = "data.crosses=[{name: item_x_device, kind: interaction, columns: [item_id, device]}]"
    task = build_task(_config(xor_data, tmp_path, "data.sparse=[user_id]", cross))
    assert list(task.inputs.vocabularies) == ["user_id", "item_x_device"]
    # 40 items x 2 devices seen in training, plus the default row.
    assert task.inputs.vocabularies["item_x_device"].num_rows == 81
    # Click is item parity XOR device: only the crossed id carries it.
    crossed = train(_config(xor_data, tmp_path, "data.sparse=[user_id]", cross), progress=False)
    plain = train(_config(xor_data, tmp_path, "data.sparse=[user_id, item_id]"), progress=False)
    assert crossed.test["auc"] > 0.8
    assert plain.test["auc"] < 0.65


def test_cross_on_missing_column_is_a_clear_error(xor_data: Path, tmp_path: Path) -> None:
    from terarec.data.errors import DataError

    with pytest.raises(DataError, match="cross 'bad' needs column 'colour'"):
        build_task(_config(xor_data, tmp_path, "data.crosses=[{name: bad, kind: interaction, columns: [colour]}]"))


def test_unknown_cross_key_names_nearest(tmp_path: Path) -> None:
    from terarec.config import ConfigError

    with pytest.raises(ConfigError, match="columns"):
        load_config(None, ["data.crosses=[{name: c, kind: interaction, colums: [a]}]"])


def test_managed_vocabulary_with_fused_engine_trains_and_reloads(xor_data: Path, tmp_path: Path) -> None:
    from terarec.embedding.vocabulary import ManagedVocabulary
    from terarec.train.loop import load_task

    cross = "data.crosses=[{name: item_x_device, kind: interaction, columns: [item_id, device]}]"
    config = _config(xor_data, tmp_path, "data.sparse=[user_id]", cross, "embedding.vocabulary=managed",
                     "embedding.optimizer=rowwise_adagrad", "embedding.learning_rate=0.1")
    result = train(config, progress=False)
    assert result.test["auc"] > 0.8
    task = load_task(result.run_dir)
    vocab = task.inputs.vocabularies["item_x_device"]
    assert isinstance(vocab, ManagedVocabulary)
    assert int(vocab.num_admitted) == 80  # 40 items x 2 devices, each with its own row
    assert task.evaluate("test")["auc"] == pytest.approx(result.test["auc"])


def test_managed_vocabulary_needs_a_sparse_optimizer(xor_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rowwise_adagrad"):
        build_task(_config(xor_data, tmp_path, "embedding.vocabulary=managed"))
