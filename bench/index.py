"""Retrieval index: recall@100 of the HSTU-bundle HNSW index against exact search, and both QPS.

The vectors stand in for a trained model's item vectors: unit vectors drawn around 1,000
cluster centres (items of a category lie near each other), ``--items`` x 64. ``build_index``
(what ``terarec export`` runs) builds the HNSW graph and picks the smallest efSearch whose
recall@100 against exact inner-product search reaches 0.95 on its own probe queries; this bench
then measures recall on 1,000 fresh queries and the QPS of both indexes (batches of 64 queries,
and single queries), with the CPU threads this process may use.

    python bench/index.py            # 1M items x 64
    python bench/index.py --quick    # 100k items x 64

Prints progress, then one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 64
CLUSTERS = 1000


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(CLUSTERS, DIM)))
    members = rng.integers(0, CLUSTERS, count)
    return unit(centres[members] + rng.normal(0, 0.6 / np.sqrt(DIM) * 4, (count, DIM)))


def qps(index, queries: np.ndarray, batch: int, seconds: float = 10.0) -> float:
    """Queries per second over at most ``seconds`` (and at most every query once)."""
    done, started = 0, time.perf_counter()
    for first in range(0, len(queries), batch):
        index.search(queries[first:first + batch], 100)
        done += len(queries[first:first + batch])
        if time.perf_counter() - started > seconds:
            break
    return round(done / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k items instead of 1M")
    parser.add_argument("--items", type=int, default=None)
    args = parser.parse_args()
    import faiss

    from terarec.runtime import configure_threads
    from terarec.serve.bundle import build_index, probe_queries, recall

    threads = configure_threads(0)
    faiss.omp_set_num_threads(threads)
    count = args.items or (100_000 if args.quick else 1_000_000)
    vectors = clustered_vectors(count, seed=0)
    started = time.perf_counter()
    hnsw, described = build_index(vectors, "hnsw", seed=0)
    print(f"HNSW built and tuned in {time.perf_counter() - started:.0f}s: {described}", flush=True)
    exact, _ = build_index(vectors, "exact")
    queries = probe_queries(vectors, 1000, seed=1)  # fresh queries, not those efSearch was chosen on
    _, truth = exact.search(queries, 100)
    _, found = hnsw.search(queries, 100)
    figures = {"exact_qps_batch64": qps(exact, queries, 64), "exact_qps_single": qps(exact, queries[:200], 1),
               "hnsw_qps_batch64": qps(hnsw, queries, 64), "hnsw_qps_single": qps(hnsw, queries, 1)}
    summary = {"bench": "index", "items": count, "dim": DIM, "threads": threads, "index": described["kind"],
               "ef_search": described.get("ef_search"), "recall@100": round(recall(found, truth), 4),
               "recall@100_tuning": described.get("recall@100"), "build_seconds": described.get("build_seconds"),
               **figures, "target_recall": 0.95}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
