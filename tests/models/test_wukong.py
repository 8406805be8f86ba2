"""Wukong and its blocks: the optimized FM, FMB, LCB, the interaction stack, training on XOR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.layers.fm import (
    FactorizationMachineBlock,
    LinearCompressBlock,
    OptimizedFM,
)
from terarec.models import model_class
from terarec.models.inputs import ModelInputs
from terarec.models.wukong import Wukong, WukongLayer
from terarec.train.experiment import load_config
from terarec.train.loop import train


def test_optimized_fm_equals_naive_product() -> None:
    torch.manual_seed(0)
    fm = OptimizedFM(num_embeddings=6, rank=3)
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    y = fm.projection.detach().double()
    naive = torch.stack([(x[b] @ x[b].T) @ y for b in range(4)])  # (X X^T) Y, the O(n^2 d) order
    assert torch.allclose(fm.double()(x), naive, atol=1e-10)


def test_fm_block_shapes_and_gradients() -> None:
    block = FactorizationMachineBlock(num_embeddings=6, embedding_dim=5, num_outputs=3, rank=2, hidden=[7])
    x = torch.randn(4, 6, 5, requires_grad=True)
    out = block(x)
    assert out.shape == (4, 3, 5)
    out.sum().backward()
    assert block.fm.projection.grad is not None and x.grad is not None


def test_linear_compress_block_is_linear_over_the_embedding_axis() -> None:
    torch.manual_seed(0)
    lcb = LinearCompressBlock(num_embeddings=6, num_outputs=3)
    x, z = torch.randn(4, 6, 5), torch.randn(4, 6, 5)
    assert lcb(x).shape == (4, 3, 5)
    assert torch.allclose(lcb(2.0 * x + z), 2.0 * lcb(x) + lcb(z), atol=1e-5)
    # Output embedding j is sum_i W[j, i] x_i, the same weights for every coordinate of d.
    expected = torch.einsum("ji,bid->bjd", lcb.weight, x)
    assert torch.allclose(lcb(x), expected, atol=1e-6)
    # Each coordinate of d is mapped on its own.
    assert torch.allclose(lcb(x[:, :, :2]), lcb(x)[:, :, :2], atol=1e-6)


@pytest.mark.parametrize("num_embeddings, projected", [(6, True), (8, False)])
def test_layer_residual_projection_only_where_count_changes(num_embeddings: int, projected: bool) -> None:
    layer = WukongLayer(num_embeddings, 5, num_fm_embeddings=3, num_lcb_embeddings=5, fm_rank=2, fmb_mlp=[7])
    assert (layer.residual is not None) == projected
    out = layer(torch.randn(4, num_embeddings, 5))
    assert out.shape == (4, 8, 5)
    # LN over d: every output embedding has zero mean and unit variance at initialisation.
    assert torch.allclose(out.mean(-1), torch.zeros(4, 8), atol=1e-5)


def test_identity_residual_is_added() -> None:
    torch.manual_seed(0)
    layer = WukongLayer(4, 5, num_fm_embeddings=2, num_lcb_embeddings=2, fm_rank=2, fmb_mlp=[])
    x = torch.randn(3, 4, 5)
    without = layer.norm(torch.cat([layer.fmb(x), layer.lcb(x)], dim=1))
    assert torch.allclose(layer(x), layer.norm(torch.cat([layer.fmb(x), layer.lcb(x)], dim=1) + x), atol=1e-6)
    assert not torch.allclose(layer(x), without, atol=1e-3)


def _inputs(num_dense: int) -> ModelInputs:
    vocabularies = {"a": ExactVocabulary(np.arange(5)), "b": ExactVocabulary(np.arange(7))}
    return ModelInputs(vocabularies=vocabularies, num_dense=num_dense, labels=["click", "like"])


def _batch(num_dense: int) -> CTRBatch:
    return CTRBatch(
        KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.tensor([1, 1, 1, 1])),
        torch.randn(2, num_dense), torch.zeros(2, 2), torch.zeros(2, dtype=torch.long),
    )


@pytest.mark.parametrize("num_dense", [0, 3])
def test_wukong_forward_shapes(num_dense: int) -> None:
    config = Wukong.Config(embedding_dim=4, num_layers=3, num_fm_embeddings=3, num_lcb_embeddings=2, fm_rank=2,
                           fmb_mlp=[8], top_mlp=[16], dense_embeddings=2, dense_mlp=[8])
    model = Wukong(config, _inputs(num_dense))
    assert model.embed(_batch(num_dense)).shape == (2, 2 + (2 if num_dense else 0), 4)  # X_0: (B, n_0, d)
    # n_0 = 2 or 4 != n_F + n_L = 5: only the first layer projects its residual.
    assert [layer.residual is not None for layer in model.interaction_stack] == [True, False, False]
    logits = model(_batch(num_dense))
    assert logits.shape == (2, 2)
    logits.sum().backward()


def test_wukong_rejects_empty_layers() -> None:
    with pytest.raises(ConfigError, match="model.num_layers"):
        Wukong(Wukong.Config(num_layers=0), _inputs(0))


def test_registry_finds_wukong_and_rejects_unknown_keys() -> None:
    assert model_class("wukong") is Wukong
    config = load_config(None, ["task=ctr", "model={name: wukong, num_layers: 3, fm_rank: 4}"])
    assert config.model["num_layers"] == 3
    with pytest.raises(ConfigError) as error:
        load_config(None, ["task=ctr", "model={name: wukong, num_layer: 3}"])
    assert "'model.num_layer'" in str(error.value) and "num_layers" in str(error.value)


def test_frappe_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "configs" / "frappe" / "wukong.yaml")
    assert config.model["name"] == "wukong"


def test_wukong_learns_the_item_x_device_interaction(xor_data: Path, tmp_path: Path) -> None:
    # Click is item parity XOR device: no single feature carries it, and no cross is declared.
    model = ("{name: wukong, embedding_dim: 8, num_layers: 2, num_fm_embeddings: 4, num_lcb_embeddings: 4,"
             " fm_rank: 4, fmb_mlp: [32], top_mlp: [32]}")
    config = load_config(None, [
        "task=ctr", f"data.path={xor_data}", "data.labels=[click]", "data.batch_size=64",
        "data.sparse=[item_id, device]", f"model={model}",
        "train.epochs=3", "train.learning_rate=0.01", "train.threads=1", "train.patience=0", f"run_dir={tmp_path}",
    ])
    result = train(config, progress=False)
    assert result.test["auc"] > 0.8


# ----------------------------------------------------------------------------- embedding layer


def _three_feature_batch() -> tuple[ModelInputs, CTRBatch]:
    vocabularies = {name: ExactVocabulary(np.arange(1, 9)) for name in ("user", "item", "hour")}
    inputs = ModelInputs(vocabularies=vocabularies, num_dense=2, labels=["click"])
    features = KeyedJaggedTensor.from_lengths_sync(
        ["user", "item", "hour"], torch.tensor([1, 2, 3, 4, 5, 6]), torch.ones(6, dtype=torch.int32)
    )
    return inputs, CTRBatch(features, torch.randn(2, 2), torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_important_features_get_several_embeddings_and_small_ones_are_grouped() -> None:
    inputs, batch = _three_feature_batch()
    config = Wukong.Config(embedding_dim=4, num_layers=1, feature_embeddings={"user": 3},
                           feature_groups=[["item", "hour"]], group_mlp=[8], dense_embeddings=2)
    model = Wukong(config, inputs)
    x0 = model.embed(batch)
    assert model.num_embeddings == 2 + 3 + 1 and x0.shape == (2, 6, 4)  # n_D + m_user + one group
    # The user's three embeddings are its 12-wide row split in three.
    user_collection = next(c for c, names in zip(model.sparse_arch, model._sparse_keys) if names == ["user"])
    row = user_collection.table_weights()[0][user_collection.vocabularies["user"](torch.tensor([1]))]
    assert torch.allclose(x0[0, 2:5].reshape(-1), row.reshape(-1))
    # The group embedding is the projection of the concatenated item and hour embeddings.
    others = next(c for c, names in zip(model.sparse_arch, model._sparse_keys) if names == ["item", "hour"])
    pooled = others(batch.sparse_features).values()[:1]
    assert torch.allclose(x0[0, 5], model.group_arch[0](pooled)[0], atol=1e-6)
    assert model(batch).shape == (2, 1)


@pytest.mark.parametrize(
    "options, message",
    [({"feature_embeddings": {"nope": 2}}, "feature_embeddings: 'nope'"),
     ({"feature_embeddings": {"user": 0}}, "feature_embeddings.user"),
     ({"feature_groups": [["item"], ["item", "hour"]]}, "two groups"),
     ({"feature_groups": [["user", "x"]]}, "feature_groups: 'x'")],
)
def test_embedding_layout_errors_name_the_field(options: dict, message: str) -> None:
    inputs, _ = _three_feature_batch()
    with pytest.raises(ConfigError, match=message):
        Wukong(Wukong.Config(embedding_dim=4, **options), inputs)
