"""M-FALCON against separate forward passes: one user, a history of 512, m = 1024 candidates.

M-FALCON (``HSTUStack.cache_history`` / ``score_candidates`` in ``terarec.layers.hstu``, HSTU paper section 3.4) runs the history once with each
layer's keys and values cached, then the candidates in micro-batches, each seeing the history
and itself. The baseline runs the full stack on history + [candidate] for each candidate:
1024 separate forward passes of 513 tokens, one at a time (``--baseline batched`` runs them
as a padded batch of ``--baseline-batch`` sequences instead, still one sequence per
candidate). Both in float32, eval mode, random weights with visible biases (the timing does
not depend on training). Prints one JSON object last: ``max_abs_diff`` (largest difference
of any output coordinate), ``speedup`` (baseline time / M-FALCON time, medians over repeats),
both times, their spreads and the config.

    python bench/mfalcon.py            # history 512, m 1024, 3 layers, d 64, 2 heads
    python bench/mfalcon.py --quick    # history 128, m 256, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="history 128, m 256, one repeat")
    parser.add_argument("--history", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side (median reported)")
    parser.add_argument("--baseline", choices=["one_by_one", "batched"], default="one_by_one")
    parser.add_argument("--baseline-batch", type=int, default=32, help="sequences per batch for --baseline batched")
    args = parser.parse_args()
    if args.quick:
        args.history, args.candidates, args.repeats = 128, 256, 1
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)

    from terarec.layers.hstu import HSTUStack

    torch.manual_seed(0)
    n, m, d = args.history, args.candidates, args.dim
    options = HSTUStack.Options(embedding_dim=d, num_layers=args.layers, num_heads=args.heads,
                                attention_dim=d // args.heads, linear_dim=d // args.heads, dropout=0.0,
                                max_length=max(1024, n + 1), num_buckets=128)
    stack = HSTUStack(options).eval()
    with torch.no_grad():
        for layer in stack.layers:
            layer.bias.position_weights.normal_(std=0.5)
            layer.bias.time_weights.normal_(std=0.5)
    history = torch.randn(n, d)
    candidates = torch.randn(m, d)
    history_times = torch.cumsum(torch.randint(1, 3600, (n,)), 0)
    request_time = int(history_times[-1]) + 600
    candidate_times = torch.full((m,), request_time)

    def run_mfalcon() -> torch.Tensor:
        cache = stack.cache_history(history, history_times)
        return stack.score_candidates(cache, candidates, candidate_times, micro_batch=args.micro_batch)

    @torch.no_grad()
    def run_baseline() -> torch.Tensor:
        times = torch.cat([history_times, torch.tensor([request_time])])
        if args.baseline == "one_by_one":
            rows = []
            lengths = torch.tensor([n + 1])
            for i in range(m):
                rows.append(stack(torch.cat([history, candidates[i : i + 1]]), lengths, times)[-1])
            return torch.stack(rows)
        rows = []
        for start in range(0, m, args.baseline_batch):
            chunk = candidates[start : start + args.baseline_batch]
            b = chunk.shape[0]
            x = torch.cat([history.expand(b, n, d), chunk.unsqueeze(1)], 1).reshape(-1, d)
            out = stack(x, torch.full((b,), n + 1), times.repeat(b))
            rows.append(out.view(b, n + 1, d)[:, -1])
        return torch.cat(rows)

    def timed(fn) -> tuple[list[float], torch.Tensor]:
        result = fn()  # warm-up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = fn()
            seconds.append(time.perf_counter() - start)
        return seconds, result

    mfalcon_seconds, fast = timed(run_mfalcon)
    print(f"M-FALCON: {statistics.median(mfalcon_seconds):.3f}s (repeats {[round(s, 3) for s in mfalcon_seconds]})",
          flush=True)
    baseline_seconds, slow = timed(run_baseline)
    print(f"baseline ({args.baseline}): {statistics.median(baseline_seconds):.3f}s "
          f"(repeats {[round(s, 3) for s in baseline_seconds]})", flush=True)
    max_abs_diff = float((fast - slow).abs().max())
    mfalcon_time, baseline_time = statistics.median(mfalcon_seconds), statistics.median(baseline_seconds)
    out = {
        "max_abs_diff": max_abs_diff,
        "speedup": round(baseline_time / mfalcon_time, 2),
        "mfalcon_s": round(mfalcon_time, 4),
        "baseline_s": round(baseline_time, 4),
        "mfalcon_s_repeats": [round(s, 4) for s in mfalcon_seconds],
        "baseline_s_repeats": [round(s, 4) for s in baseline_seconds],
        "baseline": args.baseline if args.baseline == "one_by_one" else f"batched_{args.baseline_batch}",
        "history": n,
        "candidates": m,
        "micro_batch": args.micro_batch,
        "embedding_dim": d,
        "num_layers": args.layers,
        "num_heads": args.heads,
        "attention_dim": d // args.heads,
        "linear_dim": d // args.heads,
        "max_length": options.max_length,
        "dtype": "float32",
        "threads": threads,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
