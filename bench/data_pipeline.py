"""Data pipeline benchmark: synthetic events -> prepared Parquet -> KJT batches, streamed.

Prints progress, then one JSON object as its last line:
events_per_s (generate + split + write), batches_per_s and rows_per_s (CTR batches of 4096
read back as KeyedJaggedTensors), sequence_batches_per_s, peak_rss_mb (this process and its
children: the pipeline is streamed, never loaded whole).

    python bench/data_pipeline.py            # 10M events
    python bench/data_pipeline.py --quick    # 1M events
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # ru_maxrss is in KiB on Linux


def time_loader(loader) -> tuple[float, int, int, object]:
    """Seconds to drain a loader, batches, rows (len of each batch), and the last batch."""
    started = time.perf_counter()
    batches = rows = 0
    batch = None
    for batch in loader:
        batches += 1
        rows += len(batch)
    return time.perf_counter() - started, batches, rows, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the dataset here and keep it")
    args = parser.parse_args()
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    from terarec.data.batches import make_loader
    from terarec.data.ctr_dataset import CTRDataset
    from terarec.data.sequence_dataset import SequenceDataset, SequenceSpec
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig

    workdir = Path(tempfile.mkdtemp(prefix="terarec-bench-"))
    folder = args.keep or workdir / "synthetic"
    try:
        config = SyntheticConfig(num_events=events, num_users=max(1000, events // 100),
                                 num_items=max(1000, events // 20), seed=0)
        started = time.perf_counter()
        meta = write_dataset(load_synthetic(config), folder, SplitConfig(method="time"), overwrite=True)
        prepare_seconds = time.perf_counter() - started
        print(f"prepared {meta.num_rows:,} events in {prepare_seconds:.1f}s ({meta.num_rows / prepare_seconds:,.0f}/s), "
              f"peak RSS {peak_rss_mb():.0f} MB")

        ctr_seconds, batches, rows, batch = time_loader(
            make_loader(CTRDataset(folder, "train", batch_size=args.batch_size, shuffle=True, seed=0), args.workers)
        )
        print(f"read {batches:,} CTR batches ({rows:,} rows, {len(batch.sparse_features.keys())} sparse features) "
              f"in {ctr_seconds:.1f}s, peak RSS {peak_rss_mb():.0f} MB")
        sequences = SequenceDataset(folder, "train", SequenceSpec(max_length=200, keep_if="click"), batch_size=256)
        seq_seconds, seq_batches, seq_users, _ = time_loader(make_loader(sequences, args.workers))
        print(f"read {seq_batches:,} sequence batches ({seq_users:,} users) in {seq_seconds:.1f}s")
        result = {
            "events": meta.num_rows,
            "events_per_s": round(meta.num_rows / prepare_seconds, 1),
            "batches_per_s": round(batches / ctr_seconds, 2),
            "rows_per_s": round(rows / ctr_seconds, 1),
            "batch_size": args.batch_size,
            "sequence_batches_per_s": round(seq_batches / seq_seconds, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "workers": args.workers,
            "threads": torch.get_num_threads(),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
