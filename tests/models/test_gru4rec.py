"""GRU4Rec: shapes, causality, padding invariance (packed sequences), learning."""

from __future__ import annotations

import torch

from terarec.models.gru4rec import GRU4Rec
from tests.models.sequences import (
    batch,
    check_causal,
    check_padding_invariance,
    check_scores,
    inputs,
    learns_the_cycle,
)


def _model(**options) -> GRU4Rec:
    torch.manual_seed(0)
    return GRU4Rec(GRU4Rec.Config(embedding_dim=16, num_negatives=8, **options), inputs())


def test_scores_the_catalogue_without_row_zero() -> None:
    check_scores(_model(), [[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    check_scores(_model(hidden_dim=24, num_layers=2), [[1, 2, 3], [4]])


def test_causal_and_padding_invariant() -> None:
    model = _model()
    check_causal(model, [3, 1, 4, 1, 5])
    check_padding_invariance(model, [1, 2, 3, 4, 5, 6, 7, 8], [9, 2, 6])


def test_loss_is_finite_and_differentiable() -> None:
    model = _model()
    loss = model.loss(batch([[1, 2, 3, 4], [5, 6]]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.gru.weight_hh_l0.grad is not None


def test_learns_a_deterministic_next_item() -> None:
    model = GRU4Rec(GRU4Rec.Config(embedding_dim=16, dropout=0.0, num_negatives=11), inputs())
    assert learns_the_cycle(model) > 0.9
