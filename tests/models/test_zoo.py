"""The classic ranking zoo: DCNv2 (and its cross network), DeepFM (and the FM term), MMoE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.layers.cross import CrossNetV2, factorization_machine
from terarec.models import check_model_options, model_class
from terarec.models.dcnv2 import DCNv2
from terarec.models.deepfm import DeepFM
from terarec.models.inputs import ModelInputs
from terarec.models.mmoe import MMoE
from terarec.train.experiment import load_config
from terarec.train.loop import train
from tests.train.test_train import _ctr_events


def _inputs(num_dense: int = 0, labels: tuple[str, ...] = ("click",)) -> ModelInputs:
    vocabularies = {"a": ExactVocabulary(np.arange(5)), "b": ExactVocabulary(np.arange(7))}
    return ModelInputs(vocabularies=vocabularies, num_dense=num_dense, labels=list(labels))


def _batch(num_dense: int = 0, num_labels: int = 1) -> CTRBatch:
    """Two examples, features a and b, one id each."""
    features = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.tensor([1, 1, 1, 1]))
    return CTRBatch(features, torch.randn(2, num_dense), torch.zeros(2, num_labels), torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------- layers


def test_cross_layer_matches_the_formula_by_hand() -> None:
    cross = CrossNetV2(2, num_layers=1)
    with torch.no_grad():
        cross.layers[0].projection.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        cross.layers[0].projection.bias.copy_(torch.tensor([0.5, 1.0]))
    x0 = torch.tensor([[1.0, 3.0]])
    # W x0 + b = [1 + 6 + 0.5, -3 + 1] = [7.5, -2]; x0 ⊙ that = [7.5, -6]; + x0 = [8.5, -3]
    assert torch.allclose(cross(x0), torch.tensor([[8.5, -3.0]]))


def test_stacked_cross_layers_keep_x0() -> None:
    torch.manual_seed(0)
    cross = CrossNetV2(6, num_layers=3)
    x0 = torch.randn(4, 6)
    x = x0
    for layer in cross.layers:
        W, b = layer.projection.weight, layer.projection.bias
        x = x0 * (x @ W.T + b) + x
    assert torch.allclose(cross(x0), x, atol=1e-6)


def test_low_rank_cross_factors_w() -> None:
    torch.manual_seed(0)
    cross = CrossNetV2(10, num_layers=2, low_rank=3)
    x0 = torch.randn(4, 10)
    assert cross(x0).shape == (4, 10)
    down, up = cross.layers[0].projection  # V^T (3, 10), U (10, 3)
    assert down.weight.shape == (3, 10) and up.weight.shape == (10, 3)
    W = up.weight @ down.weight  # rank 3
    assert torch.linalg.matrix_rank(W) == 3
    expected = x0 * (x0 @ W.T + up.bias) + x0
    assert torch.allclose(cross.layers[0](x0, x0), expected, atol=1e-5)


def test_mixture_of_low_rank_experts_shape() -> None:
    cross = CrossNetV2(10, num_layers=2, low_rank=3, num_experts=4)
    assert cross(torch.randn(5, 10)).shape == (5, 10)
    with pytest.raises(ValueError, match="needs low_rank"):
        CrossNetV2(10, num_layers=2, num_experts=4)


def test_fm_second_order_is_the_pairwise_sum() -> None:
    torch.manual_seed(0)
    e = torch.randn(3, 5, 4)  # (B, F, d)
    pairwise = torch.stack([sum(e[b, i] @ e[b, j] for i in range(5) for j in range(i + 1, 5)) for b in range(3)])
    assert torch.allclose(factorization_machine(e), pairwise, atol=1e-5)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
@pytest.mark.parametrize("num_dense", [0, 3])
def test_dcnv2_shapes(structure: str, num_dense: int) -> None:
    config = DCNv2.Config(embedding_dim=4, num_cross_layers=2, structure=structure, mlp=[8, 6])
    model = DCNv2(config, _inputs(num_dense, ("click", "like")))
    assert model(_batch(num_dense, 2)).shape == (2, 2)
    width = 2 * 4 + num_dense
    # Stacked: the MLP reads the cross output; parallel: the head reads [cross, MLP(x0)].
    if structure == "stacked":
        assert model.head is None and model.deep[0].in_features == width
    else:
        assert model.head.in_features == width + 6


def test_dcnv2_config_checks_experts_need_rank() -> None:
    with pytest.raises(ConfigError, match="model: num_experts=4 needs low_rank"):
        load_config(None, ["model={name: dcnv2, num_experts: 4}"])


@pytest.mark.parametrize("num_dense", [0, 3])
def test_deepfm_sums_first_order_fm_and_deep(num_dense: int) -> None:
    torch.manual_seed(0)
    model = DeepFM(DeepFM.Config(embedding_dim=4, mlp=[8]), _inputs(num_dense))
    batch = _batch(num_dense)
    logits = model(batch)
    assert logits.shape == (2, 1)
    rows = model.sparse_arch(batch.sparse_features).values().view(2, 2, 8)  # [e (4), w (1), unused (3)]
    embeddings, weights = rows[..., :4], rows[..., 4]
    first = model.bias + weights.sum(1)
    if num_dense:
        first = first + batch.dense_features @ model.dense_weights.weight[0]
    second = sum(embeddings[:, i] @ embeddings[:, j].T for i in range(2) for j in range(i + 1, 2)).diagonal()
    deep = model.deep(torch.cat([embeddings.flatten(1), batch.dense_features], 1))
    assert torch.allclose(logits, deep + (first + second).unsqueeze(1), atol=1e-6)


def test_mmoe_gates_are_softmax_over_experts() -> None:
    torch.manual_seed(0)
    model = MMoE(MMoE.Config(embedding_dim=4, num_experts=3, expert_mlp=[8], tower_mlp=[4]),
                 _inputs(2, ("click", "like", "share")))
    batch = _batch(2, 3)
    logits = model(batch)
    assert logits.shape == (2, 3)  # one logit per task
    x = torch.cat([model.sparse_arch(batch.sparse_features).values(), batch.dense_features], 1)
    gates = model.gate_weights(x)
    assert gates.shape == (2, 3, 3)  # (B, tasks, experts)
    assert (gates > 0).all() and torch.allclose(gates.sum(-1), torch.ones(2, 3))
    assert torch.allclose(gates[:, 1], torch.softmax(model.gates[1](x), -1))
    experts = [expert(x) for expert in model.experts]
    for task, tower in enumerate(model.towers):
        mixed = sum(gates[:, task, i : i + 1] * experts[i] for i in range(3))
        assert torch.allclose(logits[:, task], tower(mixed)[:, 0], atol=1e-6)


def test_mmoe_with_one_label_is_a_single_task_mixture_and_no_label_is_an_error() -> None:
    model = MMoE(MMoE.Config(num_experts=3), _inputs(0, ("click",)))
    assert len(model.towers) == 1 and len(model.gates) == 1
    with pytest.raises(ValueError, match=r"at least one label.*data.labels"):
        MMoE(MMoE.Config(), _inputs(0, ()))


def test_registry_finds_the_zoo() -> None:
    assert model_class("dcnv2") is DCNv2
    assert model_class("deepfm") is DeepFM
    assert model_class("mmoe") is MMoE


@pytest.mark.parametrize("name", ["dcnv2", "deepfm", "mmoe"])
def test_configs_load(name: str) -> None:
    folder = "synthetic" if name == "mmoe" else "frappe"
    config = load_config(Path(__file__).parents[2] / "configs" / folder / f"{name}.yaml")
    assert config.model["name"] == name
    check_model_options(config)


# ----------------------------------------------------------------------------- training on XOR


@pytest.fixture(scope="module")
def xor_two_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Click = item parity XOR device (10% flipped); like = click with another 5% flipped."""
    events = _ctr_events()
    rng = np.random.default_rng(1)
    click = events.column("click").to_numpy()
    like = np.where(rng.random(len(click)) < 0.05, 1 - click, click).astype(np.float32)
    events = events.append_column("like", pa.array(like))
    folder = tmp_path_factory.mktemp("xor2") / "ds"
    data = SourceData("xor", "test", "events", [events], sparse=["user_id", "item_id", "device"],
                      labels=["click", "like"])
    write_dataset(data, folder, progress=False)
    return folder


