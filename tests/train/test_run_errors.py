"""A run or checkpoint that cannot be used says which file and what is wrong (issue 13, items 7-9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from terarec.cli import app
from terarec.train.checkpoint import load_checkpoint, save_checkpoint
from terarec.train.experiment import load_config
from terarec.train.loop import load_task, train
from tests.train.test_train import _ctr_config


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def small_run(ctr_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("errors")
    return train(_ctr_config(ctr_data, tmp, "train.epochs=1"), progress=False, run_dir=tmp / "run").run_dir


def _broken_copy(run_dir: Path, tmp_path: Path, change) -> Path:
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    change(payload)
    broken = tmp_path / "broken"
    broken.mkdir()
    save_checkpoint(broken / "checkpoint.pt", payload)
    return broken


def test_checkpoint_without_model_state_names_the_file_and_the_part(small_run: Path, tmp_path: Path) -> None:
    broken = _broken_copy(small_run, tmp_path, lambda payload: payload.pop("model"))
    with pytest.raises(ValueError, match=r"checkpoint.pt: the checkpoint has no model"):
        load_task(broken)
    result = CliRunner().invoke(app, ["eval", str(broken)])
    assert result.exit_code == 2 and "has no model" in _said(result) and "Traceback" not in result.output


def test_checkpoint_with_wrong_shapes_names_the_file(small_run: Path, tmp_path: Path) -> None:
    def shrink(payload: dict) -> None:
        name = next(key for key, value in payload["model"].items() if value.ndim == 2)
        payload["model"][name] = torch.zeros(1, 1)

    broken = _broken_copy(small_run, tmp_path, shrink)
    with pytest.raises(ValueError, match=r"checkpoint.pt: the saved model weights do not fit the model"):
        load_task(broken)


def test_a_foreign_file_is_refused_naming_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "checkpoint.pt", {"weights": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"checkpoint.pt: expected a terarec.checkpoint.v2 file"):
        load_task(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in _said(result)


def test_eval_of_a_sequence_run_on_train_is_a_clear_error(seq_data: Path, tmp_path: Path) -> None:
    config = load_config(None, ["task=sequential", f"data.path={seq_data}", f"run_dir={tmp_path}",
                                "model={name: bag_of_items, embedding_dim: 8}", "train.epochs=1", "train.threads=1",
                                "eval.ks=[5]"])
    run = train(config, progress=False, run_dir=tmp_path / "run")
    result = CliRunner().invoke(app, ["eval", str(run.run_dir), "--split", "train"])
    assert result.exit_code == 2 and "valid or test" in _said(result) and "Traceback" not in result.output


def test_a_failed_run_is_marked_failed_with_its_reason(ctr_data: Path, tmp_path: Path) -> None:
    config = _ctr_config(ctr_data, tmp_path, "train.monitor=valid.no_such_metric")
    with pytest.raises(ValueError, match="no_such_metric"):
        train(config, progress=False, run_dir=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "no_such_metric" in status["reason"]
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()  # the details are kept for the log


def _events_with_new_users(folder: Path, old_users_in_test: bool) -> Path:
    """50 users with a history (last event valid, or valid then test); 20 users whose only events
    are in test (new after the cut-off), written with that split as given."""
    import numpy as np
    import pyarrow as pa

    from terarec.data.prepare import write_dataset
    from terarec.data.sources.base import SourceData

    rng = np.random.default_rng(0)
    users, items, times, splits = [], [], [], []
    for user in range(50):
        codes = [0] * 8 + [1] + ([2] if old_users_in_test else [0])
        for t, code in enumerate(codes):
            users.append(user), items.append(int(rng.integers(0, 30))), times.append(t), splits.append(code)
    for user in range(100, 120):
        for t in range(3):
            users.append(user), items.append(int(rng.integers(0, 30))), times.append(100 + t), splits.append(2)
    table = pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                      "timestamp": pa.array(times, pa.int64()), "split": pa.array(splits, pa.int8())})
    write_dataset(SourceData("new-users", "test", "events", [table], has_split=True), folder, progress=False)
    return folder


def _sasrec(folder: Path, tmp_path: Path):
    return load_config(None, ["task=sequential", f"data.path={folder}", f"run_dir={tmp_path}",
                              "model={name: sasrec, embedding_dim: 8, num_layers: 1, max_length: 10}",
                              "train.epochs=1", "train.threads=1", "eval.ks=[5]"])


def test_users_first_seen_in_test_are_counted_and_left_out(tmp_path: Path) -> None:
    folder = _events_with_new_users(tmp_path / "data", old_users_in_test=True)
    run = train(_sasrec(folder, tmp_path), progress=False, run_dir=tmp_path / "run")
    assert run.test["users_without_history"] == 20
    assert run.test["count"] == 50  # every user with a history, and only those, is ranked


def test_a_split_with_no_user_to_rank_fails_before_training(tmp_path: Path) -> None:
    folder = _events_with_new_users(tmp_path / "data", old_users_in_test=False)
    config = tmp_path / "sasrec.yaml"
    config.write_text(f"task: sequential\ndata: {{path: {folder}}}\nrun_dir: {tmp_path}\n"
                      "model: {name: sasrec, embedding_dim: 8, num_layers: 1, max_length: 10}\n"
                      "train: {epochs: 1}\neval: {ks: [5]}\n")
    result = CliRunner().invoke(app, ["train", "--no-progress", "--threads", "1", str(config)])
    said = _said(result)
    assert result.exit_code == 2 and "no user with an event before their test target" in said
    assert "Traceback" not in result.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("experiment-")]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "20 users have only test events" in status["reason"]
    assert not (run_dir / "state.pt").exists()  # it stopped before training
