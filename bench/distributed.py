"""Distributed training on this machine: test metrics and examples/s with 1, 2 and 4 processes,
and the measured memory of a column-wise sharded table on each of 2 processes.

Frappe DLRM and Wukong (configs/frappe/*.yaml, ../shared/benchmarks/frappe-ctr) and ML-100K HSTU
(configs/ml100k/hstu.yaml, ../shared/datasets/ml-100k), each trained in one process (the ordinary
``terarec train``, engine tables) and with ``terarec train --nproc 2`` and ``--nproc 4`` (TorchRec
sharded tables, DDP, one thread per process). Sharded tables need a fused optimizer, so the
Frappe configs run with ``embedding.optimizer=rowwise_adagrad embedding.learning_rate=0.05
embedding.regularization=0`` in every process count (the tuned configs use Adam with an L2).
The global batch is the config's in every process count (each process takes 1/N of it).

    python bench/distributed.py            # up to 10 Frappe epochs, 30 ML-100K epochs (early stopping)
    python bench/distributed.py --models frappe_dlrm --frappe-epochs 5
    python bench/distributed.py --quick    # 1 short epoch each: the machinery, not the quality criteria
    python bench/distributed.py --models ml100k_hstu --seeds 3 --seq-epochs 25 --no-rank-bytes

Last line: one JSON object: per (model, processes) the test metrics and examples/s per process
and in total, the means over ``--seeds`` runs (train.seed ``--first-seed``, default 0, and on;
each run's value under ``<key>_seeds``); ``<model>_auc_within_0.002`` /
``<model>_ndcg10_within_5pct`` and ``hstu_ndcg_within_5pct`` (the criteria on the means); ``auc_gap_max`` (largest
|AUC - one-process AUC|, criterion <= 0.002),
``ndcg10_gap_max`` (largest relative NDCG@10 gap, criterion <= 5%), ``rank_bytes_measured``
(bytes of local table shards plus their optimizer state on each of 2 processes, every Frappe
DLRM table column-wise at d=64; ``measure_rank_bytes``), ``rank_bytes_planned`` (what
``terarec plan``'s ``plan_sharding`` predicts for the same tables) and ``rank_bytes_plan_error``
(largest relative difference, criterion <= 10%). Every process count shares the
machine's 2 cores: 4 processes x 1 thread is oversubscribed, so examples/s shows the
overhead, not a scaling curve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PROCESSES = (1, 2, 4)
SPARSE_FUSED = ["embedding.optimizer=rowwise_adagrad", "embedding.learning_rate=0.05", "embedding.regularization=0"]
MODELS = {
    "frappe_dlrm": ("configs/frappe/dlrm.yaml", "frappe", SPARSE_FUSED),
    "frappe_wukong": ("configs/frappe/wukong.yaml", "frappe", SPARSE_FUSED),
    "ml100k_hstu": ("configs/ml100k/hstu.yaml", "ml-100k", []),
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def train_on(config: str, overrides: list[str], nproc: int, run_dir: Path) -> dict:
    """One run of ``terarec train`` on ``nproc`` processes (1: the ordinary one-process path)."""
    command = [sys.executable, "-m", "terarec.cli", "train", str(ROOT / config), *overrides, "--threads", "1",
               "--run-dir", str(run_dir), "--no-progress", *(["--nproc", str(nproc)] if nproc > 1 else [])]
    done = subprocess.run(command, env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    epochs = [epoch for epoch in record["epochs"] if "examples_per_s" in epoch]
    per_process = sum(epoch["examples_per_s"] for epoch in epochs) / len(epochs)
    test = {key: value for key, value in record["test"].items() if isinstance(value, (int, float))}
    return {**test, "best_epoch": record["best_epoch"], "epochs": len(epochs),
            "examples_per_s_per_process": round(per_process, 1), "examples_per_s_total": round(per_process * nproc, 1)}


MEASURE = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from terarec.train import distributed
from terarec.train.experiment import load_config
from terarec.train.tasks import build_task

from terarec.embedding.planner import MemoryPlan, TablePlan
from terarec.embedding.sharding_plan import plan_sharding
from torchrec import EmbeddingBagCollection

distributed.init_process_group()
config = load_config(sys.argv[1], sys.argv[3:])
task = build_task(config)
# What `terarec plan` predicts for these tables (read before DistributedModelParallel replaces them):
# fp32 rows with row-wise Adagrad, no managed vocabulary (no ids or hash map), column-wise.
tables = [TablePlan(table.name, rows=table.num_embeddings, dim=table.embedding_dim, dtype="fp32",
                    optimizer="rowwise_adagrad", id_bytes=0, hash_overhead=0)
          for module in task.model.modules() if isinstance(module, EmbeddingBagCollection)
          for table in module.embedding_bag_configs()]
planned = plan_sharding(MemoryPlan(tables=tables), distributed.world_size(), "column_wise",
                        column_shard_dim=config.embedding.column_shard_dim)
trainer = distributed.DistributedTrainer(task, Path(sys.argv[2]), distributed._SilentLogs())
measured = [None] * distributed.world_size()
dist.all_gather_object(measured, distributed.rank_bytes(trainer.sharded, trainer.optimizer))
if distributed.rank() == 0:
    for rank_measured, rank_planned in zip(measured, planned.rank_memory):
        rank_measured["planned"] = int(rank_planned.total)
    print("RANK_BYTES " + json.dumps(measured))
"""


