"""Load every real dataset in ../shared with the terarec loaders and print their sizes.

Usage: ``.venv/bin/python bench/datasets.py [--shared DIR]``. The datasets are read where they
lie (never copied into the repository). Prints a table of rows / users / items per dataset and
load time, then, as its last line, one JSON object of the counts, e.g.
``{"ml100k_ratings": 100000, "ml100k_users": 943, ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terarec.data.sources.amazon import load_amazon  # noqa: E402
from terarec.data.sources.frappe import load_frappe, load_frappe_splits  # noqa: E402
from terarec.data.sources.movielens import load_movielens  # noqa: E402

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def distinct(table: pa.Table, column: str) -> int:
    return int(pc.count_distinct(table.column(column)).as_py())


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder (default: %(default)s)")
    args = parser.parse_args(argv)
    datasets, benchmarks = args.shared / "datasets", args.shared / "benchmarks"
    console = Console(width=120)
    report = Table(title=f"datasets under {args.shared}")
    for name in ("dataset", "loader", "rows", "positives", "users", "items", "seconds"):
        report.add_column(name, justify="left" if name in ("dataset", "loader") else "right")
    figures: dict[str, int] = {}

    def timed(load):
        start = time.perf_counter()
        data = load()
        table = pa.concat_tables(list(data.chunks))
        return data, table, time.perf_counter() - start

    # MovieLens 100K (Parquet layout).
    data, table, seconds = timed(lambda: load_movielens(datasets / "ml-100k"))
    figures.update(
        ml100k_ratings=table.num_rows, ml100k_users=distinct(table, "user_id"), ml100k_items=distinct(table, "item_id")
    )
    report.add_row(
        data.name, "load_movielens", f"{table.num_rows:,}", "", f"{figures['ml100k_users']:,}",
        f"{figures['ml100k_items']:,}", f"{seconds:.2f}",
    )  # fmt: skip

    # Amazon Beauty (sequence format) and Video Games (pair format).
    for key, file in (("beauty", "amazon-beauty/Beauty.txt"), ("video", "amazon-video/Video.txt")):
        data, table, seconds = timed(lambda: load_amazon(datasets / file))
        figures[f"{key}_users"] = distinct(table, "user_id")
        figures[f"{key}_items"] = distinct(table, "item_id")
        figures[f"{key}_interactions"] = table.num_rows
        report.add_row(
            data.name, "load_amazon", f"{table.num_rows:,}", "", f"{figures[f'{key}_users']:,}",
            f"{figures[f'{key}_items']:,}", f"{seconds:.2f}",
        )  # fmt: skip

    # Frappe raw log with NFM negative sampling (2 negatives per log).
    data, table, seconds = timed(lambda: load_frappe(datasets / "frappe" / "frappe.csv.gz"))
    positives = int(pc.sum(table.column("label")).as_py())
    figures.update(frappe_logs=positives, frappe_rows=table.num_rows)
    report.add_row(
        "frappe (raw, 2 neg.)", "load_frappe", f"{table.num_rows:,}", f"{positives:,}",
        f"{distinct(table, 'user'):,}", f"{distinct(table, 'item'):,}", f"{seconds:.2f}",
    )  # fmt: skip

    # Frappe CTR benchmark splits.
    data, table, seconds = timed(lambda: load_frappe_splits(benchmarks / "frappe-ctr"))
    split = table.column("split").to_numpy()
    for code, name in enumerate(("train", "valid", "test")):
        figures[f"frappe_ctr_{name}"] = int((split == code).sum())
    report.add_row(
        data.name, "load_frappe_splits",
        " / ".join(f"{figures[f'frappe_ctr_{name}']:,}" for name in ("train", "valid", "test")),
        f"{int(pc.sum(table.column('label')).as_py()):,}", f"{distinct(table, 'user'):,}",
        f"{distinct(table, 'item'):,}", f"{seconds:.2f}",
    )  # fmt: skip

    console.print(report)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
