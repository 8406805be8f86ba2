"""HSTU ranking against DIN on the synthetic log: per-task test AUC on the same time split.

Both models train through the trainer (``terarec.train.loop.train``) from their experiment
configs, ``configs/synthetic/hstu_ranking.yaml`` (task ``ranking``) and
``configs/synthetic/din_ranking.yaml`` (task ``ctr``), on data made as ``terarec data synth
--ranking-history 50`` makes it: the built-in synthetic log split by time (80 / 10 / 10), every
row with ``hist_*`` lists of the user's 50 strictly earlier events and a ``long_watch`` label
(watch_time above the median watch time of the clicked rows).

* DIN: a CTR model on the rows; target attention over hist_item_id / hist_category, the earlier
  actions (hist_action = click + like) pooled alongside; three BCE heads click, like, long_watch.
* HSTU ranking: trains on each user's training events as interleaved item / action series
  (click, like: BCE; watch_time: MSE on log1p) and is scored on the same test rows with the same
  histories, the row appended as the candidate; its watch-time output is ranked against
  ``long_watch``.

Both keep the epoch with the best validation mean AUC. Last line JSON: ``<model>_<label>_auc``
for click, like and long_watch, HSTU's watch-time RMSE (log1p), sizes and times.

    python bench/hstu_ranking.py            # the configs' size (100k events)
    python bench/hstu_ranking.py --quick    # 40k events, 1 epoch each
    python bench/hstu_ranking.py --seed 1   # data, split and initialisation from seed 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def prepare(folder: Path, events: int, users: int, items: int, history_length: int, seed: int) -> dict:
    """Write the synthetic ranking data as ``terarec data synth --ranking-history`` does."""
    from terarec.data.prepare import write_dataset
    from terarec.data.ranking import synthetic_ranking_source
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig

    data = load_synthetic(SyntheticConfig(num_users=users, num_items=items, num_events=events, seed=seed))
    data = synthetic_ranking_source(data, history_length, ["click", "like", "watch_time", "category", "hour", "device"])
    meta = write_dataset(data, folder, SplitConfig(method="time", valid_fraction=0.1, test_fraction=0.1),
                         progress=False)
    return {"events": meta.num_rows}


def train_config(name: str, config: Path, folder: Path, runs: Path, epochs: int, seed: int) -> dict:
    """Train one config through the trainer; its test AUCs, size and times."""
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    overrides = [f"data.path={folder}", f"run_dir={runs}", f"train.epochs={epochs}", f"train.seed={seed}"]
    started = time.perf_counter()
    result = train(load_config(config, overrides), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    out = {f"{name}_{label}_auc": round(result.test[f"{label}_auc"], 5) for label in ("click", "like", "long_watch")}
    if "long_watch_rmse_log1p" in result.test:
        out[f"{name}_watch_time_rmse_log1p"] = round(result.test["long_watch_rmse_log1p"], 5)
    seconds = [epoch["train_seconds"] for epoch in metrics["epochs"]]
    out.update({f"{name}_params": metrics["parameters"], f"{name}_best_epoch": result.best_epoch,
                f"{name}_s_per_epoch": round(float(np.median(seconds)), 1),
                f"{name}_seconds": round(time.perf_counter() - started, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40k events, 1 epoch each")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="hstu,din")
    args = parser.parse_args()
    configs = {"hstu": ROOT / "configs" / "synthetic" / "hstu_ranking.yaml",
               "din": ROOT / "configs" / "synthetic" / "din_ranking.yaml"}
    size = dict(events=40_000, users=600, items=2_000) if args.quick else dict(events=100_000, users=1_500, items=3_000)
    epochs = args.epochs or (1 if args.quick else 4)
    out: dict = {**size, "epochs": epochs, "seed": args.seed, "history_length": 50, "split": "time 80/10/10"}
    with tempfile.TemporaryDirectory(prefix="terarec-hstu-ranking-") as tmp:
        folder, runs = Path(tmp) / "data", Path(tmp) / "runs"
        out.update(prepare(folder, history_length=50, seed=args.seed, **size))
        for name in args.models.split(","):
            if name not in configs:
                raise SystemExit(f"unknown model {name!r}; choose from {sorted(configs)}")
            out.update(train_config(name, configs[name], folder, runs, epochs, args.seed))
            print({k: v for k, v in out.items() if k.startswith(f"{name}_")}, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
