"""HSTU for next-item retrieval: shapes, causality, padding, time bias, softmax switch, learning."""

from __future__ import annotations

import torch

from terarec.models.hstu import HSTU
from tests.models.sequences import (
    batch,
    check_causal,
    check_padding_invariance,
    check_scores,
    inputs,
    learns_the_cycle,
)


def _model(**options) -> HSTU:
    torch.manual_seed(0)
    config = HSTU.Config(embedding_dim=16, num_layers=2, num_heads=2, max_length=10, num_negatives=8, **options)
    return HSTU(config, inputs())


def test_scores_the_catalogue_without_row_zero() -> None:
    check_scores(_model(), [[1, 2, 3], [4], [5, 6, 7, 8, 9]])


def test_causal_and_padding_invariant() -> None:
    for options in ({}, {"softmax": True}, {"query_time": "own"}):
        model = _model(**options)
        check_causal(model, [3, 1, 4, 1, 5])
        check_padding_invariance(model, [1, 2, 3, 4, 5, 6, 7, 8], [9, 2, 6])


def test_time_gaps_change_the_user_vector() -> None:
    model = _model().eval()
    with torch.no_grad():
        minute = model.user_vectors(batch([[1, 2, 3]], [[0, 60, 120]], target_timestamps=[180]))
        month = model.user_vectors(batch([[1, 2, 3]], [[0, 60, 120]], target_timestamps=[120 + 30 * 86400]))
        no_time = _model(num_time_buckets=0).eval()
        a = no_time.user_vectors(batch([[1, 2, 3]], [[0, 60, 120]], target_timestamps=[180]))
        b = no_time.user_vectors(batch([[1, 2, 3]], [[0, 60, 120]], target_timestamps=[120 + 30 * 86400]))
    assert not torch.allclose(minute, month)  # query_time "next": the target's time counts
    torch.testing.assert_close(a, b)


def test_user_vectors_without_autograd_equal_the_last_outputs() -> None:
    """Eval mode without autograd takes the cached-history path (``cache_history`` of all but the
    last position, then the last as a candidate): the same vectors as the full stack's last
    outputs, for histories of several lengths (one of a single event) and a distinct request time."""
    for options in ({}, {"softmax": True}, {"query_time": "own"}, {"num_time_buckets": 0}, {"num_actions": 2}):
        model = _model(**options).eval()
        histories = [[3, 1, 4, 1, 5, 9, 2], [6], [5, 3, 5]]
        times = [[0, 60, 120, 500, 9000, 9100, 86400], [7], [10, 20, 4000]]
        users = batch(histories, times, target_timestamps=[90000, 50, 4100])
        users.actions = torch.rand(users.timestamps.shape[0], options.get("num_actions", 0))
        with torch.no_grad():
            cached = model.user_vectors(users)
            full = model.encode(users, None, users.lengths)[torch.cumsum(users.lengths, 0) - 1]
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
        with torch.enable_grad():  # training's path is the plain stack
            torch.testing.assert_close(model.user_vectors(users), full, atol=1e-5, rtol=0)


def test_softmax_switch_changes_attention() -> None:
    pointwise, softmax = _model(), _model(softmax=True)
    softmax.load_state_dict(pointwise.state_dict())
    history = batch([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(pointwise.eval().user_vectors(history), softmax.eval().user_vectors(history))


def test_actions_enter_the_input() -> None:
    model = _model(num_actions=2).eval()
    history = batch([[1, 2, 3]])
    liked = batch([[1, 2, 3]])
    liked.actions = torch.tensor([[0.0, 1.0]] * 3)
    history.actions = torch.zeros(3, 2)
    with torch.no_grad():
        assert not torch.allclose(model.user_vectors(history), model.user_vectors(liked))


def test_loss_is_finite_and_differentiable() -> None:
    model = _model(in_batch=True)
    loss = model.loss(batch([[1, 2, 3, 4], [5, 6]]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.stack.layers[0].f1.weight.grad is not None


def test_learns_a_deterministic_next_item() -> None:
    model = HSTU(HSTU.Config(embedding_dim=16, num_layers=1, max_length=8, dropout=0.0, num_negatives=11), inputs())
    assert learns_the_cycle(model) > 0.9
