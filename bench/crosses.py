"""Cross-id throughput on one core: declared crosses computed from an Arrow table of rows.

A table of rows with user attributes (gender, age), item id, category, price and a list
column of 5 picks; five crosses: a derivation (category x price bucket), an interaction of 3
columns (item x gender x age bucket), a permutation, a combination and the elements of the
picks. Each figure is the best of ``--repeats`` runs of ``apply_crosses`` on the whole table
(inputs hashed from raw Arrow columns included; table generation not). Also measured, not in
the headline: ragged picks (1 to 8 per row, the gather path) and weak_semantic keys over a
sorted events table (rows per second). Prints progress, then one JSON object as its last line.

    OMP_WAIT_POLICY=PASSIVE python bench/crosses.py            # 1M rows
    OMP_WAIT_POLICY=PASSIVE python bench/crosses.py --quick    # 200k rows
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from terarec.features.crosses import CrossSpec, apply_crosses
from terarec.features.weak_semantic import weak_semantic_keys

NUM_PICKS = 5


def _picks(rng: np.random.Generator, lengths: np.ndarray, characters: int = 120) -> pa.Array:
    offsets = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(rng.integers(0, characters, int(offsets[-1]), dtype=np.int64))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def make_rows(num_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user_id": rng.integers(0, max(1, num_rows // 10), num_rows, dtype=np.int64),
            "gender": pc.take(pa.array(["f", "m", "unknown"]), pa.array(rng.integers(0, 3, num_rows))),
            "age": rng.integers(14, 80, num_rows, dtype=np.int64),
            "item_id": (rng.zipf(1.2, num_rows) % 1_000_000).astype(np.int64),
            "category": rng.integers(0, 1000, num_rows, dtype=np.int64),
            "price": np.round(rng.lognormal(3.0, 1.2, num_rows), 2),
            "picks": _picks(rng, np.full(num_rows, NUM_PICKS)),
        }
    )


CROSSES = [
    CrossSpec("category_x_price", "derivation", ["category", "price"], buckets={"price": [1, 5, 10, 20, 50, 100, 200, 500]}),
    CrossSpec("item_x_gender_x_age", "interaction", ["item_id", "gender", "age"], buckets={"age": [18, 25, 35, 45, 55, 65]}),
    CrossSpec("picks_order", "permutation", ["picks"]),
    CrossSpec("picks_team", "combination", ["picks"]),
    CrossSpec("picks_each", "elements", ["picks"]),
]


def best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def make_events(num_rows: int, seed: int = 0) -> pa.Table:
    """Events sorted by (user, time): ~100 events per user over 90 days, Zipf items."""
    rng = np.random.default_rng(seed)
    users = np.sort(rng.integers(0, max(1, num_rows // 100), num_rows, dtype=np.int64))
    times = rng.integers(0, 90 * 86_400, num_rows, dtype=np.int64)
    order = np.lexsort((times, users))
    return pa.table(
        {
            "user_id": users[order],
            "timestamp": times[order],
            "item_id": (rng.zipf(1.3, num_rows) % 100_000).astype(np.int64),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k rows instead of 1M")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    num_rows = args.rows or (200_000 if args.quick else 1_000_000)
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    table = make_rows(num_rows)
    print(f"table: {num_rows:,} rows, {table.nbytes / 2**20:.0f} MiB, columns {table.column_names}")
    result: dict[str, float | int] = {}
    total_ids = sum(ids.size for ids, _ in apply_crosses(table, CROSSES).values())
    seconds = best_seconds(lambda: apply_crosses(table, CROSSES), args.repeats)
    result["cross_ids_per_s"] = round(total_ids / seconds)
    print(f"all five crosses: {total_ids:,} ids in {seconds * 1e3:.0f} ms = {total_ids / seconds / 1e6:.1f}M ids/s")
    for cross in CROSSES:
        ids, _ = apply_crosses(table, [cross])[cross.name]
        seconds = best_seconds(lambda cross=cross: apply_crosses(table, [cross]), args.repeats)
        result[f"{cross.kind}_ids_per_s"] = round(ids.size / seconds)
        print(f"  {cross.kind:12s} {cross.name:20s} {ids.size:>10,} ids in {seconds * 1e3:6.0f} ms "
              f"= {ids.size / seconds / 1e6:6.1f}M ids/s")

    ragged = pa.table({"picks": _picks(np.random.default_rng(1), np.random.default_rng(2).integers(1, 9, num_rows))})
    for cross in CROSSES[2:4]:
        seconds = best_seconds(lambda cross=cross: apply_crosses(ragged, [cross]), args.repeats)
        result[f"ragged_{cross.kind}_ids_per_s"] = round(num_rows / seconds)
        print(f"  ragged picks (1-8) {cross.kind:12s} {num_rows / seconds / 1e6:6.1f}M ids/s")

    events = make_events(num_rows)
    weak = CrossSpec("fav_item_x_item", "weak_semantic", ["item_id", "item_id"], window_days=30)
    seconds = best_seconds(lambda: weak_semantic_keys(events, weak), 1)
    result["weak_semantic_rows_per_s"] = round(num_rows / seconds)
    print(f"  weak_semantic over {num_rows:,} sorted events (~100 per user, 90 days, 30-day window): "
          f"{seconds:.2f} s = {num_rows / seconds / 1e6:.2f}M rows/s")

    result["rows"] = num_rows
    result["threads"] = 1
    print(json.dumps(result))


if __name__ == "__main__":
    main()
