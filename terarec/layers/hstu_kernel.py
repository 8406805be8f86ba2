"""The fused C++ kernel of HSTU's pointwise causal attention on CPU: built at first use, with a fallback.

``hstu_kernel.cpp`` (beside this file) runs eq. (2)'s whole tile loop in one call per
direction: the products in oneDNN's micro-kernel (ATen's ``cpublas::brgemm``) and one fused pass
per tile for the bias, SiLU, mask and the bias gradient (its header says how).
``FusedHSTUAttention`` is its autograd op; ``terarec.layers.hstu_blocked`` calls it where it applies (CPU, pointwise SiLU,
plain causal layouts, float32 / float64, integer timestamps) and its torch tiles elsewhere.

The extension is compiled by ``torch.utils.cpp_extension.load`` on first use (about 25 s of one
core) into torch's extension cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), never into the source tree, and reused after (rebuilt when the
source changes). It is compiled for the machine it runs on (``-march=native``), under a name
that carries the CPU's vector extension level (AVX2, AVX512 ...), so that a cache shared by
different machines does not hand one CPU another's code. When no compiler
is found or the build fails, one warning names the reason and the torch tiles run instead.
``TERAREC_HSTU_KERNEL=torch`` forces the torch tiles (``cpp``, the default, uses the kernel
where it applies).
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import cache
from pathlib import Path

import torch

KERNEL_ENV = "TERAREC_HSTU_KERNEL"
KERNEL_CHOICES = ("cpp", "torch")
QUERY_TILE = 128  # queries x keys of a tile: its four (bq, bk) buffers stay in L2 cache; 64-256 x
KEY_TILE = 256  # 128-256 all ran within 5% of each other at length 4096

# Calls whose longest row is shorter run the torch tiles: there the kernel's per-row set-up
# (transposed copies, contiguous inputs) costs what its fused passes save. A 2-layer stack, d 64,
# forward + backward, one thread: rows of 40-50 tokens 64.5 ms against 60.6 with the torch tiles,
# 60-64 tokens 40.5 / 40.1, 100-128 tokens 94.8 / 102.5, 380-401 tokens 91.1 / 121.8; a Beauty
# HSTU epoch (rows <= 50) 2.93 s of CPU with the kernel against 2.77 without.
KERNEL_MIN_LENGTH = 64

_SOURCE = Path(__file__).with_name("hstu_kernel.cpp")


def kernel_choice() -> str:
    """``TERAREC_HSTU_KERNEL``: "cpp" (default) or "torch"."""
    choice = os.environ.get(KERNEL_ENV, "cpp").strip().lower() or "cpp"
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={choice!r}: expected one of {', '.join(KERNEL_CHOICES)}")
    return choice


@cache
def _build():
    """The compiled extension, or None (after one warning) when it cannot be built or loaded."""
    from torch.utils import cpp_extension

    name = f"terarec_hstu_kernel_{torch.backends.cpu.get_cpu_capability().lower()}"
    if not _is_built(name):
        logging.getLogger("terarec").info(
            "compiling the C++ HSTU attention kernel (once per machine and source, ~25 s of one core; "
            "%s=torch skips it)", KERNEL_ENV)
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            # -ffast-math on the compile only (at link time it would set flush-to-zero for the whole
            # process): it lets the compiler vectorise exp and log through glibc's vector math.
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # no compiler, no headers, a failed build or load: run the torch tiles
        reason = str(error).strip().splitlines()
        warnings.warn(
            f"terarec: the C++ HSTU attention kernel ({_SOURCE.name}) could not be built or loaded "
            f"({type(error).__name__}: {reason[-1] if reason else 'no message'}); using the torch tiles. "
            f"Set {KERNEL_ENV}=torch to skip the build.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _is_built(name: str) -> bool:
    """Whether torch's extension cache already holds a build of ``name`` (then loading is quick)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private: only to say a build is coming
        return (Path(_get_build_directory(name, False)) / f"{name}.so").exists()
    except Exception:  # another torch: say nothing rather than fail
        return True


def kernel():
    """The compiled extension when ``TERAREC_HSTU_KERNEL`` allows it and it builds, else None."""
    if kernel_choice() == "torch":
        return None
    return _build()


class FusedHSTUAttention(torch.autograd.Function):
    """Eq. (2), pointwise, plain causal, through the C++ kernel (see the module docstring).

    Inputs: contiguous token-major queries and keys (B, T, H, d_qk), values (B, T, H, d_v), rows
    in the layout's order; the position (2n - 1,) and time (num_buckets,) tables or None;
    ``times``: (query times (B, T), key times (B, T), bucket starts (num_buckets + 1,)), int64,
    or None; each row's length; n of the position table; the divisor n; the tile sizes.
    """

    @staticmethod
    def forward(ctx, queries, keys, values, position_weights, time_weights, times, row_lengths, max_length,
                scale_length, query_tile, key_tile):
        query_times, key_times, bucket_starts = times if times is not None else (None, None, None)
        time_table = time_weights if times is not None else None
        ctx.save_for_backward(queries, keys, values, position_weights, time_table,
                              query_times, key_times, bucket_starts)
        ctx.lengths, ctx.tiles = (row_lengths, max_length, scale_length), (query_tile, key_tile)
        ctx.kernel = _build()  # backward runs the same build, whatever the environment says by then
        return ctx.kernel.forward(queries, keys, values, position_weights, time_table, query_times, key_times,
                                bucket_starts, row_lengths, max_length, scale_length, query_tile, key_tile)

    @staticmethod
    def backward(ctx, grad_out):
        queries, keys, values, position_weights, time_table, query_times, key_times, bucket_starts = ctx.saved_tensors
        grad_q, grad_k, grad_v, position_grad, time_grad = ctx.kernel.backward(
            grad_out.contiguous(), queries, keys, values, position_weights, time_table, query_times, key_times,
            bucket_starts, *ctx.lengths, *ctx.tiles,
        )
        return (grad_q, grad_k, grad_v, position_grad if position_weights is not None else None,
                time_grad, None, None, None, None, None, None)  # a time table without times adds no bias
