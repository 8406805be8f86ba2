"""HSTU ranking against DIN on the synthetic log: per-task test AUC on the same time split.

Data: the built-in synthetic log (``configs/synthetic/hstu_ranking.yaml``: size, history
length), split by time (80 / 10 / 10). Every row gets ``hist_*`` lists of the user's events
with a strictly earlier timestamp (``terarec.data.history``, the last ``history_length``),
and a ``long_watch`` label: watch_time above the median watch time of the clicked rows (a
binary version of the regression task, so it has an AUC).

* DIN (``terarec.models.din``) trains through ``terarec.train.loop.train`` as a CTR model on
  the rows: context features user_id, item_id, category, hour, device, age_bucket, gender,
  price; target attention over hist_item_id / hist_category, the earlier actions
  (hist_action = click + like) pooled alongside; three BCE heads click, like, long_watch.
* HSTU ranking (``terarec.models.hstu_ranking``) trains on each user's training events as
  interleaved item / action series (click, like: BCE; watch_time: MSE on log1p); it is
  scored on the same test rows with the same histories, the row appended as the candidate.
  Its watch-time output is ranked against ``long_watch``.

Both keep the epoch with the best validation mean AUC. Last line JSON: ``<model>_<task>_auc``
for click, like and long_watch, HSTU's watch-time RMSE (log1p), sizes and times.

    python bench/hstu_ranking.py            # the config's size (100k events)
    python bench/hstu_ranking.py --quick    # 40k events, 1 epoch each
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TASK_LABELS = {"click": "click", "like": "like", "watch_time": "long_watch"}  # HSTU task -> AUC label


def prepare(folder: Path, data: dict, seed: int) -> dict:
    """Write the synthetic log with history lists and long_watch; returns label facts."""
    from terarec.data.prepare import write_dataset
    from terarec.data.ranking import add_ranking_history
    from terarec.data.sources.base import SourceData
    from terarec.data.sources.synthetic import SyntheticConfig, SyntheticGenerator
    from terarec.data.splits import SplitConfig

    generator = SyntheticGenerator(SyntheticConfig(num_users=data["users"], num_items=data["items"],
                                                   num_events=data["events"], seed=seed))
    table = pa.concat_tables(list(generator))
    click, like = table.column("click").to_numpy(), table.column("like").to_numpy()
    watch = table.column("watch_time").to_numpy()
    threshold = float(np.median(watch[click > 0]))
    table = table.append_column("action", pa.array((click + like).astype(np.int64)))
    table = table.append_column("long_watch", pa.array((watch > threshold).astype(np.float32)))
    columns = [*data["actions"], *data["item_features"], "action"]
    table = add_ranking_history(table, columns, data["history_length"])
    write_dataset(
        SourceData(name="synthetic-ranking", source="synthetic", kind="events", chunks=[table],
                   sparse=["user_id", "item_id", "category", "hour", "device", "age_bucket", "gender"],
                   dense=["price"], labels=["click", "like", "long_watch"], sorted_by_user=True),
        folder, SplitConfig(method="time", valid_fraction=0.1, test_fraction=0.1), progress=False)
    return {"long_watch_threshold_s": threshold, "events": table.num_rows}


def train_din(folder: Path, runs: Path, data: dict, epochs: int, seed: int) -> dict:
    from terarec.config import load_config
    from terarec.train.loop import train

    config = {
        "name": "synthetic-din-ranking",
        "task": "ctr",
        "run_dir": str(runs),
        "data": {"path": str(folder), "batch_size": 512,
                 "sparse": ["user_id", "item_id", "category", "hour", "device", "age_bucket", "gender",
                            "hist_item_id", "hist_category", "hist_action"],
                 "dense": ["price"], "dense_transform": "log1p", "labels": ["click", "like", "long_watch"]},
        "model": {"name": "din", "embedding_dim": 16,
                  "history": {"hist_item_id": "item_id", "hist_category": "category"},
                  "history_extra": ["hist_action"], "max_history": data["history_length"],
                  "attention_mlp": [36], "mlp": [200, 80], "dropout": 0.1},
        "train": {"epochs": epochs, "learning_rate": 0.001, "seed": seed, "patience": 2},
    }
    path = runs / "din.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    result = train(load_config(path), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    out = {f"din_{label}_auc": round(result.test[f"{label}_auc"], 5) for label in ("click", "like", "long_watch")}
    out.update(din_params=metrics["parameters"], din_best_epoch=result.best_epoch,
               din_seconds=round(time.perf_counter() - started, 1))
    return out


@torch.no_grad()
def evaluate_hstu(model, dataset) -> dict:
    from terarec.eval.binary import BinaryAccumulator

    model.eval()
    accumulators = {task: BinaryAccumulator() for task in model.task_names}
    squared, count = 0.0, 0
    for batch in dataset:  # the candidates' actions are the impressions' labels
        outputs = model(batch)
        labels = batch.labels
        for index, task in enumerate(model.task_names):
            if model.config.tasks[task] == "binary":
                accumulators[task].update(labels[:, index].numpy(), torch.sigmoid(outputs[:, index]).numpy())
            else:
                squared += float((outputs[:, index] - torch.log1p(labels[:, index])).square().sum())
                count += labels.shape[0]
                # rank by predicted watch time; labelled by the long_watch rule of prepare()
                scores = torch.sigmoid(outputs[:, index] - outputs[:, index].mean())
                accumulators[task].update((labels[:, index] > dataset.long_watch).float().numpy(), scores.numpy())
    out = {f"{TASK_LABELS[task]}_auc": float(acc.compute()["auc"]) for task, acc in accumulators.items()}
    out["mean_auc"] = float(np.mean(list(out.values())))
    if count:
        out["watch_time_rmse_log1p"] = (squared / count) ** 0.5
    return out


def train_hstu(folder: Path, config: dict, epochs: int, seed: int, long_watch: float) -> dict:
    from terarec.config import from_dict
    from terarec.data.ranking import RankingDataset, fit_vocabularies
    from terarec.models.hstu_ranking import HSTURanking
    from terarec.models.inputs import ModelInputs

    torch.manual_seed(seed)
    data, options = config["data"], from_dict(HSTURanking.Config, config["model"], "model")
    vocabularies = fit_vocabularies(folder, ["item_id", *options.item_features, *options.user_features])
    model = HSTURanking(options, ModelInputs(vocabularies=vocabularies))

    def dataset(split: str, shuffle: bool = False) -> RankingDataset:
        ds = RankingDataset(folder, split, data["actions"], options.item_features, options.user_features,
                            max_events=options.max_events, shuffle=shuffle, seed=seed,
                            batch_size=data["batch_size"] if split == "train" else data["eval_batch_size"])
        ds.long_watch = long_watch
        return ds

    optimizer = torch.optim.Adam(model.parameters(), lr=config["train"]["learning_rate"])
    train_set = dataset("train", shuffle=True)
    best, best_state, best_epoch, epoch_seconds = -1.0, None, 0, []
    started = time.perf_counter()
    for epoch in range(epochs):
        train_set.set_epoch(epoch)
        model.train()
        epoch_start, losses = time.perf_counter(), []
        for batch in train_set:
            loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_seconds.append(time.perf_counter() - epoch_start)
        valid = evaluate_hstu(model, dataset("valid"))
        print(f"hstu epoch {epoch + 1}: loss {np.mean(losses):.4f}, valid {json.dumps(valid)} "
              f"({epoch_seconds[-1]:.0f}s)", flush=True)
        if valid["mean_auc"] > best:
            best, best_state, best_epoch = valid["mean_auc"], copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    test = evaluate_hstu(model, dataset("test"))
    out = {f"hstu_{key}": round(value, 5) for key, value in test.items() if key != "mean_auc"}
    out.update(hstu_params=sum(p.numel() for p in model.parameters()), hstu_best_epoch=best_epoch,
               hstu_s_per_epoch=round(float(np.median(epoch_seconds)), 1),
               hstu_seconds=round(time.perf_counter() - started, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40k events, 1 epoch each")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic" / "hstu_ranking.yaml")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="hstu,din")
    args = parser.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    config = yaml.safe_load(args.config.read_text())
    data = config["data"]
    if args.quick:
        data.update(events=40_000, users=600, items=2_000)
    epochs = args.epochs or (1 if args.quick else config["train"]["epochs"])
    out: dict = {"events": data["events"], "users": data["users"], "items": data["items"], "epochs": epochs,
                 "history_length": data["history_length"], "split": "time 80/10/10"}
    with tempfile.TemporaryDirectory(prefix="terarec-hstu-ranking-") as tmp:
        folder, runs = Path(tmp) / "data", Path(tmp) / "runs"
        runs.mkdir()
        facts = prepare(folder, data, args.seed)
        out.update(facts)
        print(f"data: {json.dumps(facts)}", flush=True)
        models = args.models.split(",")
        if "hstu" in models:
            out.update(train_hstu(folder, config, epochs, args.seed, facts["long_watch_threshold_s"]))
            print({k: v for k, v in out.items() if k.startswith("hstu_")}, flush=True)
        if "din" in models:
            out.update(train_din(folder, runs, data, epochs, args.seed))
            print({k: v for k, v in out.items() if k.startswith("din_")}, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
