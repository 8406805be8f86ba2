"""A streaming run killed with SIGKILL at random moments and resumed ends exactly as the run never stopped:
same per-chunk metrics, weights and deltas, every step logged once, and its deltas still chain."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from terarec.serve.bundle import load_bundle
from terarec.serve.delta import apply_delta
from terarec.train.checkpoint import load_checkpoint
from tests.kill import ROOT, command, environment, only_run, run_killed, steps_done
from tests.stream.conftest import stream_config_file

TIMINGS = ("train_seconds", "examples_per_s")


def _outcome(run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    chunks = json.loads((run_dir / "metrics.json").read_text())["chunks"]
    metrics = [{key: value for key, value in chunk.items() if key not in TIMINGS} for chunk in chunks]
    deltas = [load_file(delta / "ranking.safetensors") for delta in sorted((run_dir / "deltas").iterdir())]
    return metrics, load_checkpoint(run_dir / "checkpoint.pt")["model"], deltas


def _equal(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)


@pytest.mark.parametrize("num_kills", [pytest.param(5, marks=pytest.mark.slow), 2])
def test_sigkill_at_random_points_then_resume_matches_the_uninterrupted_stream(
    num_kills: int, daily_folder: Path, tmp_path: Path
) -> None:
    whole = subprocess.run(command("stream", str(stream_config_file(daily_folder, tmp_path, "whole"))),
                           env=environment(), cwd=ROOT, capture_output=True)
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]
    expected, expected_weights, expected_deltas = _outcome(only_run(tmp_path / "whole"))
    total_steps = steps_done(only_run(tmp_path / "whole"))
    kill_at = sorted(np.random.default_rng(num_kills).choice(np.arange(2, total_steps - 2), size=num_kills,
                                                             replace=False).tolist())

    run_dir, kills = run_killed("stream", stream_config_file(daily_folder, tmp_path, "killed"), tmp_path / "killed",
                                kill_at)

    assert kills >= 1
    metrics, weights, deltas = _outcome(run_dir)
    assert metrics == expected
    assert _equal(weights, expected_weights)
    assert len(deltas) == len(expected_deltas) and all(map(_equal, deltas, expected_deltas))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    steps = [int(line.split(",")[0]) for line in (run_dir / "steps.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, total_steps + 1))  # no step logged twice or lost
    chunk_rows = (run_dir / "chunks.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in chunk_rows] == list(range(1, len(expected) + 1))
    bundle = load_bundle(run_dir / "bundle")  # the killed run's own chain applies, in order
    for delta in sorted((run_dir / "deltas").iterdir()):
        bundle = apply_delta(bundle, delta)
    assert _equal(bundle.ranking.predictor.model.state_dict(), weights)
