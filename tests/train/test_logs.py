"""Run logs: CSV rows, TensorBoard events, curves.png, one plain line per epoch, resume appends."""

from __future__ import annotations

import csv
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import pytest

from terarec.train.logs import RunLogs


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard would show for ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def log_epochs(run_dir: Path, epochs: range, steps_per_epoch: int = 4, resume: bool = False,
               progress: bool | None = None) -> None:
    with RunLogs(run_dir, progress=progress, resume=resume) as logs:
        for epoch in epochs:
            for batch in logs.bar(range(steps_per_epoch), total=steps_per_epoch, desc=f"epoch {epoch}"):
                step = (epoch - 1) * steps_per_epoch + batch + 1
                logs.step(step, epoch, learning_rate=0.01, train_loss=1.0 / step)
            logs.epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "steps": steps_per_epoch, "train_seconds": 0.5,
                        "valid": {"auc": 0.5 + epoch / 100, "logloss": 0.7 - epoch / 100, "count": 100}}, "auc")


@contextmanager
def console_logging():
    """The CLI's console logging (terarec INFO to stderr); under capsys, stderr is not a terminal."""
    handler = logging.StreamHandler()  # binds the sys.stderr of this moment: capsys's inside a test
    logging.getLogger("terarec").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("terarec").removeHandler(handler)


def test_writes_csv_tensorboard_and_curves(tmp_path: Path) -> None:
    log_epochs(tmp_path, range(1, 3))
    steps = read_csv(tmp_path / "steps.csv")
    assert [int(row["step"]) for row in steps] == list(range(1, 9))
    assert float(steps[3]["train_loss"]) == pytest.approx(0.25) and steps[3]["epoch"] == "1"
    epochs = read_csv(tmp_path / "epochs.csv")
    assert [row["epoch"] for row in epochs] == ["1", "2"]
    assert float(epochs[1]["valid_auc"]) == pytest.approx(0.52) and "valid_logloss" in epochs[0]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))
    assert scalars["valid/auc"] == [(4, pytest.approx(0.51)), (8, pytest.approx(0.52))]  # at each epoch's last step
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "epoch 2: train loss 0.5000, valid auc 0.5200" in (tmp_path / "train.log").read_text()


def test_one_plain_line_per_epoch_off_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with console_logging():
        log_epochs(tmp_path, range(1, 4))
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert [line for line in lines if line.startswith("epoch")] == [
        f"epoch {n}: train loss {1 / n:.4f}, valid auc {0.5 + n / 100:.4f} (0.5s)" for n in range(1, 4)]
    assert "\r" not in captured.err and "it/s" not in captured.err  # no bar frames


def test_bars_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with console_logging():
        log_epochs(tmp_path, range(1, 2), progress=True)
    captured = capsys.readouterr()
    assert "epoch 1" in captured.err and "\r" in captured.err
    assert sum(line.startswith("epoch 1: train loss") for line in captured.err.replace("\r", "\n").splitlines()) == 1


def test_resume_appends_and_replaces_what_is_logged_again(tmp_path: Path) -> None:
    log_epochs(tmp_path, range(1, 3))
    # Killed during epoch 3 after step 10, then resumed from the checkpoint of epoch 2 (step 8).
    with RunLogs(tmp_path, progress=False, resume=True) as logs:
        logs.step(9, 3, 0.01, 0.9)
        logs.step(10, 3, 0.01, 0.9)
    log_epochs(tmp_path, range(3, 4), resume=True)
    assert [int(row["step"]) for row in read_csv(tmp_path / "steps.csv")] == list(range(1, 13))
    assert [row["epoch"] for row in read_csv(tmp_path / "epochs.csv")] == ["1", "2", "3"]
    log_text = (tmp_path / "train.log").read_text()
    assert "epoch 1:" in log_text and "epoch 3:" in log_text
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 13))  # the dead run's 9, 10 purged
    assert [step for step, _ in scalars["valid/auc"]] == [4, 8, 12]


def test_a_new_run_truncates(tmp_path: Path) -> None:
    log_epochs(tmp_path, range(1, 3))
    log_epochs(tmp_path, range(1, 2))
    assert len(read_csv(tmp_path / "steps.csv")) == 4 and len(read_csv(tmp_path / "epochs.csv")) == 1
    assert [step for step, _ in tensorboard_scalars(tmp_path / "tensorboard")["train/loss"]] == [1, 2, 3, 4]


def test_new_columns_extend_the_header(tmp_path: Path) -> None:
    with RunLogs(tmp_path, progress=False) as logs:
        logs.epoch({"epoch": 0, "valid": {"auc": 0.6}}, "valid.auc")
        logs.epoch({"epoch": 1, "train_loss": 0.3, "valid": {"auc": 0.7, "gauc": math.nan}}, "auc")
    rows = read_csv(tmp_path / "epochs.csv")
    assert rows[0]["train_loss"] == "" and rows[1]["train_loss"] == "0.3" and rows[1]["valid_gauc"] == "nan"
    assert (tmp_path / "curves.png").exists()
