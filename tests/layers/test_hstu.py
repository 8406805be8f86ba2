"""HSTU layer pieces: time buckets, pointwise attention (no softmax) and its softmax switch, the stack."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from terarec.layers.hstu import (
    AttentionLayout,
    HSTULayer,
    HSTUStack,
    RelativeBias,
    causal_mask,
    hstu_attention,
    time_buckets,
)


def test_time_buckets_on_hand_picked_gaps() -> None:
    gaps = torch.tensor([0, 1, -1, 2, 60, 3600, 86400, 10**12])
    expected = [0, 0, 0, 2, 13, 27, 37, 49]  # floor(ln(gap) / 0.301), capped at 49
    assert [math.floor(math.log(g) / 0.301) for g in (2, 60, 3600, 86400)] == expected[3:7]
    assert time_buckets(gaps, num_buckets=50).tolist() == expected


def test_pointwise_attention_is_unnormalised_silu_over_n() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 4, 3), torch.randn(1, 1, 4, 3), torch.randn(1, 1, 4, 2)
    bias = torch.randn(1, 1, 4, 4)
    mask = causal_mask(4)
    out, weights = hstu_attention(q, k, v, mask, bias, scale_length=10, return_weights=True)
    expected = (F.silu(q @ k.transpose(-1, -2) + bias) / 10) * mask
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(out, expected @ v)
    assert not torch.allclose(weights.sum(-1), torch.ones(4))  # no softmax: rows do not sum to 1
    assert (weights[..., ~mask] == 0).all()

    _, soft = hstu_attention(q, k, v, mask, bias, softmax=True, return_weights=True)
    torch.testing.assert_close(soft.sum(-1), torch.ones(1, 1, 4))
    torch.testing.assert_close(soft, torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(3) + bias).masked_fill(~mask, -torch.inf), -1))


def test_relative_bias_indexes_positions_and_time_buckets() -> None:
    bias = RelativeBias(max_length=4, num_buckets=3)
    with torch.no_grad():
        bias.position_weights.copy_(torch.arange(7.0))  # weight of i - j is i - j + 3
        bias.time_weights.copy_(torch.tensor([0.0, 10.0, 20.0]))
    buckets = torch.tensor([[[0, 1], [2, 0]]])
    relative = torch.tensor([[[0, -1], [1, 0]]])  # query position minus key position
    out = bias(relative, buckets)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[3.0, 12.0], [24.0, 3.0]]


def test_stack_is_causal_padding_invariant_and_exposes_keys_values() -> None:
    torch.manual_seed(0)
    stack = HSTUStack(HSTUStack.Options(embedding_dim=8, num_layers=2, num_heads=2, max_length=6, dropout=0.0)).eval()
    x, lengths, times = torch.randn(7, 8), torch.tensor([4, 3]), torch.tensor([0, 5, 50, 5000, 0, 1, 2])
    with torch.no_grad():
        out, cache = stack(x, lengths, times, return_cache=True)
        alone = stack(x[4:], lengths[1:], times[4:])
        changed = x.clone()
        changed[3] += 1.0
        later = stack(changed, lengths, times)
    assert out.shape == (7, 8) and len(cache.keys_values) == 2 and cache.keys_values[0][0].shape == (7, 2 * 8)
    assert cache.lengths.tolist() == [4, 3]
    torch.testing.assert_close(out[4:], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(later[:3], out[:3])
    assert not torch.allclose(later[3], out[3])


def test_training_recomputes_the_projections_with_the_same_gradients() -> None:
    """In training the layer recomputes eq. (1) in backward (checkpoint): outputs and every gradient
    equal those of the plain graph (eval mode with dropout 0, gradients on), in float64."""
    torch.manual_seed(0)
    layer = HSTULayer(8, 2, 4, 4, dropout=0.0, max_length=6, num_buckets=16).double()
    layer.recompute_min_tokens = 7  # this call's tokens: recompute (longer calls do by default)
    x = torch.randn(7, 8, dtype=torch.float64)
    times = torch.tensor([0, 5, 50, 5000, 0, 1, 2])
    runs = []
    for training in (True, False):
        layer.train(training)
        layer.zero_grad()
        inputs = x.clone().requires_grad_()
        out = layer(inputs, AttentionLayout(torch.tensor([4, 3]), 6, times, None, 16))[0]
        (out * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        runs.append([out, inputs.grad] + [p.grad.clone() for p in layer.parameters()])
    for checkpointed, plain in zip(*runs):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-12, atol=1e-12)
