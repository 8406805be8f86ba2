"""One HSTU layer against one standard Transformer encoder layer: forward + backward time, peak memory.

HSTU (``terarec.layers.hstu.HSTULayer``, HSTU paper eqs. (1)-(3)): pointwise SiLU attention
with a relative position + time bias, causal mask, H heads of width d / H for Q, K, U and V
(its weights: f1 d x 4d, f2 d x d), with its default blocked attention
(``terarec.layers.hstu_blocked``; ``--attention reference`` for the dense one). Baseline:
``torch.nn.TransformerEncoderLayer`` (batch_first, norm_first, dropout 0, d_ff = 4d, ReLU;
weights: 3d^2 attention in, d^2 out, 8d^2 feed-forward) with a causal mask and
``is_causal=True``, so its attention runs in ``torch.nn.functional.scaled_dot_product_attention``.
Same d, H and length on both sides; both in float32, training mode with dropout 0.

Lengths 256, 1024, 4096 and 8192 with a fixed number of tokens per step (batch 16, 4, 1, 1 by
default: 4096 tokens, 8192 at 8192); the HSTU step builds its attention layout (sorted rows,
padded timestamps; a stack shares it between its layers), so nothing carries over between steps. Each side is timed as forward, sum of the output, backward, after warm-up; the
median of the repeats is reported. Peak memory of one step at ``--memory-length`` (4096) is
measured in a fresh child process per side after one warm-up step: the peak resident set
during a second step (Linux VmHWM, reset through /proc/self/clear_refs) minus the resident set
just before it, under a fixed glibc mmap threshold (128 KiB) so that freed blocks leave. Threads: OMP_NUM_THREADS if set, else
the CPUs this process may use. Last line JSON: ``ratio_<T>`` = HSTU time / Transformer time,
the times and their spreads, ``peak_mib_<side>_<T>``.

    OMP_NUM_THREADS=1 python bench/hstu_layer.py    # d 128, 4 heads, lengths 256 1024 4096 8192
    python bench/hstu_layer.py --quick              # lengths 256 1024, fewer repeats, no memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial

import torch
from torch import nn


def _hstu_step(layer, x, layout_args) -> None:
    from terarec.layers.hstu import AttentionLayout

    layer(x, AttentionLayout(*layout_args))[0].sum().backward()


def _transformer_step(layer, x, src_mask) -> None:
    layer(x, src_mask=src_mask, is_causal=True).sum().backward()


def _timed(step, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def _build(side: str, length: int, tokens: int, d: int, heads: int, attention: str):
    """The step of one side at one length, ready to call."""
    from terarec.layers.hstu import HSTULayer

    torch.manual_seed(0)
    batch = max(1, tokens // length)
    if side == "hstu":
        hstu = HSTULayer(d, heads, d // heads, d // heads, dropout=0.0, max_length=length, num_buckets=128,
                         attention=attention)
        x = torch.randn(batch * length, d, requires_grad=True)
        times = torch.cumsum(torch.randint(1, 3600, (batch, length)), 1)
        layout_args = (torch.full((batch,), length), length, times.reshape(-1), None, 128)
        return partial(_hstu_step, hstu, x, layout_args)
    transformer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True,
                                             norm_first=True)
    src_mask = nn.Transformer.generate_square_subsequent_mask(length)
    x_padded = torch.randn(batch, length, d, requires_grad=True)
    return partial(_transformer_step, transformer, x_padded, src_mask)


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_step_memory(args) -> None:
    """Child process: one side's step, warmed up once (lazy allocations of the libraries), then
    timed for memory: prints the peak resident bytes of the second step above its start."""
    torch.set_num_threads(1)
    side, length = args.peak_memory_of.split(":")
    step = _build(side, int(length), args.tokens, args.dim, args.heads, args.attention)
    step()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak resident set (VmHWM) to the current one
    before = _status_bytes("VmRSS")
    step()
    print(_status_bytes("VmHWM") - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 256 and 1024, 2 repeats")
    parser.add_argument("--lengths", default="256,1024,4096,8192")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step: batch = tokens // length")
    parser.add_argument("--memory-length", type=int, default=4096, help="length of the peak memory check (0: none)")
    parser.add_argument("--attention", default="blocked", choices=["blocked", "reference"])
    parser.add_argument("--peak-memory-of", default="", help=argparse.SUPPRESS)  # side:length, in the child
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if args.peak_memory_of:
        _peak_step_memory(args)
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.quick:
        lengths, args.repeats, args.warmup, args.memory_length = [t for t in lengths if t <= 1024], 2, 1, 0
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    torch.set_num_threads(threads)

    d, heads = args.dim, args.heads
    out: dict = {"embedding_dim": d, "num_heads": heads, "head_dim": d // heads, "transformer_d_ff": 4 * d,
                 "tokens_per_step": args.tokens, "repeats": args.repeats, "threads": threads, "dtype": "float32",
                 "attention": args.attention}
    for length in lengths:
        batch = max(1, args.tokens // length)
        hstu_step = _build("hstu", length, args.tokens, d, heads, args.attention)
        transformer_step = _build("transformer", length, args.tokens, d, heads, args.attention)
        timed = partial(_timed, warmup=args.warmup, repeats=args.repeats)

        # Alternate the two sides so that a burst of load from elsewhere hits both.
        hstu_seconds, transformer_seconds = [], []
        for _ in range(2):
            hstu_seconds += timed(hstu_step)
            transformer_seconds += timed(transformer_step)
        h, t = statistics.median(hstu_seconds), statistics.median(transformer_seconds)
        out[f"ratio_{length}"] = round(h / t, 3)
        out[f"hstu_s_{length}"] = round(h, 5)
        out[f"transformer_s_{length}"] = round(t, 5)
        out[f"hstu_s_{length}_range"] = [round(min(hstu_seconds), 5), round(max(hstu_seconds), 5)]
        out[f"transformer_s_{length}_range"] = [round(min(transformer_seconds), 5), round(max(transformer_seconds), 5)]
        out[f"batch_{length}"] = batch
        print(f"length {length}, batch {batch}: HSTU {h * 1e3:.1f} ms, Transformer {t * 1e3:.1f} ms, "
              f"ratio {h / t:.2f}", flush=True)
    if args.memory_length:
        for side in ("hstu", "transformer"):
            command = [sys.executable, __file__, "--peak-memory-of", f"{side}:{args.memory_length}",
                       "--tokens", str(args.tokens), "--dim", str(d), "--heads", str(heads),
                       "--attention", args.attention]
            # A fixed mmap threshold: glibc's moving one keeps freed large blocks resident, so the
            # peak would depend on the order of frees rather than on what was alive.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
            run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            peak = int(run.stdout.split()[-1])
            out[f"peak_mib_{side}_{args.memory_length}"] = round(peak / 2**20, 1)
        print(f"peak memory of a step at {args.memory_length}: HSTU {out[f'peak_mib_hstu_{args.memory_length}']} MiB, "
              f"Transformer {out[f'peak_mib_transformer_{args.memory_length}']} MiB", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
