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
from tests.train.test_train import _ctr_config, ctr_data, seq_data  # noqa: F401 (fixtures)


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def small_run(ctr_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
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


def test_eval_of_a_sequence_run_on_train_is_a_clear_error(seq_data: Path, tmp_path: Path) -> None:  # noqa: F811
    config = load_config(None, ["task=sequential", f"data.path={seq_data}", f"run_dir={tmp_path}",
                                "model={name: bag_of_items, embedding_dim: 8}", "train.epochs=1", "train.threads=1",
                                "eval.ks=[5]"])
    run = train(config, progress=False, run_dir=tmp_path / "run")
    result = CliRunner().invoke(app, ["eval", str(run.run_dir), "--split", "train"])
    assert result.exit_code == 2 and "valid or test" in _said(result) and "Traceback" not in result.output


def test_a_failed_run_is_marked_failed_with_its_reason(ctr_data: Path, tmp_path: Path) -> None:  # noqa: F811
    config = _ctr_config(ctr_data, tmp_path, "train.monitor=valid.no_such_metric")
    with pytest.raises(ValueError, match="no_such_metric"):
        train(config, progress=False, run_dir=tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "no_such_metric" in status["reason"]
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()  # the details are kept for the log
