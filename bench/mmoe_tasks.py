"""MMoE on the built-in synthetic data, two tasks (click, like) against single-task models.

The two-task MMoE (configs/synthetic/mmoe.yaml) is compared with MMoE models of the same
size trained on one label each (same experts, gate and tower widths, one gate and one tower):
test AUC per task, seeds 0..N-1, on one time-split synthetic log made in a temp folder.
``like`` is 1 only on clicked impressions whose user liked the item (about a third of
clicks), so it is the sparse task that can borrow from click.

    python bench/mmoe_tasks.py            # 1M events, seeds 0 and 1
    python bench/mmoe_tasks.py --quick    # 300k events, 1 seed

Last line: JSON with ``mmoe_click_auc``, ``mmoe_like_auc``, ``single_click_auc``,
``single_like_auc`` (means over seeds), their spreads, ``*_params`` and the verdicts
``click_at_least_single`` / ``like_at_least_single``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300k events, one seed")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    threads = max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)

    from terarec.train.experiment import load_config
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig
    from terarec.train.loop import train

    events = args.events or (300_000 if args.quick else 1_000_000)
    seeds = args.seeds or (1 if args.quick else 2)
    variants = {"mmoe": ["click", "like"], "single_click": ["click"], "single_like": ["like"]}
    aucs: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="terarec-mmoe-") as tmp:
        data = Path(tmp) / "synthetic"
        write_dataset(load_synthetic(SyntheticConfig(num_events=events, num_users=events // 100,
                                                     num_items=events // 50, seed=0)),
                      data, SplitConfig(method="time"), progress=False)
        for seed in range(seeds):
            for variant, labels in variants.items():
                overrides = [f"data.path={data}", f"run_dir={Path(tmp) / 'runs'}", f"train.seed={seed}",
                             f"data.labels=[{', '.join(labels)}]", f"train.threads={threads}"]
                result = train(load_config(ROOT / "configs" / "synthetic" / "mmoe.yaml", overrides), progress=False)
                metrics = json.loads((result.run_dir / "metrics.json").read_text())
                params[variant] = metrics["parameters"]
                for label in labels:
                    key = f"{label}_auc" if len(labels) > 1 else "auc"
                    name = f"mmoe_{label}" if variant == "mmoe" else variant
                    aucs.setdefault(name, []).append(result.test[key])
                    print(f"seed {seed} {variant}: {label} test AUC {result.test[key]:.4f} "
                          f"({metrics['parameters']:,} parameters)", flush=True)
    out: dict = {"events": events, "seeds": seeds}
    for name, values in aucs.items():
        out[f"{name}_auc"] = round(float(np.mean(values)), 5)
        out[f"{name}_auc_spread"] = round(float(np.max(values) - np.min(values)), 5)
    out.update({f"{variant}_params": count for variant, count in params.items()})
    out["click_at_least_single"] = out["mmoe_click_auc"] >= out["single_click_auc"]
    out["like_at_least_single"] = out["mmoe_like_auc"] >= out["single_like_auc"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
