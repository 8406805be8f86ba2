"""Embedding sizes: uniform d (the tuned configs) against searched sizes and the frequency rule, test AUC and table bytes.

For each data set, DLRM at its tuned uniform width (``configs/frappe/dlrm.yaml``, d 32, on the
Frappe split; ``configs/ml100k/dlrm.yaml``, d 16, on ML-100K as CTR, like = rating >= 4, user and
movie features, split by time) is compared with:

* ``searched``: ``terarec search-embeddings`` (successive halving, NIS's reward, budget half the
  uniform tables' bytes, seed 0, on train / valid), then trained in full;
* ``rule``: Ginart's frequency rule, 4 bands, alpha 0.5, on every feature of >= 100 rows;
* ``half``: uniform d / 2, the model at that width too (the trivial way to halve the bytes; the
  search's ``model-d<d/2>`` candidate: a search that picks it reuses these runs, as one that picks
  ``rule-a0.5`` reuses the rule's).

Each trains with the config's early stopping on validation AUC, seeds 0..N-1. Prints a line
per run and, last, one JSON object: per data set and sizing ``<ds>_<sizing>_auc`` (mean test AUC),
``_auc_spread`` (max - min), ``_aucs``, ``_bytes`` (table bytes: tables, projections, band maps),
``_bytes_share`` (of uniform), and ``<ds>_pairs``: [sizing, bytes share, mean AUC - uniform's]
for every sizing, and ``<ds>_target_met``: a sizing with <= 50% of the bytes within 0.001 of
uniform's mean AUC.

    python bench/embedding_search.py --jobs 2                 # both data sets, seeds 0 1 2
    python bench/embedding_search.py --jobs 2 --cap frappe=4 --half ml100k --search frappe=2:2   # BENCHMARKS.md
    python bench/embedding_search.py --datasets frappe --search frappe=0:2:4 \
        --only frappe=model-d16+model-d8+uniform-d8+rule-a0.5    # converged Frappe, model width searched
    python bench/embedding_search.py --datasets frappe --seeds 1 --quick
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
CONFIGS = {"frappe": ROOT / "configs" / "frappe" / "dlrm.yaml", "ml100k": ROOT / "configs" / "ml100k" / "dlrm.yaml"}
RULE = ["embedding.bands.num_bands=4", "embedding.bands.alpha=0.5"]
RULE_CANDIDATE = "rule-a0.5"  # the search's name for the same sizing


def search_one(config_path: str, overrides: list[str], out: str, only: list[str] | None, count: int, rungs: int,
               min_epochs: int = 1) -> tuple[str, list[str]]:
    """Run the search; returns the chosen candidate's name and its sizing as overrides."""
    import torch

    from terarec.scaling.embedding_search import search_embeddings
    from terarec.train.experiment import load_config

    torch.set_num_threads(1)
    config = load_config(config_path, overrides)
    result, _ = search_embeddings(config, out, budget_share=0.5, count=count, rungs=rungs, min_epochs=min_epochs,
                                  progress=False, only=only)
    chosen = result.chosen
    print(f"search {out}: chose {chosen.name} ({chosen.bytes:,} bytes of {result.uniform_bytes:,}), valid "
          f"{chosen.metric:.5f}", flush=True)
    return chosen.name, chosen.overrides(4)


def train_one(config_path: str, overrides: list[str]) -> dict:
    """Train one run; its test metrics and table bytes."""
    from terarec.embedding.sized import table_bytes
    from terarec.train.experiment import load_config
    from terarec.train.loop import load_task, train

    result = train(load_config(config_path, overrides), progress=False)
    return {"test": result.test, "best_epoch": result.best_epoch, "bytes": table_bytes(load_task(result.run_dir).model)}


