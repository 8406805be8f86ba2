"""Feature crosses, managed 64-bit vocabulary and many-rows-vs-wide-rows, measured on real and synthetic CTR data.

In one process, on ../shared/benchmarks/frappe-ctr (the given train / valid / test split) and
on synthetic data, the same small DLRM (embedding tables trained by fused row-wise Adagrad,
dense part by Adam, early stopping on validation AUC) is trained:

* ``nocross``: the plain features, d = 16;
* ``cross``: the plain features plus declared crosses, d = 16;
* ``cross_managed``: as ``cross`` but every feature through a managed vocabulary (bounded
  table of raw 64-bit ids with admission and LFU eviction) instead of an exact one;
* ``wide``: the plain features with the embedding width that spends the same table bytes
  as ``cross`` (rows x d equal): the field's "many small rows beat few wide rows" check.

Last line: one JSON object, keys ``<data>_<variant>_auc`` (mean over seeds) and spreads.

    python bench/frappe_features.py            # 2 seeds, up to 30 epochs
    python bench/frappe_features.py --quick    # 1 seed, up to 4 epochs, 300k synthetic events
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

FRAPPE_CROSSES = [
    "{name: user_x_item, kind: interaction, columns: [user, item]}",
    "{name: item_x_daytime, kind: interaction, columns: [item, daytime]}",
    "{name: item_x_weekday, kind: interaction, columns: [item, weekday]}",
    "{name: item_x_country, kind: interaction, columns: [item, country]}",
    "{name: user_x_daytime, kind: interaction, columns: [user, daytime]}",
]
SYNTHETIC_CROSSES = [
    "{name: category_x_hour, kind: derivation, columns: [category, hour]}",
    "{name: device_x_price, kind: interaction, columns: [device, price], buckets: {price: [5, 10, 20, 40, 80]}}",
    "{name: age_x_category, kind: interaction, columns: [age_bucket, category]}",
    "{name: gender_x_category, kind: interaction, columns: [gender, category]}",
    "{name: item_x_hour, kind: interaction, columns: [item_id, hour]}",
]


def table_rows(task) -> int:
    return sum(vocab.num_rows for vocab in task.inputs.vocabularies.values())


def run(data: Path, name: str, seed: int, epochs: int, extra: list[str], run_dir: Path) -> tuple[float, object]:
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    config = load_config(None, [
        f"name={name}", "task=ctr", f"data.path={data}", "data.batch_size=4096", "data.eval_batch_size=16384",
        "model={name: dlrm, embedding_dim: 16, top_mlp: [400, 400, 400], dropout: 0.1}",
        "embedding.optimizer=rowwise_adagrad", "embedding.learning_rate=0.05",
        f"train.epochs={epochs}", "train.patience=2", "train.learning_rate=0.001", f"train.seed={seed}",
        "train.checkpoint=true", f"run_dir={run_dir}", *extra,
    ])
    started = time.perf_counter()
    result = train(config, progress=False)
    print(f"  {name} seed {seed}: test AUC {result.test['auc']:.4f} (best epoch {result.best_epoch}, "
          f"{time.perf_counter() - started:.0f}s)", flush=True)
    return result.test["auc"], config


def sweep(label: str, data: Path, crosses: list[str], plain_sparse: list[str] | None, seeds: list[int],
          epochs: int, run_dir: Path, out: dict, variants: list[str]) -> None:
    from terarec.train.experiment import load_config
    from terarec.train.tasks import build_task

    cross_arg = f"data.crosses=[{', '.join(crosses)}]"
    sparse_arg = [f"data.sparse=[{', '.join(plain_sparse)}]"] if plain_sparse else []

    def rows(extra: list[str]) -> int:
        return table_rows(build_task(load_config(None, ["task=ctr", f"data.path={data}", "model.name=dlrm", *extra])))

    rows_plain, rows_cross = rows(sparse_arg), rows(sparse_arg + [cross_arg])
    # Same table bytes as the crossed model (rows x d), rounded to the engine's multiple of 4.
    wide_dim = 4 * max(1, round(16 * rows_cross / rows_plain / 4))
    arguments = {
        "nocross": sparse_arg,
        "cross": sparse_arg + [cross_arg],
        "cross_managed": sparse_arg + [cross_arg, "embedding.vocabulary=managed"],
        "wide": sparse_arg + [f"model.embedding_dim={wide_dim}"],
    }
    for variant in variants:
        aucs = [run(data, f"{label}-{variant}", seed, epochs, arguments[variant], run_dir)[0] for seed in seeds]
        out[f"{label}_{variant}_auc"] = round(float(np.mean(aucs)), 5)
        out[f"{label}_{variant}_auc_spread"] = round(float(np.max(aucs) - np.min(aucs)), 5)
    out[f"{label}_rows_plain"] = rows_plain
    out[f"{label}_rows_cross"] = rows_cross
    out[f"{label}_wide_dim"] = wide_dim
    out[f"{label}_table_floats_cross"] = rows_cross * 16
    out[f"{label}_table_floats_wide"] = rows_plain * wide_dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--only", choices=["frappe", "synthetic"], default=None)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 2, quick 1)")
    parser.add_argument("--variants", default="nocross,cross,cross_managed,wide",
                        help="comma-separated subset of nocross, cross, cross_managed, wide")
    args = parser.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    seeds = list(range(args.seeds or (1 if args.quick else 2)))
    epochs = 4 if args.quick else 30
    variants = args.variants.split(",")

    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig

    out: dict = {"seeds": seeds, "max_epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="terarec-features-") as tmp:
        work = Path(tmp)
        if args.only in (None, "frappe"):
            frappe = work / "frappe"
            write_dataset(load_source("frappe-splits", str(args.shared / "benchmarks" / "frappe-ctr")), frappe,
                          progress=False)
            print("frappe-ctr:", flush=True)
            sweep("frappe", frappe, FRAPPE_CROSSES, None, seeds, epochs, work / "runs", out, variants)
        if args.only in (None, "synthetic"):
            events = 300_000 if args.quick else 1_000_000
            synthetic = work / "synthetic"
            write_dataset(load_synthetic(SyntheticConfig(num_events=events, num_users=events // 100,
                                                         num_items=events // 50, seed=0)),
                          synthetic, SplitConfig(method="time"), progress=False)
            print(f"synthetic ({events:,} events, time split):", flush=True)
            plain = ["user_id", "item_id", "category", "hour", "device", "age_bucket", "gender"]
            sweep("synthetic", synthetic, SYNTHETIC_CROSSES, plain, seeds, epochs, work / "runs", out, variants)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
