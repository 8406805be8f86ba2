"""SASRec: shapes, causality, padding invariance, the shared retrieval loss, learning."""

from __future__ import annotations

import torch

from terarec.models.sasrec import SASRec
from tests.models.sequences import (
    batch,
    check_causal,
    check_padding_invariance,
    check_scores,
    inputs,
    learns_the_cycle,
)


def _model(**options) -> SASRec:
    torch.manual_seed(0)
    options = {"num_negatives": 8, **options}
    return SASRec(SASRec.Config(embedding_dim=16, num_layers=2, num_heads=2, max_length=10, **options), inputs())


def test_scores_the_catalogue_without_row_zero() -> None:
    check_scores(_model(), [[1, 2, 3], [4], [5, 6, 7, 8, 9]])


def test_causal_and_padding_invariant() -> None:
    model = _model()
    check_causal(model, [3, 1, 4, 1, 5])
    check_padding_invariance(model, [1, 2, 3, 4, 5, 6, 7, 8], [9, 2, 6])


def test_too_long_a_history_is_an_error() -> None:
    model = _model().eval()
    try:
        model.user_vectors(batch([list(range(1, 12))]))
    except ValueError as error:
        assert "max_length" in str(error)
    else:
        raise AssertionError("expected a ValueError")


def test_loss_is_finite_and_differentiable() -> None:
    model = _model(in_batch=True, num_negatives=0)
    loss = model.loss(batch([[1, 2, 3, 4], [5, 6]]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()


def test_learns_a_deterministic_next_item() -> None:
    model = SASRec(SASRec.Config(embedding_dim=16, num_layers=1, max_length=8, dropout=0.0, num_negatives=11), inputs())
    assert learns_the_cycle(model) > 0.9
