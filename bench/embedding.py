"""Sparse-engine throughput: fused row-wise Adagrad against torch sparse SGD, and the gather ceiling.

One process, one 10M x 64 fp32 table per contender (1M with --quick), batches of 4096 bags x
20 ids (sum pooling), ids uniform at random and fresh for every step (drawn before the timer
starts, never reused). Rows/s = ids looked up per second (4096 x 20 per step) of:

- baseline: ``nn.EmbeddingBag(mode="sum", sparse=True)`` + ``torch.optim.SGD`` on its sparse
  gradient: forward, backward, step;
- engine: ``FusedPooledEmbeddings`` (KJT in, KeyedTensor out; ids already rows via
  ``DirectRows``) with FBGEMM's fused row-wise Adagrad: forward, backward (which updates);
- engine_forward: the engine's forward alone, under ``no_grad``;
- gather ceiling: ``torch.index_select`` of the same number of random 256-byte rows (64 fp32) of
  the baseline's 10M-row table into a preallocated output: the memory system's random-read rate.

Both contenders get the same upstream gradient. Each measurement warms up, then times
``--steps`` steps; the four are interleaved ``--repeats`` times and the medians reported, since
the machine is shared and noisy. Prints one JSON line per repetition, then the summary JSON as the
last line.

    python bench/embedding.py            # 10M x 64
    python bench/embedding.py --quick    # 1M x 64
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.engine import (
    DirectRows,
    EmbeddingEngineConfig,
    FusedPooledEmbeddings,
)

DIM = 64


def rows_per_second(step: Callable[[torch.Tensor], None], id_batches: list[torch.Tensor], warmup: int) -> float:
    """Ids per second of ``step`` over the batches after the first ``warmup`` (which are not timed)."""
    for ids in id_batches[:warmup]:
        step(ids)
    timed = id_batches[warmup:]
    started = time.perf_counter()
    for ids in timed:
        step(ids)
    seconds = time.perf_counter() - started
    return sum(ids.numel() for ids in timed) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M rows instead of 10M")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--ids-per-bag", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: cores available")
    args = parser.parse_args()
    num_rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    batch_size, ids_per_bag = args.batch_size, args.ids_per_bag
    num_ids = batch_size * ids_per_bag
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    started = time.perf_counter()
    baseline = nn.EmbeddingBag(num_rows, DIM, mode="sum", sparse=True)
    nn.init.normal_(baseline.weight, std=0.01)
    baseline_optimizer = torch.optim.SGD(baseline.parameters(), lr=0.01)
    config = EmbeddingEngineConfig(optimizer="rowwise_adagrad", learning_rate=0.01)
    engine = FusedPooledEmbeddings({"item": DirectRows(num_rows)}, DIM, config)
    print(f"tables: 2 x {num_rows:,} x {DIM} fp32 built in {time.perf_counter() - started:.1f}s", flush=True)

    bag_offsets = torch.arange(0, num_ids, ids_per_bag)  # (B,) starts, nn.EmbeddingBag layout
    lengths = torch.full((batch_size,), ids_per_bag)
    upstream = torch.randn(batch_size, DIM)  # dLoss/dpooled, the same for both contenders
    gathered = torch.empty(num_ids, DIM)

    def baseline_step(ids: torch.Tensor) -> None:
        baseline_optimizer.zero_grad(set_to_none=True)
        baseline(ids, bag_offsets).backward(upstream)
        baseline_optimizer.step()

    def engine_step(ids: torch.Tensor) -> None:
        features = KeyedJaggedTensor(keys=["item"], values=ids, lengths=lengths)
        engine(features).values().backward(upstream)

    def engine_forward(ids: torch.Tensor) -> None:
        with torch.no_grad():
            engine(KeyedJaggedTensor(keys=["item"], values=ids, lengths=lengths))

    def gather(ids: torch.Tensor) -> None:
        torch.index_select(baseline.weight.detach(), 0, ids, out=gathered)

    contenders = {
        "baseline": baseline_step,
        "engine": engine_step,
        "engine_forward": engine_forward,
        "gather": gather,
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        line = {"repeat": repeat}
        for name, step in contenders.items():
            id_batches = [torch.randint(0, num_rows, (num_ids,)) for _ in range(args.warmup + args.steps)]
            line[name] = rows_per_second(step, id_batches, args.warmup)
            results[name].append(line[name])
        print(json.dumps({key: round(value) for key, value in line.items()}), flush=True)

    medians = {name: statistics.median(values) for name, values in results.items()}
    summary = {
        "engine_rows_per_s": round(medians["engine"]),
        "baseline_rows_per_s": round(medians["baseline"]),
        "speedup": round(medians["engine"] / medians["baseline"], 2),
        "gather_ceiling_rows_per_s": round(medians["gather"]),
        "forward_fraction_of_ceiling": round(medians["engine_forward"] / medians["gather"], 2),
        "engine_forward_rows_per_s": round(medians["engine_forward"]),
        "rows": num_rows,
        "dim": DIM,
        "dtype": "fp32",
        "batch_size": batch_size,
        "ids_per_bag": ids_per_bag,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
