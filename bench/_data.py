"""Prepare the benchmark data sets of ../shared into a folder, as the quality benchmarks do (not a benchmark).

    from _data import prepare   # bench/ is on sys.path when a bench script runs
    folder = prepare("ml100k-ctr", shared, Path(tmp) / "ml100k-ctr")

* ``frappe``: the Frappe CTR split as given (bench/ctr_quality.py);
* ``ml100k-ctr``: ML-100K as CTR, like = rating >= 4, user and movie features, each event's
  last 256 earlier movies, split by time (bench/ml100k_ctr.py);
* ``beauty``: Amazon Beauty 5-core sequences, leave-one-out (bench/seq_quality.py).
"""

from __future__ import annotations

from pathlib import Path

HISTORY_LENGTH = 256
DATASETS = ("frappe", "ml100k-ctr", "beauty")


def prepare(name: str, shared: Path, folder: Path) -> Path:
    """Write data set ``name`` (one of ``DATASETS``) from ``shared`` to ``folder``; returns ``folder``."""
    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source
    from terarec.data.splits import SplitConfig

    if name == "frappe":
        write_dataset(load_source("frappe-splits", str(shared / "benchmarks" / "frappe-ctr")), folder, progress=False)
    elif name == "ml100k-ctr":
        source = load_source("movielens", str(shared / "datasets" / "ml-100k"), like_threshold=4, features=True,
                             history_length=HISTORY_LENGTH)
        write_dataset(source, folder, SplitConfig(method="time"), progress=False)
    elif name == "beauty":
        write_dataset(load_source("amazon", str(shared / "datasets" / "amazon-beauty" / "Beauty.txt")), folder,
                      progress=False)
    else:
        raise ValueError(f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    return folder
