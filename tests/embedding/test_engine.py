"""Tests for terarec.embedding.engine: fused sparse optimizers against reference updates, dtypes, int8, state."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.collection import PooledEmbeddings
from terarec.embedding.engine import (
    DirectRows,
    EmbeddingEngineConfig,
    FusedPooledEmbeddings,
    quantize_for_inference,
)
from terarec.embedding.exact_vocabulary import ExactVocabulary

DIM = 8
ROWS = {"item": 30, "user": 20}
LR, EPS = 0.1, 1e-8


def make(config: EmbeddingEngineConfig, dim: int = DIM) -> FusedPooledEmbeddings:
    torch.manual_seed(0)
    return FusedPooledEmbeddings({name: DirectRows(rows) for name, rows in ROWS.items()}, dim, config)


def batch(seed: int, batch_size: int = 6, max_len: int = 5) -> KeyedJaggedTensor:
    """Random bags with repeated ids (within a bag and across bags) and some empty bags."""
    generator = torch.Generator().manual_seed(seed)
    lengths, values = [], []
    for rows in ROWS.values():
        feature_lengths = torch.randint(0, max_len + 1, (batch_size,), generator=generator)
        lengths.append(feature_lengths)
        # ids drawn from a few rows only, so that rows repeat
        values.append(torch.randint(0, min(rows, 7), (int(feature_lengths.sum()),), generator=generator))
    return KeyedJaggedTensor.from_lengths_sync(list(ROWS), torch.cat(values), torch.cat(lengths))


def upstream(seed: int, batch_size: int = 6) -> torch.Tensor:
    return torch.randn(batch_size, DIM * len(ROWS), generator=torch.Generator().manual_seed(1000 + seed))


def row_gradients(features: KeyedJaggedTensor, grad_output: torch.Tensor, name: str, rows: int) -> torch.Tensor:
    """dLoss/dW of a sum-pooled table: each id adds its bag's output gradient to its row (dense, reference)."""
    position = list(ROWS).index(name)
    jagged = features[name]
    grads = torch.zeros(rows, DIM, dtype=torch.float64)
    for bag, (begin, end) in enumerate(zip(jagged.offsets()[:-1].tolist(), jagged.offsets()[1:].tolist())):
        for row in jagged.values()[begin:end].tolist():
            grads[row] += grad_output[bag, position * DIM : (position + 1) * DIM].double()
    return grads


def reference_step(optimizer: str, weights: dict, states: dict, features, grad_output, step: int) -> None:
    """One step of the documented update, in float64, on touched rows only."""
    for name, rows in ROWS.items():
        grads = row_gradients(features, grad_output, name, rows)
        touched = torch.unique(features[name].values())
        g = grads[touched]
        w = weights[name]
        if optimizer == "sgd":
            w[touched] -= LR * g
        elif optimizer == "rowwise_adagrad":
            momentum = states[name]["momentum"]
            momentum[touched] += (g * g).mean(dim=1)
            w[touched] -= LR * g / (momentum[touched].sqrt() + EPS).unsqueeze(1)
        else:
            beta1, beta2 = 0.9, 0.999
            m, v = states[name]["exp_avg"], states[name]["exp_avg_sq"]
            m[touched] = beta1 * m[touched] + (1 - beta1) * g
            v[touched] = beta2 * v[touched] + (1 - beta2) * g * g
            m_hat, v_hat = m[touched] / (1 - beta1**step), v[touched] / (1 - beta2**step)
            w[touched] -= LR * m_hat / (v_hat.sqrt() + EPS)


def train_step(emb: FusedPooledEmbeddings, seed: int) -> None:
    features = batch(seed)
    (emb(features).values() * upstream(seed)).sum().backward()


# ----------------------------------------------------------------------------- updates


