"""ML-100K as CTR: DIN, DIEN and SIM against DLRM without history, test AUC in one run.

Prepares ../shared/datasets/ml-100k into a temporary folder as CTR (like = rating >= 4), with
user and movie features and each event's earlier history (movies, genres, ratings; the
last 256), split by time (80 / 10 / 10), then trains every ``configs/ml100k/<model>.yaml`` of
``--models`` with early stopping on validation AUC, once per seed. Prints a line per run and,
last, one JSON object: ``<model>_auc`` (mean test AUC over the seeds), ``<model>_auc_spread``
(max - min), ``<model>_aucs`` (per seed), ``<model>_gauc``, ``<model>_logloss``,
``<model>_params``, ``<model>_s_per_epoch``, ``<model>_examples_per_s``, ``<model>_best_epochs``
and ``<model>_beats_dlrm`` (true when its test AUC beats DLRM's under every seed).

    python bench/ml100k_ctr.py                          # dlrm, din, dien, sim; seeds 0 and 1
    python bench/ml100k_ctr.py --quick                  # 2 epochs each, one seed
    python bench/ml100k_ctr.py --models dlrm,din train.threads=1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HISTORY_LENGTH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs per model and one seed")
    parser.add_argument("--models", default="dlrm,din,dien,sim", help="comma-separated configs/ml100k names")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every model, e.g. train.threads=1")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds

    from terarec.train.experiment import load_config
    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source
    from terarec.data.splits import SplitConfig
    from terarec.train.loop import train

    names = args.models.split(",")
    out: dict = {"seeds": list(range(seeds)), "history_length": HISTORY_LENGTH}
    aucs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="terarec-ml100k-") as tmp:
        data = Path(tmp) / "ml100k-ctr"
        source = load_source("movielens", str(args.shared / "datasets" / "ml-100k"), like_threshold=4,
                             features=True, history_length=HISTORY_LENGTH)
        meta = write_dataset(source, data, SplitConfig(method="time"), progress=False)
        out["rows"] = meta.split["counts"]
        for name in names:
            results = []
            for seed in range(seeds):
                overrides = [f"data.path={data}", f"run_dir={Path(tmp) / 'runs'}", f"train.seed={seed}",
                             "train.checkpoint=true", *args.overrides]
                if args.quick:
                    overrides.append("train.epochs=2")
                result = train(load_config(ROOT / "configs" / "ml100k" / f"{name}.yaml", overrides), progress=False)
                results.append(result)
                print(f"{name} seed {seed}: test AUC {result.test['auc']:.4f}, gAUC {result.test['gauc']:.4f}, "
                      f"LogLoss {result.test['logloss']:.4f}, best epoch {result.best_epoch}", flush=True)
            epochs = [e for r in results for e in r.epochs if "train_seconds" in e]
            aucs[name] = [r.test["auc"] for r in results]
            out[f"{name}_auc"] = round(float(np.mean(aucs[name])), 5)
            out[f"{name}_auc_spread"] = round(float(np.max(aucs[name]) - np.min(aucs[name])), 5)
            out[f"{name}_aucs"] = [round(a, 5) for a in aucs[name]]
            out[f"{name}_gauc"] = round(float(np.mean([r.test["gauc"] for r in results])), 5)
            out[f"{name}_logloss"] = round(float(np.mean([r.test["logloss"] for r in results])), 5)
            out[f"{name}_params"] = json.loads((results[0].run_dir / "metrics.json").read_text())["parameters"]
            out[f"{name}_best_epochs"] = [r.best_epoch for r in results]
            out[f"{name}_s_per_epoch"] = round(float(np.median([e["train_seconds"] for e in epochs])), 2)
            out[f"{name}_examples_per_s"] = round(float(np.median([e["examples_per_s"] for e in epochs])), 1)
    if "dlrm" in aucs:
        for name in names:
            if name != "dlrm":
                out[f"{name}_beats_dlrm"] = all(a > b for a, b in zip(aucs[name], aucs["dlrm"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
