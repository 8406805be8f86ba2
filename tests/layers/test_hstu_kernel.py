"""The C++ HSTU attention kernel equals the dense reference and the torch tiles in float64, forward
and every gradient (Q, K, V, position table, time table): ragged rows, with and without each bias,
time-ordered and unordered timestamps, several tile sizes, through a stack; and the torch tiles
run when ``TERAREC_HSTU_KERNEL=torch`` or when the kernel cannot be built."""

from __future__ import annotations

import warnings

import pytest
import torch

from terarec.layers import hstu_blocked, hstu_kernel
from terarec.layers.hstu import AttentionLayout, HSTUStack, blocked_hstu_attention, hstu_attention, time_buckets
from terarec.layers.hstu_blocked import bucket_starts

HEADS, QK, V, BUCKETS = 2, 3, 4, 16


@pytest.fixture(autouse=True)
def kernel_on_short_rows(monkeypatch):
    """These tests' rows are short: the kernel must run on them all the same."""
    monkeypatch.setattr(hstu_kernel, "KERNEL_MIN_LENGTH", 0)


@pytest.fixture
def built():
    """The compiled kernel (compiled on first use); skips where no C++ toolchain can build it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        module = hstu_kernel._build()
    if module is None:
        pytest.skip("the C++ HSTU kernel could not be built here (see the RuntimeWarning of hstu_kernel)")
    return module


def _layout(lengths, n, times, generator):
    """A plain causal layout; ``times``: None, "ordered" (query times after their keys') or
    "unordered" (random times: negative gaps, ties, no order)."""
    lengths = torch.tensor(lengths)
    total = int(lengths.sum())
    if times is None:
        return AttentionLayout(lengths, n)
    if times == "ordered":
        key_times = torch.cumsum(torch.randint(0, 4000, (total,), generator=generator), 0)
        query_times = key_times + torch.randint(0, 100, (total,), generator=generator)
    else:
        key_times = torch.randint(0, 10**6, (total,), generator=generator)
        query_times = torch.randint(0, 10**6, (total,), generator=generator)
    return AttentionLayout(lengths, n, key_times, query_times, BUCKETS)


def _inputs(layout, with_position, generator):
    """[queries, keys, values (token-major (B, T, H, w)), position table or None, time table or
    None], the (B, T, 1, 1) mask of real queries, and a random upstream gradient on them (the
    layer drops padded queries)."""
    b, t = layout.batch, layout.query_length

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    position = normal(2 * layout.max_length - 1) if with_position else None
    time = normal(BUCKETS) if layout.query_times is not None else None
    tensors = [normal(b, t, HEADS, QK), normal(b, t, HEADS, QK), normal(b, t, HEADS, V), position, time]
    real = torch.zeros(b * t, dtype=torch.float64).index_fill_(0, layout.query_index, 1.0).view(b, t, 1, 1)
    return tensors, real, normal(b, t, HEADS, V) * real


def _run(kind, layout, tensors, upstream, monkeypatch, kernel_tiles=(128, 256)):
    """(output, gradients of the present tensors) of one implementation: "reference", "torch", "cpp"."""
    inputs = [None if t is None else t.clone().requires_grad_() for t in tensors]
    q, k, v, position, time = inputs
    if kind == "reference":
        n = layout.max_length
        relative = layout.relative
        bias = 0.0
        if position is not None:
            bias = bias + position[(relative + n - 1).clamp(0, 2 * n - 2)]
        if time is not None:
            bias = bias + time[layout.buckets]
        heads_first = [t.transpose(1, 2) for t in (q, k, v)]
        mask = layout.mask.unsqueeze(1)
        out = hstu_attention(*heads_first, mask, None if isinstance(bias, float) else bias.unsqueeze(1),
                             scale_length=7).transpose(1, 2)
    else:
        monkeypatch.setenv(hstu_kernel.KERNEL_ENV, kind)
        out = blocked_hstu_attention(q, k, v, layout, position, time, 7, kernel_tiles=kernel_tiles)
    present = [t for t in inputs if t is not None]
    return out, torch.autograd.grad((out * upstream).sum(), present)


def _assert_same(got, expected, real) -> None:
    (out, grads), (expected_out, expected_grads) = got, expected
    torch.testing.assert_close(out * real, expected_out * real, atol=1e-12, rtol=1e-10)
    assert len(grads) == len(expected_grads)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)


def _counting(function, calls):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize("times", [None, "ordered", "unordered"])
@pytest.mark.parametrize("with_position", [True, False])
@pytest.mark.parametrize("kernel_tiles", [(1, 1), (2, 3), (4, 2), (128, 256)])
def test_kernel_equals_reference_and_torch_tiles(built, monkeypatch, times, with_position, kernel_tiles) -> None:
    generator = torch.Generator().manual_seed(1)
    layout = _layout([5, 9, 1, 7, 0, 9], 12, times, generator)
    tensors, real, upstream = _inputs(layout, with_position, generator)
    calls = []
    monkeypatch.setattr(hstu_blocked.FusedHSTUAttention, "apply", _counting(hstu_blocked.FusedHSTUAttention.apply, calls))
    cpp = _run("cpp", layout, tensors, upstream, monkeypatch, kernel_tiles)
    assert len(calls) == 1  # the kernel ran
    torch_tiles = _run("torch", layout, tensors, upstream, monkeypatch)
    assert len(calls) == 1  # the torch tiles ran
    reference = _run("reference", layout, tensors, upstream, monkeypatch)
    _assert_same(cpp, reference, real)
    _assert_same(cpp, torch_tiles, real)


def test_kernel_on_long_rows_float32_against_float64(built, monkeypatch) -> None:
    """Many tiles per row (256 keys, default tile sizes), in float32 against the float64 kernel."""
    generator = torch.Generator().manual_seed(2)
    layout = _layout([300, 37, 256], 320, "ordered", generator)
    tensors, real, upstream = _inputs(layout, True, generator)
    expected = _run("reference", layout, tensors, upstream, monkeypatch)
    _assert_same(_run("cpp", layout, tensors, upstream, monkeypatch), expected, real)
    single = [t.float() for t in tensors]
    out, grads = _run("cpp", layout, single, upstream.float(), monkeypatch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double() * real, expected[0] * real, atol=1e-5, rtol=1e-4)
    for g, e in zip(grads, expected[1], strict=True):
        torch.testing.assert_close(g.double(), e, atol=1e-4, rtol=1e-4)


def test_gradcheck(built) -> None:
    generator = torch.Generator().manual_seed(5)
    layout = _layout([4, 2], 6, "unordered", generator)
    tensors, real, _ = _inputs(layout, True, generator)
    inputs = [t.requires_grad_() for t in tensors]

    def attention(q, k, v, position, time):
        return blocked_hstu_attention(q, k, v, layout, position, time, 6, kernel_tiles=(2, 3)) * real

    assert torch.autograd.gradcheck(attention, inputs)


def test_bucket_starts_give_time_buckets_exactly() -> None:
    starts = bucket_starts(128)
    assert starts[0] == 0 and starts[-1] == torch.iinfo(torch.int64).max
    assert bool((starts[1:] >= starts[:-1]).all())
    gaps = torch.cat([starts[1:-1], starts[1:-1] - 1, torch.randint(0, 10**12, (10000,))])
    expected = time_buckets(gaps, 128)
    assert torch.equal(torch.searchsorted(starts, gaps, right=True) - 1, expected)


def test_stack_in_training_same_with_kernel_and_torch_tiles(built, monkeypatch) -> None:
    torch.manual_seed(0)
    stack = HSTUStack(HSTUStack.Options(embedding_dim=8, num_layers=2, num_heads=2, max_length=12,
                                        dropout=0.0)).double()
    x = torch.randn(12, 8, dtype=torch.float64)
    lengths, times = torch.tensor([3, 7, 2]), torch.cumsum(torch.randint(0, 9000, (12,)), 0)
    results = []
    for kind in ("cpp", "torch"):
        monkeypatch.setenv(hstu_kernel.KERNEL_ENV, kind)
        stack.zero_grad()
        inputs = x.clone().requires_grad_()
        out = stack(inputs, lengths, times)
        out.square().sum().backward()
        results.append([out, inputs.grad] + [p.grad.clone() for p in stack.parameters()])
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_torch_tiles_when_forced_or_when_the_build_fails(monkeypatch) -> None:
    monkeypatch.setenv(hstu_kernel.KERNEL_ENV, "torch")
    assert hstu_kernel.kernel() is None
    monkeypatch.setenv(hstu_kernel.KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="TERAREC_HSTU_KERNEL='fast': expected one of cpp, torch"):
        hstu_kernel.kernel()

    monkeypatch.setenv(hstu_kernel.KERNEL_ENV, "cpp")

    def no_compiler(**_):
        raise RuntimeError("no C++ compiler found")

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    hstu_kernel._build.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built.*no C\\+\\+ compiler found.*TERAREC_HSTU_KERNEL"):
            assert hstu_kernel.kernel() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            assert hstu_kernel.kernel() is None
            generator = torch.Generator().manual_seed(3)
            layout = _layout([5, 2], 8, "ordered", generator)
            tensors, real, upstream = _inputs(layout, True, generator)
            _assert_same(_run("cpp", layout, tensors, upstream, monkeypatch),
                         _run("reference", layout, tensors, upstream, monkeypatch), real)
    finally:
        hstu_kernel._build.cache_clear()  # the next caller builds (or finds cached) the real kernel


def test_heads_on_two_threads_give_the_one_thread_results(built, monkeypatch) -> None:
    """The heads of a tile run on torch's threads, each on its own buffers; their bias gradients add up."""
    generator = torch.Generator().manual_seed(6)
    layout = _layout([150, 70, 130], 160, "unordered", generator)  # tiles of 64 x 64 logits and more: threads
    tensors, real, upstream = _inputs(layout, True, generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(_run("cpp", layout, tensors, upstream, monkeypatch, kernel_tiles=(64, 64)))
    finally:
        torch.set_num_threads(threads)
    _assert_same(results[1], results[0], real)


def test_kernel_rejects_empty_tiles(built, monkeypatch) -> None:
    generator = torch.Generator().manual_seed(8)
    layout = _layout([3, 2], 4, None, generator)
    tensors, _, upstream = _inputs(layout, True, generator)
    with pytest.raises(RuntimeError, match="tiles of 0 queries and 4 keys: both must be positive"):
        _run("cpp", layout, tensors, upstream, monkeypatch, kernel_tiles=(0, 4))


def test_torch_tiles_where_the_kernel_does_not_apply(built, monkeypatch) -> None:
    """Softmax mode, cached histories with candidates (M-FALCON) and float timestamps take the torch tiles."""
    calls = []
    monkeypatch.setattr(hstu_blocked.FusedHSTUAttention, "apply", _counting(hstu_blocked.FusedHSTUAttention.apply, calls))
    monkeypatch.setenv(hstu_kernel.KERNEL_ENV, "cpp")
    generator = torch.Generator().manual_seed(7)
    lengths = torch.tensor([4, 2])
    q, k, v, position, time = _inputs(_layout([4, 2], 8, "ordered", generator), True, generator)[0]
    float_times = torch.arange(6, dtype=torch.float64) * 100
    cached = AttentionLayout(lengths, 8, num_candidates=torch.tensor([1, 1]), cached_lengths=torch.tensor([1, 0]))
    cached_keys = torch.randn(2, 5, HEADS, QK, dtype=torch.float64)
    cached_values = torch.randn(2, 5, HEADS, V, dtype=torch.float64)
    for layout, keys, values, softmax in [
        (_layout([4, 2], 8, "ordered", generator), k, v, True),
        (cached, cached_keys, cached_values, False),
        (AttentionLayout(lengths, 8, float_times, None, BUCKETS), k, v, False),
    ]:
        blocked_hstu_attention(q, keys, values, layout, position, time, 8, softmax=softmax)
    assert calls == []
    blocked_hstu_attention(q, k, v, _layout([4, 2], 8, "ordered", generator), position, time, 8)
    assert calls == [1]


def test_short_rows_take_the_torch_tiles_by_default(built, monkeypatch) -> None:
    monkeypatch.setattr(hstu_kernel, "KERNEL_MIN_LENGTH", 64)
    monkeypatch.setenv(hstu_kernel.KERNEL_ENV, "cpp")
    calls = []
    monkeypatch.setattr(hstu_blocked.FusedHSTUAttention, "apply", _counting(hstu_blocked.FusedHSTUAttention.apply, calls))
    generator = torch.Generator().manual_seed(0)
    for lengths, expected_calls in (([63, 5], 0), ([64, 5], 1)):
        layout = AttentionLayout(torch.tensor(lengths), 80)
        q, k, v = (torch.randn(2, lengths[0], HEADS, QK, generator=generator) for _ in range(3))
        blocked_hstu_attention(q, k, v, layout, None, None, 80)
        assert len(calls) == expected_calls