@pytest.mark.parametrize(
    ("optimizer", "backend"),
    [("rowwise_adagrad", "fbgemm"), ("rowwise_adagrad", "torch"), ("sgd", "fbgemm"), ("sgd", "torch"), ("adam", "torch")],
)
def test_fused_update_matches_the_reference_formula_over_steps(optimizer: str, backend: str) -> None:
    emb = make(EmbeddingEngineConfig(optimizer=optimizer, learning_rate=LR, eps=EPS, backend=backend))
    assert emb.tables.backend == backend
    weights = {name: emb.weight(name).double().clone() for name in ROWS}
    states = {name: {key: s.double().clone() for key, s in emb.optimizer_state(name).items()} for name in ROWS}
    for step in range(1, 4):
        features = batch(step)
        reference_step(optimizer, weights, states, features, upstream(step), step)
        train_step(emb, step)
        for name in ROWS:
            torch.testing.assert_close(emb.weight(name).double(), weights[name], rtol=1e-5, atol=1e-6)
            for key, value in emb.optimizer_state(name).items():
                torch.testing.assert_close(value.double(), states[name][key], rtol=1e-5, atol=1e-7)


def test_rowwise_adagrad_state_is_one_fp32_value_per_row_summing_mean_squared_gradients() -> None:
    emb = make(EmbeddingEngineConfig(learning_rate=LR))
    features = batch(0)
    train_step(emb, 0)
    momentum = emb.optimizer_state("item")["momentum"]
    assert momentum.shape == (ROWS["item"],) and momentum.dtype == torch.float32
    grads = row_gradients(features, upstream(0), "item", ROWS["item"])
    torch.testing.assert_close(momentum.double(), grads.square().mean(dim=1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("backend", ["fbgemm", "torch"])
def test_only_touched_rows_change(backend: str) -> None:
    emb = make(EmbeddingEngineConfig(learning_rate=LR, backend=backend))
    before = {name: emb.weight(name).clone() for name in ROWS}
    features = batch(3)
    train_step(emb, 3)
    for name in ROWS:
        changed = set((emb.weight(name) != before[name]).any(dim=1).nonzero().flatten().tolist())
        assert changed == set(features[name].values().tolist())


def test_backends_agree_over_many_steps() -> None:
    fbgemm = make(EmbeddingEngineConfig(learning_rate=LR, backend="fbgemm"))
    reference = make(EmbeddingEngineConfig(learning_rate=LR, backend="torch"))
    reference.load_state_dict(fbgemm.state_dict())
    for step in range(10):
        train_step(fbgemm, step)
        train_step(reference, step)
    for name in ROWS:
        torch.testing.assert_close(fbgemm.weight(name), reference.weight(name), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- lookup


@pytest.mark.parametrize(("dtype", "backend"), [("fp32", "fbgemm"), ("fp16", "fbgemm"), ("bf16", "torch")])
def test_forward_equals_a_plain_embedding_bag_sum_with_the_same_weights(dtype: str, backend: str) -> None:
    emb = make(EmbeddingEngineConfig(weight_dtype=dtype, backend=backend))
    features = batch(5)
    with torch.no_grad():
        pooled = emb(features)
    assert pooled.keys() == list(ROWS) and pooled.values().dtype == torch.float32
    for name in ROWS:
        jagged = features[name]
        expected = F.embedding_bag(jagged.values(), emb.weight(name).float(), jagged.offsets()[:-1], mode="sum")
        tolerance = 1e-6 if dtype == "fp32" else 1e-2
        torch.testing.assert_close(pooled[name], expected, rtol=tolerance, atol=tolerance)


def test_vocabulary_remap_unknown_ids_and_key_order() -> None:
    vocab = ExactVocabulary(np.array([1000, 2000, 3000], dtype=np.int64))
    emb = FusedPooledEmbeddings({"item": vocab, "user": DirectRows(5)}, DIM)
    # keys in the other order, one id unknown to the vocabulary (-> default row 0, counted)
    features = KeyedJaggedTensor.from_lengths_sync(
        ["user", "item"], torch.tensor([4, 3000, 12345, 1000]), torch.tensor([1, 0, 2, 1])
    )
    with torch.no_grad():
        pooled = emb(features)
    item = emb.weight("item")
    torch.testing.assert_close(pooled["item"][0], item[3] + item[0])
    torch.testing.assert_close(pooled["item"][1], item[1])
    torch.testing.assert_close(pooled["user"][0], emb.weight("user")[4])
    assert int(vocab.unknown_count) == 1


def test_direct_rows_out_of_range_is_an_error_not_a_wrong_row() -> None:
    emb = FusedPooledEmbeddings({"item": DirectRows(10)}, DIM)
    features = KeyedJaggedTensor.from_lengths_sync(["item"], torch.tensor([3, 10]), torch.tensor([2]))
    with pytest.raises(RuntimeError):
        emb(features)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ("dtype", "optimizer", "backend"),
    [("fp32", "rowwise_adagrad", "fbgemm"), ("fp16", "rowwise_adagrad", "fbgemm"), ("fp16", "sgd", "fbgemm"),
     ("bf16", "rowwise_adagrad", "torch"), ("fp16", "adam", "torch"), ("bf16", "sgd", "torch")],
)  # fmt: skip
def test_weights_are_stored_in_the_chosen_dtype_and_state_in_fp32(dtype: str, optimizer: str, backend: str) -> None:
    emb = make(EmbeddingEngineConfig(weight_dtype=dtype, optimizer=optimizer))
    assert emb.tables.backend == backend
    expected = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert all(table.dtype == expected for table in emb.fused_parameters())
    assert all(state.dtype == torch.float32 for state in emb.optimizer_state("item").values())
    before = emb.weight("item").clone()
    train_step(emb, 1)
    assert emb.weight("item").dtype == expected and not torch.equal(emb.weight("item"), before)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_update_is_the_fp32_update_rounded(dtype: str) -> None:
    emb = make(EmbeddingEngineConfig(weight_dtype=dtype, learning_rate=LR, eps=EPS))
    weights = {name: emb.weight(name).double().clone() for name in ROWS}
    states = {name: {"momentum": torch.zeros(rows, dtype=torch.float64)} for name, rows in ROWS.items()}
    features = batch(2)
    reference_step("rowwise_adagrad", weights, states, features, upstream(2), 1)
    train_step(emb, 2)
    half = emb.weight("item").dtype
    ulp = torch.finfo(half).eps
    for name in ROWS:
        # the fp32 result rounded once to the storage dtype: within one unit in the last place
        expected = weights[name].to(half).double()
        torch.testing.assert_close(emb.weight(name).double(), expected, rtol=ulp, atol=1e-6)


def test_fbgemm_backend_refuses_what_its_cpu_kernels_lack() -> None:
    with pytest.raises(ValueError, match="backend"):
        EmbeddingEngineConfig(weight_dtype="bf16", backend="fbgemm")
    with pytest.raises(ValueError, match="backend"):
        EmbeddingEngineConfig(optimizer="adam", backend="fbgemm")
    with pytest.raises(ValueError, match="weight_dtype"):
        EmbeddingEngineConfig(weight_dtype="int8")


# ----------------------------------------------------------------------------- int8 inference


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_int8_inference_is_close_to_the_float_tables(dtype: str) -> None:
    emb = make(EmbeddingEngineConfig(weight_dtype=dtype, init_std=0.1), dim=16)
    quantized = quantize_for_inference(emb)
    features = batch(7, batch_size=32, max_len=6)
    with torch.no_grad():
        expected = emb(features).values()
    got = quantized(features).values()
    assert got.shape == expected.shape and got.dtype == torch.float32
    # each value is off by at most half a quantisation step (row range / 255 / 2), summed over a bag
    widest = max((emb.weight(name).float().amax(1) - emb.weight(name).float().amin(1)).max() for name in ROWS)
    bound = 6 * (widest / 255 / 2) * 1.1 + 1e-3
    assert float((got - expected).abs().max()) <= bound
    assert float((got - expected).abs().max()) > 0  # it really is quantised


def test_int8_inference_from_a_plain_pooled_embeddings() -> None:
    torch.manual_seed(0)
    emb = PooledEmbeddings({"item": ExactVocabulary(np.arange(100, 140))}, 16)
    features = KeyedJaggedTensor.from_lengths_sync(["item"], torch.tensor([100, 139, 120, 5]), torch.tensor([3, 1]))
    with torch.no_grad():
        expected = emb(features).values()
    got = quantize_for_inference(emb)(features).values()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------- reset_rows


@pytest.mark.parametrize("backend", ["fbgemm", "torch"])
def test_reset_rows_reinitialises_weights_and_momentum_of_those_rows_only(backend: str) -> None:
    emb = make(EmbeddingEngineConfig(learning_rate=LR, backend=backend))
    for step in range(3):
        train_step(emb, step)
    momentum = emb.optimizer_state("item")["momentum"]
    rows = torch.tensor([0, 2, 5])
    assert bool((momentum[rows] > 0).all())
    weight_before, momentum_before = emb.weight("item").clone(), momentum.clone()
    emb.reset_rows("item", rows, std=0.5)
    others = torch.ones(ROWS["item"], dtype=torch.bool)
    others[rows] = False
    assert torch.equal(emb.weight("item")[others], weight_before[others])
    assert torch.equal(momentum[others], momentum_before[others])
    assert bool((momentum[rows] == 0).all())
    assert not torch.equal(emb.weight("item")[rows], weight_before[rows])
    assert 0.2 < float(emb.weight("item")[rows].std()) < 1.0
    with pytest.raises(IndexError, match="item"):
        emb.reset_rows("item", [ROWS["item"]])
    with pytest.raises(KeyError, match="nope"):
        emb.reset_rows("nope", [0])


# ----------------------------------------------------------------------------- state and trainer contract


@pytest.mark.parametrize(
    ("optimizer", "dtype"), [("rowwise_adagrad", "fp32"), ("rowwise_adagrad", "fp16"), ("adam", "bf16"), ("sgd", "fp32")]
)
def test_state_dict_round_trip_with_optimizer_state_and_weights_only_load(optimizer: str, dtype: str) -> None:
    config = EmbeddingEngineConfig(optimizer=optimizer, weight_dtype=dtype, learning_rate=LR)
    trained = make(config)
    for step in range(3):
        train_step(trained, step)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = FusedPooledEmbeddings({name: DirectRows(rows) for name, rows in ROWS.items()}, DIM, config)
    restored.load_state_dict(state)
    for key, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    # the optimizer state came back too: the next step is identical
    train_step(trained, 9)
    train_step(restored, 9)
    for name in ROWS:
        assert torch.equal(trained.weight(name), restored.weight(name))


def test_load_state_dict_reports_missing_unexpected_and_wrong_shapes() -> None:
    emb = make(EmbeddingEngineConfig())
    state = emb.state_dict()
    del state["tables.user.momentum"]
    state["tables.other.weight"] = torch.zeros(3, DIM)
    result = emb.load_state_dict(state, strict=False)
    assert result.missing_keys == ["tables.user.momentum"]
    assert result.unexpected_keys == ["tables.other.weight"]  # reported, not raised
    with pytest.raises(RuntimeError, match="tables.other.weight"):
        emb.load_state_dict(state)
    state = emb.state_dict()
    state["tables.item.weight"] = torch.zeros(3, DIM)
    with pytest.raises(RuntimeError, match="expected shape"):
        emb.load_state_dict(state)


def test_tables_are_not_dense_parameters_and_the_dense_optimizer_leaves_them_alone() -> None:
    emb = make(EmbeddingEngineConfig(learning_rate=LR))
    model = nn.ModuleDict({"sparse": emb, "dense": nn.Linear(DIM * len(ROWS), 1)})
    assert list(model.parameters()) == list(model["dense"].parameters())
    assert len(emb.fused_parameters()) == len(ROWS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)  # what the trainer builds
    features = batch(4)
    touched = torch.unique(features["item"].values())
    untouched = [row for row in range(ROWS["item"]) if row not in set(touched.tolist())]
    before = emb.weight("item").clone()
    model["dense"](emb(features).values()).sum().backward()
    optimizer.step()
    assert torch.equal(emb.weight("item")[untouched], before[untouched])
    model.to(torch.float64)  # casting the model leaves the tables (shared with the kernel) as they are
    assert emb.weight("item").dtype == torch.float32


def test_set_learning_rate_changes_the_step_size() -> None:
    small = make(EmbeddingEngineConfig(optimizer="sgd", learning_rate=0.1))
    large = make(EmbeddingEngineConfig(optimizer="sgd"))
    large.load_state_dict(small.state_dict())
    large.set_learning_rate(0.2)
    before = small.weight("item").clone()
    train_step(small, 1)
    train_step(large, 1)
    torch.testing.assert_close(large.weight("item") - before, 2 * (small.weight("item") - before))
