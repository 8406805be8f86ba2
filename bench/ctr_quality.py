"""CTR quality of the ranking zoo on the Frappe split: test AUC, LogLoss, parameters, speed.

Trains every model that has a ``configs/frappe/<model>.yaml`` on
../shared/benchmarks/frappe-ctr (train / valid / test as given), early stopping on
validation AUC, and prints one JSON object as its last line with ``<model>_auc``,
``<model>_logloss``, ``<model>_params``, ``<model>_s_per_epoch`` and
``<model>_examples_per_s`` for each model.

    python bench/ctr_quality.py                       # every configs/frappe model, seed 0
    python bench/ctr_quality.py --models dlrm,dcnv2 --seeds 2
    python bench/ctr_quality.py --quick               # 2 epochs each
    python bench/ctr_quality.py --seeds 2 --jobs 2    # (model, seed) runs two at a time, 1 thread each

With ``--jobs N`` the runs go to N worker processes of one thread each (on a 2-core machine
two one-thread runs finish sooner than two two-thread runs in a row); seconds per epoch are
then those of one thread beside another run. Measure speed with ``--jobs 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from _runs import run_jobs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run_one(config_path: str, overrides: list[str]) -> dict:
    """Train one (model, seed); returns what the summary needs (picklable, for worker processes)."""
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    result = train(load_config(config_path, overrides), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    return {"test": result.test, "best_epoch": result.best_epoch, "parameters": metrics["parameters"],
            "epochs": [e for e in result.epochs if "train_seconds" in e]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs per model")
    parser.add_argument("--models", default=None, help="comma-separated names (default: every configs/frappe/*.yaml)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (worker processes of one thread each)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every model, e.g. train.epochs=5")
    args = parser.parse_args()
    threads = max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)

    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source

    configs = sorted((ROOT / "configs" / "frappe").glob("*.yaml"))
    names = args.models.split(",") if args.models else [path.stem for path in configs if "_" not in path.stem]
    out: dict = {"seeds": args.seeds, "jobs": args.jobs}
    with tempfile.TemporaryDirectory(prefix="terarec-ctr-") as tmp:
        data = Path(tmp) / "frappe"
        write_dataset(load_source("frappe-splits", str(args.shared / "benchmarks" / "frappe-ctr")), data, progress=False)
        jobs = []
        for name in names:
            for seed in range(args.seeds):
                overrides = [f"data.path={data}", f"run_dir={Path(tmp) / 'runs'}", f"train.seed={seed}",
                             f"train.threads={1 if args.jobs > 1 else threads}", *args.overrides]
                if args.quick:
                    overrides.append("train.epochs=2")
                jobs.append(((name, seed), (str(ROOT / "configs" / "frappe" / f"{name}.yaml"), overrides)))
        results: dict[str, list[dict]] = {name: [] for name in names}

        def report(key: tuple[str, int], result: dict) -> None:
            name, seed = key
            results[name].append(result)
            print(f"{name} seed {seed}: test AUC {result['test']['auc']:.4f}, LogLoss {result['test']['logloss']:.4f}, "
                  f"best epoch {result['best_epoch']}", flush=True)

        run_jobs(jobs, run_one, report, args.jobs)
        for name in names:
            runs = results[name]
            aucs = [r["test"]["auc"] for r in runs]
            out[f"{name}_auc"] = round(float(np.mean(aucs)), 5)
            out[f"{name}_auc_spread"] = round(float(np.max(aucs) - np.min(aucs)), 5)
            out[f"{name}_logloss"] = round(float(np.mean([r["test"]["logloss"] for r in runs])), 5)
            out[f"{name}_params"] = runs[0]["parameters"]
            out[f"{name}_best_epochs"] = [r["best_epoch"] for r in runs]
            epochs = [e for r in runs for e in r["epochs"]]
            out[f"{name}_s_per_epoch"] = round(float(np.median([e["train_seconds"] for e in epochs])), 2)
            out[f"{name}_examples_per_s"] = round(float(np.median([e["examples_per_s"] for e in epochs])), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