@pytest.mark.parametrize(
    ("model", "labels"),
    [
        ("{name: dcnv2, embedding_dim: 8, num_cross_layers: 2, structure: stacked, mlp: [16]}", "[click]"),
        ("{name: dcnv2, embedding_dim: 8, num_cross_layers: 2, low_rank: 4, num_experts: 2, mlp: [16]}", "[click]"),
        ("{name: dcnv2, embedding_dim: 8, num_cross_layers: 2, structure: stacked, mlp: []}", "[click]"),
        ("{name: deepfm, embedding_dim: 8, mlp: [16]}", "[click]"),
        ("{name: deepfm, embedding_dim: 8, mlp: []}", "[click]"),
        ("{name: mmoe, embedding_dim: 8, num_experts: 3, expert_mlp: [16], tower_mlp: [8]}", "[click, like]"),
    ],
    ids=["dcnv2-stacked", "dcnv2-mixture-parallel", "dcnv2-cross-only", "deepfm", "deepfm-fm-only", "mmoe"],
)
def test_zoo_learns_xor(model: str, labels: str, xor_two_labels: Path, tmp_path: Path) -> None:
    config = load_config(None, [
        "task=ctr", f"data.path={xor_two_labels}", f"data.labels={labels}", "data.sparse=[item_id, device]",
        "data.batch_size=64", f"model={model}", "train.epochs=3", "train.learning_rate=0.03",
        "train.threads=1", "train.patience=0", f"run_dir={tmp_path}",
    ])
    result = train(config, progress=False)
    if labels == "[click]":
        assert result.test["auc"] > 0.75
    else:
        assert result.test["click_auc"] > 0.75
        assert result.test["like_auc"] > 0.75
        assert result.test["mean_auc"] == pytest.approx((result.test["click_auc"] + result.test["like_auc"]) / 2)
        assert json.loads((result.run_dir / "metrics.json").read_text())["selection_metric"] == "mean_auc"
