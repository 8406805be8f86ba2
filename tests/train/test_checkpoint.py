"""Tests for terarec.train.checkpoint: atomic writes and weights-only loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from terarec.train.checkpoint import load_checkpoint, save_checkpoint


class Gadget:
    """A custom class: unpickling it would run arbitrary code paths, so loading must refuse it."""

    def __init__(self) -> None:
        self.value = 42


def test_round_trip(tmp_path: Path) -> None:
    payload = {"epoch": 3, "metrics": {"auc": 0.75}, "model": {"w": torch.arange(4.0)}, "ids": [1, 2], "name": "x"}
    path = save_checkpoint(tmp_path / "sub" / "checkpoint.pt", payload)
    assert path == tmp_path / "sub" / "checkpoint.pt"
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["metrics"] == {"auc": 0.75} and loaded["ids"] == [1, 2]
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_failure_during_save_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        # Write part of a file, as a crash or a full disk would, then fail.
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)

    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_failure_on_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_previous(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "extra": Gadget()}, path)  # plain torch.save: a full pickle
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "not a loadable terarec checkpoint" in message
    assert "Gadget" in message  # the cause names what was refused


def test_load_uses_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.ones(1)})
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert seen.get("weights_only") is True
    assert seen.get("map_location") == "cpu"


def test_load_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a loadable terarec checkpoint"):
        load_checkpoint(bad)
