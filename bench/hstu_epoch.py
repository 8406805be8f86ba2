"""CPU and wall seconds of one HSTU training epoch on Beauty: this checkout against an earlier commit.

Issue 17's figure of record: one training epoch of ``configs/beauty/hstu.yaml`` (one thread;
validation excluded) on the code before issue 17 (``--ref``, default ``b14e25d^1``: dense
attention, plain shuffle) and on this checkout, in interleaved rounds. Each epoch runs in a
child process that imports ``terarec`` from the code being measured (the reference is written
to a temporary folder with ``git archive``), wraps the trainer's ``_train_epoch`` in
``time.process_time`` / ``time.perf_counter`` and stops the run after that epoch, so no
validation or test pass is paid for. On a shared machine the process CPU seconds are the
figure to compare (wall time also counts the wait for a core).

    python bench/hstu_epoch.py                               # 2 rounds of both codes
    python bench/hstu_epoch.py --quick                       # 30 steps an epoch, 1 round
    python bench/hstu_epoch.py --current data.bucket_window=0   # overrides of this checkout's runs only

Overrides after ``--current`` apply to this checkout's runs only (the reference runs the shipped
config). The data is Beauty.txt prepared into ``--data`` (default: a temporary folder) unless
that folder exists already. Last line: one JSON object with the median CPU and wall seconds
of each code, ``cpu_speedup`` (reference / current) and the overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "datasets" / "amazon-beauty" / "Beauty.txt"
CONFIG = "configs/beauty/hstu.yaml"


class _EpochDone(Exception):
    """Raised after the timed epoch, to end the run before its validation."""


def child(code_root: str, data_path: str, overrides: list[str]) -> None:
    """Train one epoch with the ``terarec`` of ``code_root``; print its CPU and wall seconds as JSON."""
    sys.path.insert(0, code_root)
    import time

    import terarec.cli  # noqa: F401  (the process set-up the `terarec` command gets: threads, allocator)

    from terarec.train import loop
    from terarec.train.experiment import load_config

    assert Path(loop.__file__).resolve().is_relative_to(Path(code_root).resolve()), loop.__file__
    timed = loop.Trainer._train_epoch
    seconds = {}

    def train_epoch(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        timed(self)
        seconds.update(cpu=time.process_time() - cpu, wall=time.perf_counter() - wall, steps=self.global_step)
        raise _EpochDone

    loop.Trainer._train_epoch = train_epoch
    config = load_config(Path(code_root) / CONFIG,
                         [f"data.path={data_path}", "train.epochs=1", "train.threads=1", *overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            loop.train(config, progress=False, run_dir=Path(run_dir))
        except _EpochDone:
            pass
    print(json.dumps(seconds))


def one_epoch(code_root: Path, data_path: Path, overrides: list[str]) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code_root)}
    command = [sys.executable, __file__, "--child", str(code_root), str(data_path), *overrides]
    done = subprocess.run(command, env=env, cwd=code_root, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{code_root}: epoch failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="b14e25d^1", help="the earlier commit (git rev)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of both codes")
    parser.add_argument("--data", type=Path, default=None, help="prepared Beauty folder (made if missing)")
    parser.add_argument("--quick", action="store_true", help="30 steps an epoch, one round")
    parser.add_argument("--current", nargs=argparse.REMAINDER, default=[],
                        help="overrides for this checkout's runs, e.g. data.bucket_window=0")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    common = ["train.max_steps_per_epoch=30"] if args.quick else []
    with tempfile.TemporaryDirectory() as scratch:
        data_path = args.data or Path(scratch) / "beauty"
        if not data_path.exists():
            subprocess.run([sys.executable, "-m", "terarec.cli", "data", "prepare", "amazon", str(BEAUTY),
                            "--out", str(data_path)], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        reference = Path(scratch) / "reference"
        reference.mkdir()
        archive = subprocess.run(["git", "archive", args.ref], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(reference)], input=archive, check=True)
        runs: dict[str, list[dict[str, float]]] = {"reference": [], "current": []}
        for round_index in range(rounds):
            for name, code_root, overrides in (("reference", reference, common),
                                               ("current", ROOT, common + args.current)):
                seconds = one_epoch(code_root, data_path, overrides)
                runs[name].append(seconds)
                print(f"round {round_index + 1} {name}: {seconds['cpu']:.2f} s CPU, {seconds['wall']:.2f} s wall, "
                      f"{seconds['steps']} steps, load {os.getloadavg()[0]:.1f}", flush=True)
    result = {"ref": args.ref, "current_overrides": args.current, "rounds": rounds, "quick": args.quick}
    for name, seconds in runs.items():
        result[f"{name}_cpu_s"] = round(statistics.median(s["cpu"] for s in seconds), 3)
        result[f"{name}_wall_s"] = round(statistics.median(s["wall"] for s in seconds), 3)
    result["cpu_speedup"] = round(result["reference_cpu_s"] / result["current_cpu_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
