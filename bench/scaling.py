"""Scaling law: Wukong, DLRM and DCNv2 at many sizes on synthetic CTR data with high-order interactions.

Generates the data of configs/scaling/data.yaml (2M rows; --quick 200k) into OUT/data,
trains every size of configs/scaling/sweep.yaml (--quick: sweep_quick.yaml) for one pass
with the same data, seed and steps, fits LogLoss = a + b * C^-alpha per family against
dense forward GFLOPs/example C, and writes OUT/sweep/results.json, fit.json and
scaling.png. Run again, it reuses the data and the finished points (resumable).

The last line is one JSON object: ``wukong_points``, ``wukong_flops_span`` (max / min
GFLOPs), ``wukong_monotone`` (test LogLoss non-increasing with compute, within 0.0005),
``wukong_alpha``, ``wukong_r2``, ``gain_per_4x`` (Wukong's fitted L(C_max/4) - L(C_max))
and ``gain_per_4x_relative`` (as a fraction of L(C_max)), the same alpha / r2 for dlrm and
dcnv2, ``bayes_logloss`` (the floor) and ``plot``.

    python bench/scaling.py                  # ~30 min on 2 shared cores
    python bench/scaling.py --quick          # a few minutes
    python bench/scaling.py --out runs/scaling-bench train.threads=2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "scaling"


def prepare_data(folder: Path, rows: int) -> None:
    """Write the synthetic-ctr data set once; reuse it while its generator config is unchanged."""
    import yaml

    from terarec.config import read_yaml_mapping
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic_ctr import load_synthetic_ctr
    from terarec.data.splits import SplitConfig

    wanted = {**read_yaml_mapping(CONFIGS / "data.yaml", "data config"), "num_rows": rows}
    record = folder.with_name(folder.name + "-config.yaml")
    if (folder / "dataset.yaml").exists() and record.exists() and yaml.safe_load(record.read_text()) == wanted:
        print(f"data: reusing {folder}", flush=True)
        return
    started = time.perf_counter()
    split = SplitConfig(method="random", valid_fraction=0.05, test_fraction=0.1, seed=0)
    meta = write_dataset(load_synthetic_ctr("-", **wanted), folder, split, overwrite=True, progress=False)
    record.write_text(yaml.safe_dump(wanted, sort_keys=False))
    print(f"data: {meta.num_rows:,} rows {meta.split['counts']} in {time.perf_counter() - started:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k rows and the smaller sweep_quick.yaml")
    parser.add_argument("--out", type=Path, default=None, help="bench folder (default runs/scaling-bench[-quick])")
    parser.add_argument("--rows", type=int, default=None, help="rows of synthetic data (default 2M; quick 200k)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every point, e.g. train.threads=2")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

    from terarec.scaling.sweep import load_sweep, run_sweep, summarize

    started = time.perf_counter()
    out = args.out or ROOT / "runs" / ("scaling-bench-quick" if args.quick else "scaling-bench")
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    prepare_data(data, rows)
    spec_file = CONFIGS / ("sweep_quick.yaml" if args.quick else "sweep.yaml")
    spec = load_sweep(spec_file, [f"data.path={data}", "train.threads=1", *args.overrides])
    run_sweep(spec, out / "sweep", log=lambda line: print(line, flush=True))
    summary = summarize(out / "sweep")

    result: dict = {"rows": rows, "bayes_logloss": summary["floor"]}
    for name, family in summary["families"].items():
        fit = family["fit"] or {}
        print(f"{name}: {family['points']} points over {family['gflops_span']:.0f}x GFLOPs, best test LogLoss "
              f"{family['logloss_best']:.5f}, monotone {family['monotone']}, alpha {fit.get('alpha', float('nan')):.3f}, "
              f"R^2 {fit.get('r2', float('nan')):.3f}, gain per 4x {fit.get('gain_per_4x', float('nan')):.5f}", flush=True)
        result[f"{name}_points"] = family["points"]
        result[f"{name}_flops_span"] = round(family["gflops_span"], 1)
        result[f"{name}_monotone"] = family["monotone"]
        result[f"{name}_best_logloss"] = round(family["logloss_best"], 5)
        result[f"{name}_alpha"] = None if not fit else round(fit["alpha"], 4)
        result[f"{name}_r2"] = None if not fit else round(fit["r2"], 4)
        result[f"{name}_a"] = None if not fit else round(fit["a"], 5)
        result[f"{name}_gain_per_4x"] = None if not fit else round(fit["gain_per_4x"], 6)
    wukong = summary["families"].get("wukong", {}).get("fit") or {}
    result["gain_per_4x"] = round(wukong["gain_per_4x"], 6) if wukong else None
    result["gain_per_4x_relative"] = round(wukong["relative_gain_per_4x"], 6) if wukong else None
    if summary["floor"] is not None:
        result["bayes_logloss"] = round(summary["floor"], 5)
    result["plot"] = summary.get("plot")
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
