"""Next-item retrieval quality and speed of HSTU, SASRec, BERT4Rec and GRU4Rec on ML-100K, Beauty, Video.

Each data set is read from ../shared/datasets (ml-100k with its timestamps; the Amazon
Beauty and Video Games files, whose timestamps are positions), prepared into a temporary
folder with a leave-one-out split (last event = test, second to last = validation), and every
model is trained from ``configs/<dataset>/<model>.yaml`` by the one trainer, keeping the best
validation NDCG@10 epoch. Test metrics rank the target against the full catalogue with the
user's history excluded.

Prints one line per (data set, model), then, as its last line, one JSON object with
``<dataset>_<model>_{hr10,hr50,ndcg10,ndcg50,mrr,s_per_epoch,best_epoch,minutes_to_best}`` and
``<dataset>_hstu_over_sasrec_ndcg10``. ``s_per_epoch`` is the median training time of an epoch
(validation excluded); ``minutes_to_best`` is wall time from the start of training to the end of
the best epoch's validation. The Beauty configs of SASRec and HSTU are the speed
configuration (max length 50, d 64, 2 layers).

    python bench/seq_quality.py                                   # everything (about an hour on 2 cores)
    python bench/seq_quality.py --datasets beauty --models hstu,sasrec
    python bench/seq_quality.py --quick                           # 2 epochs each
    python bench/seq_quality.py --threads 1 model.dropout=0.3     # overrides apply to every run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = {  # name -> (source, path under shared/datasets)
    "ml100k": ("movielens", "ml-100k"),
    "beauty": ("amazon", "amazon-beauty/Beauty.txt"),
    "video": ("amazon", "amazon-video/Video.txt"),
}
MODELS = ("hstu", "sasrec", "bert4rec", "gru4rec")
RECBOLE_SASREC_BEAUTY_S_PER_EPOCH = 240.0  # RecBole 1.2.1, CE over all items, this 2-core machine


def minutes_to_best(run_dir: Path, best_epoch: int) -> float:
    """Minutes from the run's first log line to the log line of the best epoch (train + validation)."""
    stamps = {}
    first = None
    for line in (run_dir / "train.log").read_text().splitlines():
        moment = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        first = first or moment
        words = line[24:].split()
        if len(words) > 2 and words[1] == "epoch":
            stamps[int(words[2].rstrip(":"))] = moment
    if first is None or best_epoch not in stamps:
        return float("nan")
    return (stamps[best_epoch] - first).total_seconds() / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs per model")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: every core)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every run, e.g. train.epochs=5")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0))))

    from terarec.config import load_config
    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source
    from terarec.train.loop import train

    datasets = [name for name in args.datasets.split(",") if name]
    models = [name for name in args.models.split(",") if name]
    for name in datasets:
        if name not in DATASETS:
            parser.error(f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="terarec-seq-") as tmp:
        for dataset in datasets:
            source, relative = DATASETS[dataset]
            folder = Path(tmp) / dataset
            meta = write_dataset(load_source(source, str(args.shared / "datasets" / relative)), folder, progress=False)
            print(f"{dataset}: {meta.split['counts']} events by split (leave-one-out)", flush=True)
            for model in models:
                overrides = [f"data.path={folder}", f"run_dir={Path(tmp) / 'runs'}", f"train.threads={args.threads}"]
                if args.quick:
                    overrides.append("train.epochs=2")
                config = load_config(ROOT / "configs" / dataset / f"{model}.yaml", overrides + list(args.overrides))
                started = time.perf_counter()
                result = train(config, progress=False)
                epochs = [e for e in result.epochs if "train_seconds" in e]
                key = f"{dataset}_{model}"
                test = result.test
                out.update({
                    f"{key}_hr10": round(test["hr@10"], 5),
                    f"{key}_hr50": round(test["hr@50"], 5),
                    f"{key}_ndcg10": round(test["ndcg@10"], 5),
                    f"{key}_ndcg50": round(test["ndcg@50"], 5),
                    f"{key}_mrr": round(test["mrr"], 5),
                    f"{key}_s_per_epoch": round(float(np.median([e["train_seconds"] for e in epochs])), 2),
                    f"{key}_best_epoch": result.best_epoch,
                    f"{key}_epochs_run": len(epochs),
                    f"{key}_minutes_to_best": round(minutes_to_best(result.run_dir, result.best_epoch), 2),
                })  # fmt: skip
                print(
                    f"{dataset} {model}: HR@10 {test['hr@10']:.4f} HR@50 {test['hr@50']:.4f} "
                    f"NDCG@10 {test['ndcg@10']:.4f} NDCG@50 {test['ndcg@50']:.4f} MRR {test['mrr']:.4f} | "
                    f"{out[f'{key}_s_per_epoch']:.1f} s/epoch, best epoch {result.best_epoch} of {len(epochs)}, "
                    f"{out[f'{key}_minutes_to_best']:.1f} min to best, {time.perf_counter() - started:.0f} s in all",
                    flush=True,
                )
            if {"hstu", "sasrec"} <= set(models):
                ratio = out[f"{dataset}_hstu_ndcg10"] / max(out[f"{dataset}_sasrec_ndcg10"], 1e-12)
                out[f"{dataset}_hstu_over_sasrec_ndcg10"] = round(ratio, 3)
                print(f"{dataset}: HSTU NDCG@10 / SASRec NDCG@10 = {ratio:.3f}", flush=True)
    for model in ("sasrec", "hstu"):
        if f"beauty_{model}_s_per_epoch" in out:
            speedup = RECBOLE_SASREC_BEAUTY_S_PER_EPOCH / out[f"beauty_{model}_s_per_epoch"]
            out[f"beauty_{model}_speedup_vs_recbole_sasrec"] = round(speedup, 1)
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
