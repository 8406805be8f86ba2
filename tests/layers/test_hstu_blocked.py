"""The blocked HSTU attention equals the dense reference in float64, forward and gradients: ragged
lengths, with and without the time bias, pointwise and softmax, with a cached history and
candidates (M-FALCON), in one tile or in many; each test runs with the C++ kernel allowed (where
it applies) and with the torch tiles forced (``TERAREC_HSTU_KERNEL``)."""

from __future__ import annotations

import pytest
import torch

from terarec.layers.hstu import AttentionLayout, HSTUStack, RelativeBias, blocked_hstu_attention, hstu_attention
from terarec.layers import hstu_kernel
from terarec.layers.hstu_kernel import KERNEL_CHOICES, KERNEL_ENV

HEADS, QK, V = 2, 3, 4


@pytest.fixture(autouse=True, params=KERNEL_CHOICES)
def kernel_choice(request, monkeypatch):
    monkeypatch.setenv(KERNEL_ENV, request.param)
    monkeypatch.setattr(hstu_kernel, "KERNEL_MIN_LENGTH", 0)  # the kernel on these short rows too


def _layout(lengths, n, with_times, cached=None, candidates=None, generator=None):
    lengths = torch.tensor(lengths)
    total = int(lengths.sum())
    times = torch.cumsum(torch.randint(0, 4000, (total,), generator=generator), 0) if with_times else None
    query_times = None if times is None else times + torch.randint(0, 100, (total,), generator=generator)
    cached_lengths = None if cached is None else torch.tensor(cached)
    cached_times = None
    if cached is not None and with_times:
        cached_times = torch.randint(0, 10**5, (int(cached_lengths.sum()),), generator=generator)
    num_candidates = None if candidates is None else torch.tensor(candidates)
    return AttentionLayout(lengths, n, times, query_times, 16, num_candidates, cached_lengths, cached_times)


def _both(layout, softmax, with_position, tile_elements, seed=0):
    """(outputs, gradients) of the reference and the blocked op on the same float64 inputs."""
    generator = torch.Generator().manual_seed(seed)
    b, tq, tk = layout.batch, layout.query_length, layout.key_length
    bias = RelativeBias(layout.max_length, 16, position=with_position).double()
    with torch.no_grad():
        for weights in (bias.position_weights, bias.time_weights):
            if weights is not None:
                weights.normal_(generator=generator)
    q = torch.randn(b, HEADS, tq, QK, generator=generator, dtype=torch.float64)
    k = torch.randn(b, HEADS, tk, QK, generator=generator, dtype=torch.float64)
    v = torch.randn(b, HEADS, tk, V, generator=generator, dtype=torch.float64)
    # Only real queries count (padding rows are dropped by the layer), with a random weighting.
    real = torch.zeros(b * tq, dtype=torch.float64).index_fill_(0, layout.query_index, 1.0).view(b, 1, tq, 1)
    upstream = torch.randn(b, HEADS, tq, V, generator=generator, dtype=torch.float64) * real
    time_table = bias.time_weights if layout.query_times is not None else None
    tables = [t for t in (bias.position_weights, time_table) if t is not None]
    results = []
    for blocked in (False, True):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        if blocked:  # token-major (B, T, H, w) in and out
            token_major = [t.transpose(1, 2) for t in inputs]
            out = blocked_hstu_attention(*token_major, layout, bias.position_weights, bias.time_weights, 7,
                                         softmax=softmax, tile_elements=tile_elements).transpose(1, 2)
        else:
            out = hstu_attention(*inputs, layout.mask.unsqueeze(1), bias(layout.relative, layout.buckets),
                                 scale_length=7, softmax=softmax)
        grads = torch.autograd.grad((out * upstream).sum(), inputs + tables)
        results.append((out * real, grads))
    return results


CASES = {
    "causal": dict(lengths=[5, 9, 1, 7], n=12),
    "cached+candidates": dict(lengths=[4, 2, 5], n=16, cached=[6, 0, 3], candidates=[3, 2, 0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("with_times", [False, True])
@pytest.mark.parametrize("tile_elements", [1, 64, 1 << 20])  # 1 x 1 tiles, a few, one
def test_blocked_equals_reference_forward_and_gradients(case, softmax, with_times, tile_elements) -> None:
    generator = torch.Generator().manual_seed(3)
    layout = _layout(**CASES[case], with_times=with_times, generator=generator)
    (expected, expected_grads), (got, got_grads) = _both(layout, softmax, True, tile_elements)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert len(got_grads) == len(expected_grads) == 4 + with_times  # q, k, v, position table (, time table)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)


def test_without_position_bias_and_without_any_bias() -> None:
    layout = _layout([6, 3], 8, with_times=True, generator=torch.Generator().manual_seed(4))
    (expected, expected_grads), (got, got_grads) = _both(layout, False, False, 1)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)
    plain = _layout([6, 3], 8, with_times=False)
    (expected, expected_grads), (got, got_grads) = _both(plain, False, False, 1)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)


def test_gradcheck_on_a_small_ragged_batch() -> None:
    generator = torch.Generator().manual_seed(5)
    layout = _layout([4, 2], 6, with_times=True, generator=generator)
    q = torch.randn(2, 4, 1, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    k = torch.randn(2, 4, 1, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    v = torch.randn(2, 4, 1, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    position = torch.randn(11, dtype=torch.float64, generator=generator, requires_grad=True)
    time = torch.randn(16, dtype=torch.float64, generator=generator, requires_grad=True)
    real = torch.tensor([1.0, 1, 1, 1, 1, 1, 0, 0], dtype=torch.float64).view(2, 4, 1, 1)

    def attention(q, k, v, position, time):  # (B, T, H, w) in and out
        return blocked_hstu_attention(q, k, v, layout, position, time, 6, tile_elements=1) * real

    assert torch.autograd.gradcheck(attention, (q, k, v, position, time))


@pytest.mark.parametrize("softmax", [False, True])
def test_stack_blocked_equals_reference_in_training_and_with_mfalcon(softmax) -> None:
    options = dict(embedding_dim=8, num_layers=2, num_heads=2, max_length=12, dropout=0.0, softmax=softmax)
    torch.manual_seed(0)
    reference = HSTUStack(HSTUStack.Options(**options, attention="reference")).double()
    blocked = HSTUStack(HSTUStack.Options(**options)).double()
    blocked.load_state_dict(reference.state_dict())
    x = torch.randn(12, 8, dtype=torch.float64)
    lengths, times = torch.tensor([3, 7, 2]), torch.cumsum(torch.randint(0, 9000, (12,)), 0)
    outputs = []
    for stack in (reference, blocked):
        inputs = x.clone().requires_grad_()
        out = stack(inputs, lengths, times)
        out.square().sum().backward()
        outputs.append((out, inputs.grad, [p.grad for p in stack.parameters()]))
        stack.eval()
        cache = stack.cache_history(x[:7], times[:7])
        outputs[-1] += (stack.score_candidates(cache, x[7:], times[7:] + 10**6, micro_batch=2),)
    (out_r, grad_r, params_r, scores_r), (out_b, grad_b, params_b, scores_b) = outputs
    torch.testing.assert_close(out_b, out_r, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grad_b, grad_r, atol=1e-12, rtol=1e-10)
    for g, e in zip(params_b, params_r, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(scores_b, scores_r, atol=1e-12, rtol=1e-10)
