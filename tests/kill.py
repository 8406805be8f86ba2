"""Runs of the `terarec` command killed with SIGKILL at chosen steps, then resumed (shared by resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(verb: str, *args: str) -> list[str]:
    """``terarec VERB ARGS --no-progress`` as this interpreter runs it."""
    return [sys.executable, "-m", "terarec.cli", verb, *args, "--no-progress"]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def steps_done(run_dir: Path | None) -> int:
    """Rows of the run's steps.csv (one per logged step)."""
    if run_dir is None or not (run_dir / "steps.csv").exists():
        return 0
    return max(0, len((run_dir / "steps.csv").read_text().splitlines()) - 1)


def only_run(parent: Path) -> Path | None:
    runs = [p for p in parent.glob("*") if p.is_dir()] if parent.exists() else []
    return runs[0] if runs else None


def run_killed(verb: str, config: Path, parent: Path, kill_at: list[int]) -> tuple[Path, int]:
    """Start ``terarec VERB CONFIG``, SIGKILL it once ``steps.csv`` reaches each step of ``kill_at``
    (resuming with ``--resume`` in between), then let it finish; returns the run folder and the kills made."""
    kills, process = 0, subprocess.Popen(command(verb, str(config)), env=environment(), cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for target in kill_at:
        deadline = time.monotonic() + 120
        while process.poll() is None and steps_done(only_run(parent)) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is not None:
            break  # finished before this kill point
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        process = subprocess.Popen(command(verb, "--resume", str(only_run(parent))), env=environment(), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return only_run(parent), kills
