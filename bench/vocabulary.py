"""Managed vocabulary throughput: a Zipf(1.1) stream of raw 64-bit ids into a bounded table.

The stream: ranks drawn from Zipf(1.1) truncated to ``--distinct`` ids (inverse CDF on the
precomputed weights), mapped to raw-looking 64-bit ids by splitmix64, fed in batches (65,536
by default) to a ``ManagedVocabulary`` in training mode: admission, eviction, counting all on.
The default, count admission with ``--min-count 1`` and LFU eviction, fills the table after
about 10M ids and then evicts on every few batches (3.3M rows over the 50M ids), the hardest
case for speed; ``--min-count 2`` keeps one-off ids out (the table then stays below 1M).
Only the vocabulary calls are timed (stream generation is not): ``ids_per_s`` is ids over the
summed time of ``vocab(ids)``.

``hot_row_stability``: over the lookups, after the first ``--warmup`` share of the stream, of
the ``--hot`` most frequent ids (ranks 0..hot-1) that had been looked up in an earlier batch,
the share that got the same row as that id's previous lookup. ``not_admitted_share``: share of
all lookups answered with the default row 0 (id not, or not yet, admitted).

Prints progress, then one JSON object as its last line.

    OMP_WAIT_POLICY=PASSIVE python bench/vocabulary.py           # 50M ids over 10M distinct into 1M
    OMP_WAIT_POLICY=PASSIVE python bench/vocabulary.py --quick   # 5M ids over 1M distinct into 100k
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terarec.embedding.vocabulary import ManagedVocabulary
from terarec.features.mixing import splitmix64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def zipf_stream(total: int, distinct: int, batch_size: int, exponent: float = 1.1, seed: int = 0):
    """Yield (ranks, raw 64-bit ids) batches of a Zipf(exponent) stream over ``distinct`` ids."""
    cdf = np.cumsum(np.arange(1, distinct + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    rng = np.random.default_rng(seed)
    key = np.uint64(0xD1B54A32D192ED03 ^ seed)
    done = 0
    while done < total:
        size = min(batch_size, total - done)
        uniform = rng.random(size)
        uniform.sort()  # sorted queries make the search cache-friendly; the ranks are shuffled after
        ranks = np.searchsorted(cdf, uniform, side="right").clip(max=distinct - 1)
        rng.shuffle(ranks)
        yield ranks, splitmix64(ranks.astype(np.uint64) ^ key).view(np.int64)
        done += size


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5M ids over 1M distinct into capacity 100k")
    parser.add_argument("--ids", type=int, default=None)
    parser.add_argument("--distinct", type=int, default=None)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--admit", choices=["count", "probability"], default="count")
    parser.add_argument("--min-count", type=int, default=1, help="count admission: sightings before a row")
    parser.add_argument("--admit-probability", type=float, default=0.5)
    parser.add_argument("--evict", choices=["lfu", "lru", "ttl"], default="lfu")
    parser.add_argument("--ttl", type=float, default=50.0, help="ttl eviction: steps (batches)")
    parser.add_argument("--hot", type=int, default=None, help="hot ids: the most frequent (default 100k, quick 10k)")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the stream before stability is measured")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the CPUs this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    total = args.ids or (5_000_000 if args.quick else 50_000_000)
    distinct = args.distinct or (1_000_000 if args.quick else 10_000_000)
    capacity = args.capacity or (100_000 if args.quick else 1_000_000)
    hot = args.hot or (10_000 if args.quick else 100_000)
    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0))))

    vocab = ManagedVocabulary(
        capacity,
        admit=args.admit,
        min_count=args.min_count,
        admit_probability=args.admit_probability,
        evict=args.evict,
        ttl_seconds=args.ttl if args.evict == "ttl" else None,
        seed=args.seed,
    ).train()
    print(f"{total:,} ids over {distinct:,} distinct (Zipf 1.1) into {vocab}, batches of {args.batch_size:,}, "
          f"{torch.get_num_threads()} threads")

    previous_row = np.full(hot, -1, dtype=np.int64)  # row each hot id got at its previous lookup
    warmup_ids = int(args.warmup * total)
    stable = compared = seen = 0
    lookup_seconds = 0.0
    report_every = max(1, total // 10)
    next_report = report_every
    started = time.perf_counter()
    for ranks, ids in zipf_stream(total, distinct, args.batch_size, seed=args.seed):
        batch = torch.from_numpy(ids)
        tick = time.perf_counter()
        rows = vocab(batch)
        lookup_seconds += time.perf_counter() - tick

        is_hot = ranks < hot
        hot_ranks, hot_rows = ranks[is_hot], rows.numpy()[is_hot]
        if seen >= warmup_ids:
            before = previous_row[hot_ranks]
            looked_up_before = before >= 0
            compared += int(looked_up_before.sum())
            stable += int((before[looked_up_before] == hot_rows[looked_up_before]).sum())
        previous_row[hot_ranks] = hot_rows  # one row per id within a batch, so the order is irrelevant
        seen += ids.size
        if seen >= next_report:
            next_report += report_every
            print(f"  {seen:>12,} ids  {seen / lookup_seconds:>12,.0f} ids/s  admitted {vocab.num_admitted:,}  "
                  f"evicted {int(vocab.evicted_count):,}  not admitted {int(vocab.not_admitted_count) / seen:.3f}  "
                  f"RSS {peak_rss_mb():,.0f} MB  ({time.perf_counter() - started:.0f}s)")

    result = {
        "ids_per_s": round(total / lookup_seconds, 1),
        "hot_row_stability": round(stable / max(1, compared), 5),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "capacity": capacity,
        "ids": total,
        "distinct": distinct,
        "admit": args.admit if args.admit == "probability" else f"count>={args.min_count}",
        "evict": args.evict,
        "not_admitted_share": round(int(vocab.not_admitted_count) / total, 4),
        "evicted": int(vocab.evicted_count),
        "admitted": int(vocab.admitted_count),
        "batch_size": args.batch_size,
        "hot": hot,
        "threads": torch.get_num_threads(),
        "quick": bool(args.quick),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