def run_one(kind: str, *args) -> object:
    return search_one(*args) if kind == "search" else train_one(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="frappe,ml100k")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (worker processes of one thread each)")
    parser.add_argument("--quick", action="store_true", help="2 epochs per run, a smaller search, one seed")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=None, help="keep the searches' chosen.yaml and pareto.png here")
    parser.add_argument("--cap", default="", help="epoch caps, e.g. frappe=4 (every sizing alike; default: the config's)")
    parser.add_argument("--search", default="", help="random draws, rungs and (optionally) first-rung epochs per "
                        "data set, e.g. frappe=0:3:3 (default 6 draws, 3 rungs, 1 epoch)")
    parser.add_argument("--only", default="", help="candidates the search trains, per data set, e.g. "
                        "frappe=model-d16+model-d8 (default: all)")
    parser.add_argument("--half", default="frappe,ml100k", help="data sets that also get the uniform d / 2 runs")
    args = parser.parse_args()
    caps = dict(item.split("=") for item in args.cap.split(",") if item)
    searches = {name: tuple(int(v) for v in spec.split(":")) for name, spec in
                (item.split("=") for item in args.search.split(",") if item)}
    only = {name: spec.split("+") for name, spec in (item.split("=") for item in args.only.split(",") if item)}
    seeds = 1 if args.quick else args.seeds
    names = args.datasets.split(",")
    out: dict = {"seeds": list(range(seeds))}
    with tempfile.TemporaryDirectory(prefix="terarec-embsearch-") as tmp:
        keep = args.out or Path(tmp) / "search"
        base = {}
        for name in names:
            data = prepare({"ml100k": "ml100k-ctr"}.get(name, name), args.shared, Path(tmp) / name)
            epochs = "2" if args.quick else caps.get(name)
            base[name] = [f"data.path={data}", f"run_dir={Path(tmp) / 'runs'}", "train.threads=1",
                          *([f"train.epochs={epochs}"] if epochs else [])]
            out[f"{name}_epoch_cap"] = int(epochs) if epochs else None
        sizings = {"uniform": [], "half": None, "rule": RULE}
        results: dict[tuple[str, str], list[dict]] = {}
        searched: dict[str, list[str]] = {}

        def report(key: tuple, result) -> None:
            if key[0] == "search":
                searched[key[1]] = result
                return
            name, sizing, seed = key
            results.setdefault((name, sizing), []).append(result)
            print(f"{name} {sizing} seed {seed}: test AUC {result['test']['auc']:.5f}, {result['bytes']:,} table "
                  f"bytes, best epoch {result['best_epoch']}", flush=True)

        # The searches first: the slow data set's search beside the other's runs.
        jobs = [(("search", name), ("search", str(CONFIGS[name]), base[name], str(keep / name), only.get(name),
                                     *searches.get(name, (2, 2) if args.quick else (6, 3))))
                for name in names]
        out["search_draws_rungs"] = {name: searches.get(name, (2, 2) if args.quick else (6, 3)) for name in names}
        from terarec.train.experiment import load_config

        same_as: dict[str, dict[str, str]] = {}  # per data set: search candidate -> the sizing with its tables
        for name in names:
            d = int(load_config(CONFIGS[name], base[name]).model["embedding_dim"])
            sizings["half"] = [f"model.embedding_dim={d // 2}"]
            same_as[name] = {RULE_CANDIDATE: "rule", **({f"model-d{d // 2}": "half"} if name in args.half.split(",")
                                                         else {})}
            for sizing, extra in sizings.items():
                if sizing == "half" and name not in args.half.split(","):
                    continue
                jobs += [((name, sizing, seed), ("train", str(CONFIGS[name]), [*base[name], f"train.seed={seed}",
                                                                                *extra]))
                         for seed in range(seeds)]
        run_jobs(jobs, run_one, report, args.jobs)
        # A search that chose the rule's or the half model's own sizing (same tables, same seeds) reuses its runs.
        for name in names:
            if searched[name][0] in same_as[name]:
                results[(name, "searched")] = results[(name, same_as[name][searched[name][0]])]
        jobs = [((name, "searched", seed), ("train", str(CONFIGS[name]), [*base[name], f"train.seed={seed}",
                                                                           *searched[name][1]]))
                for name in names for seed in range(seeds) if searched[name][0] not in same_as[name]]
        run_jobs(jobs, run_one, report, args.jobs)
    for name in names:
        uniform = results[(name, "uniform")]
        uniform_auc, uniform_bytes = float(np.mean([r["test"]["auc"] for r in uniform])), uniform[0]["bytes"]
        pairs = []
        for sizing in ("uniform", "half", "rule", "searched"):
            runs = results.get((name, sizing))
            if not runs:
                continue
            aucs = [r["test"]["auc"] for r in runs]
            share = runs[0]["bytes"] / uniform_bytes
            out[f"{name}_{sizing}_auc"] = round(float(np.mean(aucs)), 5)
            out[f"{name}_{sizing}_auc_spread"] = round(float(np.max(aucs) - np.min(aucs)), 5)
            out[f"{name}_{sizing}_aucs"] = [round(a, 5) for a in aucs]
            out[f"{name}_{sizing}_bytes"] = runs[0]["bytes"]
            out[f"{name}_{sizing}_bytes_share"] = round(share, 3)
            pairs.append([sizing, round(share, 3), round(float(np.mean(aucs)) - uniform_auc, 5)])
        out[f"{name}_searched"] = searched[name][0]
        out[f"{name}_searched_sizing"] = searched[name][1]
        out[f"{name}_pairs"] = pairs
        out[f"{name}_target_met"] = any(share <= 0.5 and delta >= -0.001 for sizing, share, delta in pairs
                                        if sizing in ("searched", "rule"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
