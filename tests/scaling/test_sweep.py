"""Sweeps: points expand and share their data and steps, results resume, the CLI runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from terarec.cli import app
from terarec.config import ConfigError
from terarec.scaling.sweep import (
    RESULTS,
    expand_points,
    load_sweep,
    run_sweep,
    summarize,
)

WUKONG = {"name": "wukong", "embedding_dim": 4, "num_layers": 1, "num_fm_embeddings": 2, "num_lcb_embeddings": 2,
          "fm_rank": 2, "fmb_mlp": [4], "top_mlp": [4]}


def _write_spec(folder: Path, data: Path, families: list[dict], overrides: list[str] | None = None) -> Path:
    base = {"task": "ctr", "data": {"path": str(data), "batch_size": 64, "user_column": "none"},
            "model": WUKONG, "train": {"epochs": 1, "max_steps_per_epoch": 2, "patience": 0, "checkpoint": False,
                                       "threads": 1}}
    (folder / "wukong.yaml").write_text(yaml.safe_dump(base))
    (folder / "dlrm.yaml").write_text(yaml.safe_dump({**base, "model": {"name": "dlrm", "embedding_dim": 4}}))
    spec = folder / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "families": families, "overrides": overrides or []}))
    return spec


class FakeTrainer:
    """Stands in for training: LogLoss falls with the FMB width; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, config, run_dir: Path) -> dict:
        self.calls.append(config.name)
        run_dir.mkdir(parents=True)
        width = config.model.get("fmb_mlp", [4])[0]
        loss = 0.5 + 0.1 / width
        return {"parameters": 10 * width, "test": {"logloss": loss, "auc": 0.7}, "valid": {"logloss": loss, "auc": 0.7},
                "epochs": [{"epoch": 1, "steps": 2, "train_seconds": 0.1}]}


def test_points_expand_from_points_then_grid(tmp_path: Path, tiny_ctr: Path) -> None:
    spec = load_sweep(_write_spec(tmp_path, tiny_ctr, [
        {"name": "wukong", "config": "wukong.yaml", "points": [{"num_layers": 2}], "grid": {"fm_rank": [1, 3], "fmb_mlp": [[4], [8]]}},
    ]))
    points = expand_points(spec)
    assert [p.id for p in points] == [f"wukong-{i:02d}" for i in range(5)]
    assert points[0].config.model["num_layers"] == 2 and points[0].config.model["fm_rank"] == 2
    assert points[4].config.model["fm_rank"] == 3 and points[4].config.model["fmb_mlp"] == [8]


def test_points_must_share_data_and_steps(tmp_path: Path, tiny_ctr: Path) -> None:
    spec = load_sweep(_write_spec(tmp_path, tiny_ctr, [
        {"name": "wukong", "config": "wukong.yaml", "points": [{}]},
        {"name": "dlrm", "config": "dlrm.yaml", "points": [{}], "overrides": ["train.max_steps_per_epoch=3"]},
    ]))
    with pytest.raises(ConfigError, match="train.max_steps_per_epoch"):
        expand_points(spec)


def test_bad_point_option_names_the_point(tmp_path: Path, tiny_ctr: Path) -> None:
    spec = load_sweep(_write_spec(tmp_path, tiny_ctr, [
        {"name": "wukong", "config": "wukong.yaml", "points": [{"fm_rnak": 2}]}]))
    with pytest.raises(ConfigError, match="wukong-00.*fm_rank"):
        expand_points(spec)


def test_resume_skips_finished_points(tmp_path: Path, tiny_ctr: Path) -> None:
    families = [{"name": "wukong", "config": "wukong.yaml", "points": [{"fmb_mlp": [w]} for w in (2, 4, 8)]}]
    spec = load_sweep(_write_spec(tmp_path, tiny_ctr, families))
    out = tmp_path / "sweep"
    trainer = FakeTrainer()
    records = run_sweep(spec, out, trainer=trainer, log=lambda line: None)
    assert len(trainer.calls) == 3
    assert [r["gflops"] for r in records] == sorted(r["gflops"] for r in records)
    saved = json.loads((out / RESULTS).read_text())["points"]
    assert [r["id"] for r in saved] == ["wukong-00", "wukong-01", "wukong-02"]

    # Stopped part way: the last point's record is lost and a half-written folder remains.
    (out / RESULTS).write_text(json.dumps({"points": saved[:2]}))
    (out / "points" / "wukong-02" / "partial").write_text("")
    lines: list[str] = []
    again = FakeTrainer()
    records = run_sweep(spec, out, trainer=again, log=lines.append)
    assert again.calls == ["t-wukong-02"]
    assert "finished earlier" in lines[0] and len(records) == 3
    assert not (out / "points" / "wukong-02" / "partial").exists()

    # A changed point is trained again; a changed thread count is not a change.
    families[0]["points"][0] = {"fmb_mlp": [3]}
    spec = load_sweep(_write_spec(tmp_path, tiny_ctr, families), ["train.threads=2"])
    third = FakeTrainer()
    run_sweep(spec, out, trainer=third, log=lambda line: None)
    assert third.calls == ["t-wukong-00"]

    summary = summarize(out, plot=False)
    family = summary["families"]["wukong"]
    assert family["points"] == 3 and family["monotone"] and family["fit"]["r2"] > 0.9
    assert (out / "fit.json").exists()

    # A point dropped from the spec is kept for the record but no longer fitted.
    del families[0]["points"][2]
    run_sweep(load_sweep(_write_spec(tmp_path, tiny_ctr, families)), out, trainer=FakeTrainer(), log=lambda line: None)
    saved = json.loads((out / RESULTS).read_text())
    assert [r["id"] for r in saved["earlier_points"]] == ["wukong-02"]
    assert summarize(out, plot=False)["families"]["wukong"]["points"] == 2
    assert summary["floor"] is not None  # synthetic-ctr data knows its Bayes LogLoss


def test_cli_sweep_trains_and_plots(tmp_path: Path, tiny_ctr: Path) -> None:
    families = [{"name": "wukong", "config": "wukong.yaml", "points": [{"fmb_mlp": [w]} for w in (2, 8)]}]
    spec = _write_spec(tmp_path, tiny_ctr, families)
    out = tmp_path / "sweep"
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", str(spec), "train.learning_rate=0.01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    points = json.loads((out / RESULTS).read_text())["points"]
    assert len(points) == 2 and all(p["steps"] == 2 and 0 < p["test_logloss"] for p in points)
    assert (out / "points" / "wukong-00" / "metrics.json").exists() and (out / "scaling.png").stat().st_size > 0
    result = runner.invoke(app, ["sweep-plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output


def test_cli_sweep_help_and_bad_spec(tmp_path: Path) -> None:
    runner = CliRunner()
    for words in (["sweep"], ["sweep-plot"]):
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    spec = tmp_path / "sweep.yaml"
    spec.write_text("families: []\n")
    result = runner.invoke(app, ["sweep", str(spec)])
    assert result.exit_code == 2 and "families" in result.output
