"""Next-item retrieval quality and speed of HSTU, SASRec, BERT4Rec and GRU4Rec on ML-100K, Beauty, Video.

Each data set is read from ../shared/datasets (ml-100k with its timestamps; the Amazon
Beauty and Video Games files, whose timestamps are positions), prepared into a temporary
folder with a leave-one-out split (last event = test, second to last = validation), and every
model is trained from ``configs/<dataset>/<model>.yaml`` by the one trainer, keeping the best
validation NDCG@10 epoch. Test metrics rank the target against the full catalogue under the
configs' ``eval.protocol`` (``exclude_history`` unless overridden, e.g. ``eval.protocol=allow_repeats``):
every item of the user's full history is removed and a target that repeats one counts as a miss.

Prints one line per (data set, model), then, as its last line, one JSON object with
``<dataset>_<model>_{hr10,hr50,ndcg10,ndcg50,mrr,s_per_epoch,best_epoch,minutes_to_best}``,
``<dataset>_test_targets`` and ``<dataset>_repeated_targets`` (test targets that repeat an item of
the user's history), ``protocol`` and ``<dataset>_hstu_over_sasrec_ndcg10``. ``s_per_epoch`` is
the median training time of an epoch
(validation excluded); ``minutes_to_best`` is wall time from the start of training to the end of
the best epoch's validation. The Beauty configs of SASRec and HSTU are the speed
configuration (max length 50, d 64, 2 layers).

    python bench/seq_quality.py --jobs 2                          # everything, two one-thread runs at a time (~1 h on 2 cores)
    python bench/seq_quality.py --datasets beauty --models hstu,sasrec
    python bench/seq_quality.py --quick                           # 2 epochs each
    python bench/seq_quality.py --threads 1 model.dropout=0.3     # overrides apply to every run

With ``--jobs N`` the runs go to N worker processes of one thread each; seconds per epoch are
then those of one thread beside another run. Measure speed with ``--jobs 1``.
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
from _runs import run_jobs

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


def run_one(config_path: str, overrides: list[str]) -> dict:
    """Train one (data set, model); returns its figures (picklable, for worker processes)."""
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    started = time.perf_counter()
    result = train(load_config(config_path, overrides), progress=False)
    epochs = [e for e in result.epochs if "train_seconds" in e]
    return {
        "test": result.test,
        "best_epoch": result.best_epoch,
        "epochs_run": len(epochs),
        "s_per_epoch": float(np.median([e["train_seconds"] for e in epochs])),
        "minutes_to_best": minutes_to_best(result.run_dir, result.best_epoch),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs per model")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: every core; 1 with --jobs > 1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (worker processes of one thread each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every run, e.g. train.epochs=5")
    args = parser.parse_args()
    threads = 1 if args.jobs > 1 else args.threads or max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)

    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source

    datasets = [name for name in args.datasets.split(",") if name]
    models = [name for name in args.models.split(",") if name]
    for name in datasets:
        if name not in DATASETS:
            parser.error(f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    out: dict = {"seed": args.seed, "jobs": args.jobs, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="terarec-seq-") as tmp:
        jobs = []
        for dataset in datasets:
            source, relative = DATASETS[dataset]
            folder = Path(tmp) / dataset
            meta = write_dataset(load_source(source, str(args.shared / "datasets" / relative)), folder, progress=False)
            print(f"{dataset}: {meta.split['counts']} events by split (leave-one-out)", flush=True)
            for model in models:
                overrides = [f"data.path={folder}", f"run_dir={Path(tmp) / 'runs'}", f"train.threads={threads}",
                             f"train.seed={args.seed}"]
                if args.quick:
                    overrides.append("train.epochs=2")
                jobs.append(((dataset, model), (str(ROOT / "configs" / dataset / f"{model}.yaml"), overrides + list(args.overrides))))

        def report(names: tuple[str, str], result: dict) -> None:
            dataset, model = names
            key, test = f"{dataset}_{model}", result["test"]
            out.update({
                "protocol": test["protocol"],
                f"{dataset}_test_targets": test["count"],
                f"{dataset}_repeated_targets": test["repeated_targets"],
                f"{key}_hr10": round(test["hr@10"], 5),
                f"{key}_hr50": round(test["hr@50"], 5),
                f"{key}_ndcg10": round(test["ndcg@10"], 5),
                f"{key}_ndcg50": round(test["ndcg@50"], 5),
                f"{key}_mrr": round(test["mrr"], 5),
                f"{key}_s_per_epoch": round(result["s_per_epoch"], 2),
                f"{key}_best_epoch": result["best_epoch"],
                f"{key}_epochs_run": result["epochs_run"],
                f"{key}_minutes_to_best": round(result["minutes_to_best"], 2),
            })  # fmt: skip
            print(
                f"{dataset} {model}: HR@10 {test['hr@10']:.4f} HR@50 {test['hr@50']:.4f} "
                f"NDCG@10 {test['ndcg@10']:.4f} NDCG@50 {test['ndcg@50']:.4f} MRR {test['mrr']:.4f} "
                f"({test['protocol']}, {test['repeated_targets']} of {test['count']} targets repeated) | "
                f"{result['s_per_epoch']:.1f} s/epoch, best epoch {result['best_epoch']} of {result['epochs_run']}, "
                f"{result['minutes_to_best']:.1f} min to best, {result['seconds']:.0f} s in all",
                flush=True,
            )

        run_jobs(jobs, run_one, report, args.jobs)
    if {"hstu", "sasrec"} <= set(models):
        for dataset in datasets:
            ratio = out[f"{dataset}_hstu_ndcg10"] / max(out[f"{dataset}_sasrec_ndcg10"], 1e-12)
            out[f"{dataset}_hstu_over_sasrec_ndcg10"] = round(ratio, 3)
            print(f"{dataset}: HSTU NDCG@10 / SASRec NDCG@10 = {ratio:.3f}", flush=True)
    for model in ("sasrec", "hstu"):
        if f"beauty_{model}_s_per_epoch" in out:
            speedup = RECBOLE_SASREC_BEAUTY_S_PER_EPOCH / out[f"beauty_{model}_s_per_epoch"]
            out[f"beauty_{model}_speedup_vs_recbole_sasrec"] = round(speedup, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
