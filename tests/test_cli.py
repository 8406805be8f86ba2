"""The `terarec` command: every subcommand has --help, errors are clear, a small run works end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from terarec.cli import app

runner = CliRunner()

SUBCOMMANDS = [[], ["data"], ["data", "synth"], ["data", "prepare"], ["train"], ["eval"], ["demo"], ["plan"],
               ["search-embeddings"], ["stream"], ["export"], ["serve"], ["delta"], ["predict"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "terarec")
def test_every_subcommand_has_help(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


COMPUTING = [["data", "synth"], ["data", "prepare"], ["train"], ["eval"], ["predict"], ["demo"], ["sweep"],
             ["search-embeddings"], ["stream"]]


@pytest.mark.parametrize("words", COMPUTING, ids=" ".join)
def test_every_computing_command_takes_threads_and_progress(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--threads" in result.output and "--no-progress" in result.output


def test_prepare_bad_line_names_file_and_line(tmp_path: Path) -> None:
    ratings = tmp_path / "ml-1m" / "ratings.dat"
    ratings.parent.mkdir()
    ratings.write_text("1::10::5::978300760\n1::11::x::978300761\n2::10::3::978300762\n")
    result = runner.invoke(app, ["data", "prepare", "movielens", str(ratings.parent), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "ratings.dat:2" in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_prepare_skip_bad_lines_and_count(tmp_path: Path) -> None:
    ratings = tmp_path / "ml-1m" / "ratings.dat"
    ratings.parent.mkdir()
    ratings.write_text("1::10::5::978300760\n1::11::x::978300761\n2::10::3::978300762\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["data", "prepare", "movielens", str(ratings.parent), "--out", str(out), "--on-bad-line", "skip"]
    )
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["num_rows"] == 2 and meta["stats"]["bad_lines_skipped"] == 1


def test_prepare_unknown_source_suggests(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare", "movielen", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "did you mean 'movielens'" in result.output.replace("\n", "")


def test_synth_train_eval(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synth", "--out", str(data), "--events", "3000", "--users", "100", "--items", "200"])
    assert result.exit_code == 0, result.output
    assert (data / "dataset.yaml").exists()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "cli", "task": "ctr", "data": {"path": str(data), "batch_size": 256, "labels": ["click"]},
        "model": {"name": "embedding_mlp", "hidden": [16]}, "run_dir": str(tmp_path / "runs"),
    }))
    result = runner.invoke(app, ["train", str(config), "train.epochs=1", "--no-progress"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output.strip().splitlines()[-1])
    assert evaluated["auc"] == pytest.approx(trained["auc"])


def test_train_piped_to_a_file_logs_one_line_per_epoch(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synth", "--out", str(data), "--events", "3000", "--users", "100",
                                 "--items", "200", "--threads", "1"])
    assert result.exit_code == 0, result.output
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "piped", "task": "ctr", "data": {"path": str(data), "batch_size": 256, "labels": ["click"]},
        "model": {"name": "embedding_mlp", "hidden": [16]}, "run_dir": str(tmp_path / "runs"),
    }))
    # The default environment (no OMP variables), output to a file as `terarec train ... > log 2>&1` does.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMP_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    log = tmp_path / "log.txt"
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "terarec.cli", "train", str(config), "train.epochs=2",
                               "--threads", "1"], stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    assert "\r" not in text and "it/s" not in text  # no bar frames
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "curves.png").exists() and list((run_dir / "tensorboard").iterdir())
    assert "1 threads" in (run_dir / "train.log").read_text()


def test_train_unknown_key_names_nearest(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("task: ctr\nmodel: {name: embedding_mlp}\n")
    result = runner.invoke(app, ["train", str(config), "train.epochz=2"])
    assert result.exit_code == 2
    assert "train.epochz" in result.output and "epochs" in result.output


def test_train_nproc_refuses_unshardable_tables_before_starting_processes(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("task: ctr\nmodel: {name: embedding_mlp}\n")
    result = runner.invoke(app, ["train", str(config), "embedding.optimizer=adam", "--nproc", "2",
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "embedding.optimizer=adam" in result.output and "rowwise_adagrad" in result.output
    assert not (tmp_path / "run").exists()  # refused before any folder or process


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--events", "20000", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert set(summary["runs"]) == {"ctr-popularity", "ctr-wukong", "seq-most_popular", "seq-hstu",
                                    "rank-hstu_ranking"}
    for record in summary["runs"].values():
        assert Path(record["run_dir"], "metrics.json").exists()
    assert len(summary["recommendation"]["items"]) == 10


def test_demo_never_writes_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.yaml").write_text("the user's own prepared data\n")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did not write" in " ".join(result.output.split())
    assert (tmp_path / "data" / "dataset.yaml").read_text() == "the user's own prepared data\n"


def test_search_embeddings_names_a_model_without_a_width(tmp_path: Path) -> None:
    config = tmp_path / "popular.yaml"
    config.write_text("task: sequential\nmodel: {name: most_popular}\n")
    result = runner.invoke(app, ["search-embeddings", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "model 'most_popular' has no embedding_dim option" in result.output
