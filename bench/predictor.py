"""Predictor scoring speed with fp32 tables against row-wise int8 tables, on the Frappe split.

Trains ``configs/frappe/<model>.yaml`` briefly (``--steps`` steps of one epoch: the speed and
the int8 error do not need a converged model), then scores the test split with
``Predictor.from_run(RUN)`` twice, fp32 and ``tables="int8"``, in batches of ``--batch`` rows,
alternating the two ``--repeats`` times in one process. Reports rows/s of each (best of the
repeats), their ratio, the largest score difference and both AUCs.

    python bench/predictor.py                 # DLRM, 300 training steps, 5 repeats
    python bench/predictor.py --quick         # 50 steps, 2 repeats
    python bench/predictor.py --model wukong
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import terarec  # noqa: F401  (first: its OpenMP default must be set before torch loads)
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT.parent / "shared" / "benchmarks" / "frappe-ctr"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 training steps, 2 repeats")
    parser.add_argument("--model", default="dlrm", help="a config of configs/frappe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 50, 2
    from terarec.eval.binary import auc
    from terarec.serve import Predictor
    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    with tempfile.TemporaryDirectory(prefix="terarec-predictor-") as tmp:
        data = Path(tmp) / "frappe"
        subprocess.run([sys.executable, "-m", "terarec.cli", "data", "prepare", "frappe-splits", str(SPLITS),
                        "--out", str(data), "--no-progress"], check=True, capture_output=True)
        config = load_config(ROOT / "configs" / "frappe" / f"{args.model}.yaml", [
            f"data.path={data}", f"run_dir={tmp}/runs", "train.epochs=1", f"train.max_steps_per_epoch={args.steps}",
            f"train.threads={args.threads}"])
        run = train(config, progress=False)
        table = pa.concat_tables(pq.read_table(part) for part in sorted(data.glob("part-*.parquet")))
        table = table.filter(pc.equal(table.column("split"), 2))
        labels = table.column("label").to_numpy()
        predictors = {kind: Predictor.from_run(run.run_dir, threads=args.threads, tables=kind)
                      for kind in ("fp32", "int8")}
        label = predictors["fp32"].outputs[0]
        seconds: dict[str, list[float]] = {kind: [] for kind in predictors}
        scores: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for kind, predictor in predictors.items():
                started = time.perf_counter()
                parts = [predictor.score(table.slice(start, args.batch))[label]
                         for start in range(0, table.num_rows, args.batch)]
                seconds[kind].append(time.perf_counter() - started)
                scores[kind] = np.concatenate(parts)
    rows_per_s = {kind: table.num_rows / min(times) for kind, times in seconds.items()}
    out = {
        "model": args.model, "rows": table.num_rows, "batch": args.batch, "threads": args.threads,
        "training_steps": args.steps, "repeats": args.repeats,
        "fp32_rows_per_s": round(rows_per_s["fp32"]), "int8_rows_per_s": round(rows_per_s["int8"]),
        "int8_over_fp32_speed": round(rows_per_s["int8"] / rows_per_s["fp32"], 3),
        "max_abs_score_diff": float(np.abs(scores["int8"] - scores["fp32"]).max()),
        "fp32_auc": round(auc(labels, scores["fp32"]), 5), "int8_auc": round(auc(labels, scores["int8"]), 5),
        "quantized_tables": predictors["int8"].quantized_tables,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
