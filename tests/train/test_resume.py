"""A run killed with SIGKILL at random steps and resumed ends exactly as the run never stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.train.checkpoint import load_checkpoint
from tests.kill import ROOT, command, environment, only_run, run_killed, steps_done
from tests.train.test_train import _ctr_events, _sequence_events


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("resume")
    ctr = SourceData("xor", "test", "events", [_ctr_events(num_users=300, events_per_user=10)],
                     sparse=["user_id", "item_id", "device"], labels=["click"])
    seq = SourceData("groups", "test", "events", [_sequence_events(num_users=600)], sparse=["item_id"],
                     labels=["click"])
    write_dataset(ctr, base / "ctr", progress=False)
    write_dataset(seq, base / "seq", progress=False)
    return {"ctr": base / "ctr", "seq": base / "seq"}


CONFIGS = {
    # Fused row-wise Adagrad tables, warm-up and plateau decay: every piece of optimizer state.
    "ctr": {"task": "ctr", "data": {"sparse": ["item_id", "device"], "labels": ["click"], "batch_size": 16,
                                    "eval_batch_size": 512},
            "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [8], "top_mlp": [16]},
            "embedding": {"optimizer": "rowwise_adagrad"},
            "train": {"epochs": 3, "learning_rate": 0.01, "warmup_steps": 20, "plateau_decay": 0.5, "patience": 0}},
    # Dropout and sampled negatives draw from the global RNG every step.
    "seq": {"task": "sequential", "data": {"batch_size": 16, "eval_batch_size": 256, "max_length": 10},
            "model": {"name": "sasrec", "embedding_dim": 16, "num_layers": 1, "num_heads": 1, "max_length": 10,
                      "dropout": 0.2, "num_negatives": 16},
            "eval": {"ks": [5, 10]},
            "train": {"epochs": 3, "learning_rate": 0.005, "patience": 0}},
}


def _config_file(kind: str, data: Path, tmp: Path, name: str) -> Path:
    config = json.loads(json.dumps(CONFIGS[kind]))
    config["name"] = name
    config["run_dir"] = str(tmp / name)
    config["data"]["path"] = str(data)
    config["train"].update(seed=3, threads=1, checkpoint_every=7, log_every=1)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _outcome(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = {"best_epoch": metrics["best_epoch"], "test": metrics["test"],
               "valid": [epoch["valid"] for epoch in metrics["epochs"]],
               "loss": [epoch["train_loss"] for epoch in metrics["epochs"]]}
    return summary, load_checkpoint(run_dir / "checkpoint.pt")["model"]


@pytest.mark.parametrize("kind", ["ctr", "seq"])
def test_sigkill_at_random_steps_then_resume_matches_the_uninterrupted_run(
    kind: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    whole = subprocess.run(command("train", str(_config_file(kind, datasets[kind], tmp_path, "whole"))),
                           env=environment(), cwd=ROOT, capture_output=True)
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]
    expected, expected_weights = _outcome(only_run(tmp_path / "whole"))
    total_steps = steps_done(only_run(tmp_path / "whole"))
    kill_at = sorted(np.random.default_rng(11 if kind == "ctr" else 12).choice(
        np.arange(3, total_steps - 3), size=3, replace=False).tolist())

    run_dir, kills = run_killed("train", _config_file(kind, datasets[kind], tmp_path, "killed"), tmp_path / "killed",
                                kill_at)

    assert kills >= 1
    resumed, resumed_weights = _outcome(run_dir)
    assert resumed == expected
    assert resumed_weights.keys() == expected_weights.keys()
    for key, value in expected_weights.items():
        assert torch.equal(resumed_weights[key], value), key
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    steps = [int(line.split(",")[0]) for line in (run_dir / "steps.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, total_steps + 1))  # no step logged twice or lost
