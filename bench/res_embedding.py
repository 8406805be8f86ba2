"""Res-embedding against plain item tables: DIN on ML-100K as CTR (test AUC), SASRec / HSTU on Beauty (test NDCG@10).

Each (model, variant, seed) trains from its config with early stopping on the validation
metric: ``plain`` is the config as it is; ``res`` adds ``embedding.residual`` on the item table
(``item_id``; DIN's target and history share it): e_i = C[cluster_i] + r_i, clusters from
co-occurrence in the training histories, lambda ||r||^2 (Zhou et al. 2019). Prints a line per
run and, last, one JSON object: ``<model>_<variant>_<metric>`` (mean over seeds), ``_spread``
(max - min), the per-seed values, and ``<model>_res_at_least_plain``.

    python bench/res_embedding.py --jobs 2                       # DIN on ML-100K, seeds 0 1 2
    python bench/res_embedding.py --models sasrec,hstu --cap 10  # Beauty, epochs capped
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _data import prepare
from _runs import run_jobs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = {  # model -> (data set, config, test metric)
    "din": ("ml100k-ctr", ROOT / "configs" / "ml100k" / "din.yaml", "auc"),
    "sasrec": ("beauty", ROOT / "configs" / "beauty" / "sasrec.yaml", "ndcg@10"),
    "hstu": ("beauty", ROOT / "configs" / "beauty" / "hstu.yaml", "ndcg@10"),
}


def run_one(config_path: str, overrides: list[str], metric: str) -> dict:
    """Train one run; its test metric and best epoch."""
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    result = train(load_config(config_path, overrides), progress=False)
    return {"metric": result.test[metric], "best_epoch": result.best_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="din", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (worker processes of one thread each)")
    parser.add_argument("--cap", type=int, default=0, help="epoch cap for every run (0: the configs')")
    parser.add_argument("--clusters", type=int, default=32, help="embedding.residual.num_clusters")
    parser.add_argument("--l2", type=float, default=1e-3, help="embedding.residual.l2")
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
    names = args.models.split(",")
    residual = ["embedding.residual.features=[item_id]", f"embedding.residual.num_clusters={args.clusters}",
                f"embedding.residual.l2={args.l2}"]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out: dict = {"seeds": seeds, "clusters": args.clusters, "l2": args.l2, "cap": args.cap}
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="terarec-res-") as tmp:
        folders = {dataset: prepare(dataset, args.shared, Path(tmp) / dataset)
                   for dataset in dict.fromkeys(MODELS[name][0] for name in names)}
        jobs = []
        for name in names:
            dataset, config, metric = MODELS[name]
            for variant, extra in (("plain", []), ("res", residual)):
                for seed in seeds:
                    overrides = [f"data.path={folders[dataset]}", f"run_dir={Path(tmp) / 'runs'}", "train.threads=1",
                                 f"train.seed={seed}", *([f"train.epochs={args.cap}"] if args.cap else []), *extra]
                    jobs.append(((name, variant, seed), (str(config), overrides, metric)))

        def report(key: tuple[str, str, int], result: dict) -> None:
            name, variant, seed = key
            results.setdefault((name, variant), []).append(result["metric"])
            print(f"{name} {variant} seed {seed}: test {MODELS[name][2]} {result['metric']:.5f}, best epoch "
                  f"{result['best_epoch']}", flush=True)

        run_jobs(jobs, run_one, report, args.jobs)
    for name in names:
        metric = MODELS[name][2].replace("@", "")
        for variant in ("plain", "res"):
            values = results[(name, variant)]
            out[f"{name}_{variant}_{metric}"] = round(float(np.mean(values)), 5)
            out[f"{name}_{variant}_{metric}_spread"] = round(float(np.max(values) - np.min(values)), 5)
            out[f"{name}_{variant}_{metric}s"] = [round(v, 5) for v in values]
        out[f"{name}_res_at_least_plain"] = out[f"{name}_res_{metric}"] >= out[f"{name}_plain_{metric}"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
