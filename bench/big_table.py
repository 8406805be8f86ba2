"""A 100M-row fp16 d=16 table with fused row-wise Adagrad trains here; the planner predicts its memory.

The table is a ``FusedPooledEmbeddings`` over ``DirectRows`` (ids are rows: no vocabulary, so no
id bytes and no hash map; ``--vocabulary exact`` puts an ``ExactVocabulary`` of rows - 1 ids,
8 bytes each, in front of it instead; with NumPy 2.4 its ``np.unique`` of 100M ids takes minutes
and leaves gigabytes of temporaries resident, which that figure then includes), fp16 weights and one fp32 row-wise Adagrad accumulator per row, on
FBGEMM's CPU kernel. It trains for ``--steps`` steps of 4096 bags x 20 uniform random ids.

measured_mb: the process's resident memory (VmRSS) after the training steps minus just before
the table is created. The engine's code paths are warmed on a small table first, so the
difference holds the table, its optimizer state and whatever the training steps keep, not the
one-off cost of loading kernels. predicted_mb: ``terarec.embedding.planner.table_memory`` for the
same table: rows x (16 x 2 B weights + 4 B optimizer state), with ``id_bytes=0`` (8 with the
exact vocabulary) and ``hash_overhead=0`` to match (the planner counts no runtime, activations or allocator slack).
peak_increase_mb: the process's peak (VmHWM) by the end of the steps minus the same
starting point. MB here are MiB (2**20 bytes). Prints progress, then the JSON as its last line.

    python bench/big_table.py                 # 100M rows, 20 steps
    python bench/big_table.py --rows 10_000_000 --steps 5
    python bench/big_table.py --vocabulary exact   # 64-bit ids remapped by an ExactVocabulary
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import json
import time

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.engine import (
    DirectRows,
    EmbeddingEngineConfig,
    FusedPooledEmbeddings,
)
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.planner import ID_BYTES, TablePlan, format_bytes, table_memory

MIB = 2**20


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status: no field {field}")


def train(engine: FusedPooledEmbeddings, num_ids: int, steps: int, batch_size: int, ids_per_bag: int) -> float:
    """Run ``steps`` training steps on ids 0 .. num_ids - 1 (forward, backward = fused update); ids per second."""
    lengths = torch.full((batch_size,), ids_per_bag)
    seconds = 0.0
    for _ in range(steps):
        ids = torch.randint(0, num_ids, (batch_size * ids_per_bag,))
        started = time.perf_counter()
        pooled = engine(KeyedJaggedTensor(keys=["item"], values=ids, lengths=lengths)).values()
        pooled.square().mean().backward()
        seconds += time.perf_counter() - started
    return steps * batch_size * ids_per_bag / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=lambda text: int(text.replace("_", "")), default=100_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--ids-per-bag", type=int, default=20)
    parser.add_argument("--vocabulary", default="direct", choices=["direct", "exact"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = EmbeddingEngineConfig(optimizer="rowwise_adagrad", weight_dtype=args.dtype, learning_rate=0.01)

    # Load and run every code path once on a small table, so the measured difference is the big table.
    warm = FusedPooledEmbeddings({"item": DirectRows(1000)}, args.dim, config)
    train(warm, 1000, 2, args.batch_size, args.ids_per_bag)
    del warm

    before_kib = status_kib("VmRSS")
    started = time.perf_counter()
    # exact: ids 0 .. rows - 2 known (rows 1 .. rows - 1), row 0 the default row
    vocabulary = DirectRows(args.rows) if args.vocabulary == "direct" else ExactVocabulary(np.arange(args.rows - 1))
    engine = FusedPooledEmbeddings({"item": vocabulary}, args.dim, config)
    built_s = time.perf_counter() - started
    after_build_kib = status_kib("VmRSS")
    print(
        f"table {args.rows:,} x {args.dim} {args.dtype} ({engine.tables.backend}, {args.vocabulary} rows) "
        f"built in {built_s:.1f}s, RSS +{(after_build_kib - before_kib) / 1024:.0f} MiB",
        flush=True,
    )
    num_ids = args.rows - (args.vocabulary == "exact")
    rows_per_s = train(engine, num_ids, args.steps, args.batch_size, args.ids_per_bag)
    after_kib, peak_kib = status_kib("VmRSS"), status_kib("VmHWM")
    touched_rows = int(torch.count_nonzero(engine.optimizer_state("item")["momentum"]))

    predicted = table_memory(
        TablePlan(
            "item",
            rows=args.rows,
            dim=args.dim,
            dtype=args.dtype,
            optimizer="rowwise_adagrad",
            id_bytes=ID_BYTES if args.vocabulary == "exact" else 0,
            hash_overhead=0,
        )
    )
    measured_mb = (after_kib - before_kib) / 1024
    predicted_mb = predicted.total / MIB
    print(
        f"planner: weights {format_bytes(predicted.weights)} + optimizer {format_bytes(predicted.optimizer)} "
        f"+ ids {format_bytes(predicted.ids)} "
        f"= {format_bytes(predicted.total)}; measured RSS increase {measured_mb:.0f} MiB after {args.steps} steps "
        f"({touched_rows:,} rows updated)",
        flush=True,
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "dim": args.dim,
                "dtype": args.dtype,
                "optimizer": "rowwise_adagrad",
                "vocabulary": args.vocabulary,
                "measured_mb": round(measured_mb, 1),
                "predicted_mb": round(predicted_mb, 1),
                "ratio": round(measured_mb / predicted_mb, 4),
                "measured_after_build_mb": round((after_build_kib - before_kib) / 1024, 1),
                "peak_increase_mb": round((peak_kib - before_kib) / 1024, 1),
                "steps": args.steps,
                "rows_per_s": round(rows_per_s),
                "build_s": round(built_s, 1),
                "threads": args.threads,
                "included": "RSS after steps minus before table creation (engine warmed on a small table); "
                + (
                    "planner with id_bytes=0, hash_overhead=0 (DirectRows: no vocabulary)"
                    if args.vocabulary == "direct"
                    else "planner with id_bytes=8 (ExactVocabulary's sorted ids), hash_overhead=0"
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