def measure_rank_bytes(data: Path, scratch: Path, nproc: int = 2, embedding_dim: int = 64) -> list[dict[str, int]]:
    """Bytes each of ``nproc`` processes holds of Frappe DLRM's tables sharded column-wise at
    ``embedding_dim`` (each table cut into ``nproc`` column shards): local weight shards, their fused optimizer state, and the total (measured
    on the live tensors by ``terarec.train.distributed.rank_bytes``)."""
    script = scratch / "measure.py"
    script.write_text(MEASURE)
    overrides = [f"data.path={data}", f"model.embedding_dim={embedding_dim}", "embedding.sharding_types=[column_wise]",
                 f"embedding.column_shard_dim={embedding_dim // nproc}", *SPARSE_FUSED]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(script), str(ROOT / "configs/frappe/dlrm.yaml"), str(scratch / "measure-run"),
                           *overrides], env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring rank bytes failed:\n{done.stderr[-4000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RANK_BYTES "))
    return json.loads(line.removeprefix("RANK_BYTES "))


def mean_over_seeds(runs: list[dict]) -> dict:
    """The mean of every number the runs of one (model, processes) share, and each run's value
    under ``<key>_seeds``."""
    keys = [key for key in runs[0] if all(isinstance(run.get(key), (int, float)) for run in runs)]
    out = {}
    for key in keys:
        values = [run[key] for run in runs]
        out[key] = sum(values) / len(values)
        out[f"{key}_seeds"] = values
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 short epoch per run")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {list(MODELS)}")
    parser.add_argument("--frappe-epochs", type=int, default=10, help="most epochs of a Frappe run (early stopping)")
    parser.add_argument("--seq-epochs", type=int, default=30, help="most epochs of an ML-100K run (early stopping)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per (model, processes), train.seed FIRST .. FIRST+SEEDS-1; the criteria compare "
                             "the means")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first train.seed (more seeds to add to earlier runs' figures)")
    parser.add_argument("--processes", default=",".join(map(str, PROCESSES)),
                        help="comma-separated process counts, the first the reference")
    parser.add_argument("--no-rank-bytes", action="store_true", help="skip measuring the column-wise shards")
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
    processes = [int(count) for count in args.processes.split(",")]

    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out: dict = {"seeds": seeds}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = args.models.split(",")
        folders = {}
        if not args.no_rank_bytes or any(MODELS[name][1] == "frappe" for name in names):
            folders["frappe"] = tmp / "frappe"  # rank_bytes_measured shards its tables
            write_dataset(load_source("frappe-splits", str(args.shared / "benchmarks" / "frappe-ctr")),
                          folders["frappe"], progress=False)
        if any(MODELS[name][1] == "ml-100k" for name in names):
            folders["ml-100k"] = tmp / "ml-100k"
            write_dataset(load_source("movielens", str(args.shared / "datasets" / "ml-100k")), folders["ml-100k"],
                          progress=False)
        for name in names:
            config, dataset, overrides = MODELS[name]
            if args.quick:
                steps = 12 if dataset == "frappe" else 8
                length = ["train.epochs=1", f"train.max_steps_per_epoch={steps}"]
            else:
                length = [f"train.epochs={args.frappe_epochs if dataset == 'frappe' else args.seq_epochs}"]
            results = {}
            for nproc in processes:
                runs = []
                for seed in seeds:
                    run_dir = tmp / "runs" / f"{name}-{nproc}-seed{seed}"
                    runs.append(train_on(config, [f"data.path={folders[dataset]}", *overrides, *length,
                                                  f"train.seed={seed}"], nproc, run_dir))
                    print(f"{name} on {nproc} processes, seed {seed}: {json.dumps(runs[-1])}", flush=True)
                results[nproc] = mean_over_seeds(runs)
            metric = "auc" if dataset == "frappe" else "ndcg@10"
            base = results[processes[0]][metric]
            scale = 1 if metric == "auc" else max(base, 1e-12)  # AUC: absolute gap; NDCG: relative
            gaps = [abs(results[n][metric] - base) / scale for n in processes[1:]]
            short = "auc" if metric == "auc" else "ndcg10"
            out[f"{name}_{short}_gap"] = round(max(gaps), 5) if gaps else None
            if gaps:
                out[f"{name}_{short}_within_{'0.002' if short == 'auc' else '5pct'}"] = max(gaps) <= (
                    0.002 if short == "auc" else 0.05)
            for nproc, result in results.items():
                for key in (metric, "logloss", "gauc", "hr@10", "examples_per_s_per_process", "examples_per_s_total",
                            "epochs", "best_epoch"):
                    for suffix in ("", "_seeds"):
                        if key + suffix in result:
                            value = result[key + suffix]
                            out[f"{name}_{nproc}p_{key.replace('@', '')}{suffix}"] = (
                                [round(v, 5) for v in value] if suffix else round(value, 5))
        auc_gaps = [value for key, value in out.items() if key.endswith("_auc_gap") and value is not None]
        ndcg_gaps = [value for key, value in out.items() if key.endswith("_ndcg10_gap") and value is not None]
        out["auc_gap_max"] = max(auc_gaps) if auc_gaps else None
        out["ndcg10_gap_max"] = max(ndcg_gaps) if ndcg_gaps else None
        if "ml100k_hstu_ndcg10_within_5pct" in out:
            out["hstu_ndcg_within_5pct"] = out["ml100k_hstu_ndcg10_within_5pct"]
        if not args.no_rank_bytes:
            measured = measure_rank_bytes(folders["frappe"], tmp)
            print(f"column-wise Frappe DLRM tables (d=64) on 2 processes, bytes per rank: {measured}", flush=True)
            out["rank_bytes_measured"] = [rank["total"] for rank in measured]
            out["rank_bytes_weights"] = [rank["weights"] for rank in measured]
            out["rank_bytes_optimizer"] = [rank["optimizer"] for rank in measured]
            out["rank_bytes_planned"] = [rank["planned"] for rank in measured]
            out["rank_bytes_plan_error"] = round(max(abs(rank["total"] - rank["planned"]) / rank["planned"]
                                                     for rank in measured), 4)
    out["load_average"] = round(os.getloadavg()[0], 2)
    out["quick"] = args.quick
    print(json.dumps(out))


if __name__ == "__main__":
    main()
