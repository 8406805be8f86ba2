"""DIEN: the AUGRU, the auxiliary loss, and learning what only the history tells."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from terarec.config import ConfigError
from terarec.layers.augru import AUGRU, AUGRUCell
from terarec.models.dien import DIEN
from terarec.train.loop import train
from tests.models.test_din import (
    HISTORY,
    history_config,
    tiny_batch,
    tiny_inputs,
)


def _model(aux_weight: float = 1.0, extra: bool = True) -> DIEN:
    torch.manual_seed(0)
    config = DIEN.Config(embedding_dim=4, history=HISTORY, history_extra=["hist_rating"] if extra else [],
                         aux_weight=aux_weight, mlp=[16])
    return DIEN(config, tiny_inputs(extra=extra))


def test_augru_step_follows_the_equations() -> None:
    torch.manual_seed(0)
    cell = AUGRUCell(3, 2)
    x, h, a = torch.randn(4, 3), torch.randn(4, 2), torch.rand(4)
    W, U = cell.input_gates.weight, cell.hidden_gates.weight
    b = cell.input_gates.bias
    gates_x, gates_h = x @ W.T + b, h @ U.T
    u = torch.sigmoid(gates_x[:, :2] + gates_h[:, :2])
    r = torch.sigmoid(gates_x[:, 2:4] + gates_h[:, 2:4])
    candidate = torch.tanh(gates_x[:, 4:] + r * gates_h[:, 4:])
    u = a.unsqueeze(1) * u
    assert torch.allclose(cell(x, h, a), (1 - u) * h + u * candidate, atol=1e-6)


def test_augru_skips_steps_without_attention() -> None:
    torch.manual_seed(0)
    gru = AUGRU(3, 5)
    inputs = torch.randn(2, 4, 3)
    attention = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.1, 0.4]])
    changed = inputs.clone()
    changed[0, 2:] = 9.0  # padded steps of row 0
    assert torch.allclose(gru(inputs, attention)[0], gru(changed, attention)[0])
    assert torch.allclose(gru(inputs, attention)[0], gru(inputs[:, :2], attention[:, :2])[0])
    assert gru(inputs, torch.zeros(2, 4)).abs().sum() == 0  # no attention: the zero state stays


def test_dien_shapes_and_padding() -> None:
    model = _model()
    model.eval()
    logits = model(tiny_batch([1, 2, 4], [[6, 7], [], [1, 2, 3, 9]], extra=True))
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()
    shorter = model(tiny_batch([1, 2, 4], [[6, 7], [], [3]], extra=True))
    assert torch.allclose(shorter[0], logits[0], atol=1e-6)


def test_dien_loss_adds_the_auxiliary_term() -> None:
    batch = tiny_batch([1, 2, 4], [[6, 7, 8], [], [1, 2, 3, 9]], extra=True)
    model = _model(aux_weight=0.5)
    model.train()
    bce = F.binary_cross_entropy_with_logits(model(batch), batch.labels)
    torch.manual_seed(1)
    loss = model.loss(batch)
    _, behaviors, interests = model._forward(batch)
    torch.manual_seed(1)
    aux = model.auxiliary_loss(behaviors, interests)
    assert aux > 0 and torch.allclose(loss, bce + 0.5 * aux, atol=1e-6)
    # The auxiliary term alone trains the interest extractor and the behaviours' embeddings.
    aux.backward()
    assert model.extractor.weight_ih_l0.grad.abs().sum() > 0
    assert model.behaviors.tables.embeddings["t_item_id"].weight.grad.abs().sum() > 0
    assert torch.allclose(_model(aux_weight=0.0).loss(batch), bce, atol=1e-6)


def test_dien_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="model.aux_weight"):
        DIEN(DIEN.Config(history=HISTORY, aux_weight=-1.0), tiny_inputs())


def test_dien_learns_what_only_the_history_tells(taste_data: Path, tmp_path: Path) -> None:
    model = "model={name: dien, embedding_dim: 8, history: {hist_item_id: item_id, hist_genre: genre}, mlp: [32]}"
    assert train(history_config(taste_data, tmp_path, model), progress=False).test["auc"] > 0.75
