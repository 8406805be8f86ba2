"""The Predictor answers from a run folder alone, with the scores the trainer's evaluation computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from terarec.cli import app
from terarec.data.prepare import write_dataset
from terarec.data.ranking import synthetic_ranking_source
from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
from terarec.data.splits import SplitConfig
from terarec.eval.binary import auc
from terarec.features.hashing import hash_array
from terarec.serve import Predictor
from terarec.train.experiment import load_config
from terarec.train.loop import load_task, train
from tests.train.test_train import _ctr_config


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _split_rows(folder: Path, split: int) -> pa.Table:
    parts = sorted(folder.glob("part-*.parquet"))
    table = pa.concat_tables(pq.read_table(part) for part in parts)
    return table.filter(pc.equal(table.column("split"), split))


@torch.no_grad()
def _evaluation_outputs(run_dir: Path, transform) -> np.ndarray:
    """What the trainer's evaluation scores on the test split, batch by batch as it reads them."""
    task = load_task(run_dir)
    task.model.eval()
    return np.concatenate([transform(task.model(batch)).numpy() for batch in task.loader("test")])


def _move_data_away(folder: Path, tmp_path: Path, monkeypatch) -> Path:
    """The dataset goes elsewhere and the working directory is an empty one: nothing to read."""
    moved = tmp_path / "moved-data"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    return moved


@pytest.fixture()
def ctr_copy(ctr_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ctr-data"
    shutil.copytree(ctr_data, copy)
    return copy


def test_ctr_scores_equal_the_evaluation_scores_without_the_data(ctr_copy: Path, tmp_path: Path, monkeypatch) -> None:
    run = train(_ctr_config(ctr_copy, tmp_path, "train.epochs=2", "data.dense=[]"), progress=False,
                run_dir=tmp_path / "run")
    expected = _evaluation_outputs(run.run_dir, torch.sigmoid)[:, 0]
    moved = _move_data_away(ctr_copy, tmp_path, monkeypatch)
    rows = _split_rows(moved, 2).drop(["click"])  # labels are not needed to score
    predictor = Predictor.from_run(run.run_dir, threads=1)
    scores = predictor.score(rows)["click"]
    assert scores.shape == expected.shape
    assert float(np.abs(scores - expected).max()) <= 1e-6
    labels = _split_rows(moved, 2).column("click").to_numpy()
    assert auc(labels, scores) == pytest.approx(run.test["auc"], abs=1e-9)


def test_ranking_scores_equal_the_evaluation_scores_without_the_data(tmp_path: Path, monkeypatch) -> None:
    data = synthetic_ranking_source(load_synthetic(SyntheticConfig(num_users=60, num_items=120, num_events=3000)),
                                    8, ["click", "like", "watch_time", "category", "hour", "device"])
    folder = tmp_path / "ranking-data"
    write_dataset(data, folder, SplitConfig(method="time"), progress=False)
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "hstu_ranking.yaml", [
        f"data.path={folder}", f"run_dir={tmp_path}", "data.max_length=8", "model.max_events=8",
        "model.embedding_dim=16", "model.head_mlp=[8]", "train.epochs=1", "train.threads=1"])
    run = train(config, progress=False, run_dir=tmp_path / "run")

    def predictions(outputs: torch.Tensor) -> torch.Tensor:
        regression = torch.tensor([False, False, True])
        return torch.where(regression, torch.expm1(outputs).clamp(min=0), torch.sigmoid(outputs))

    expected = _evaluation_outputs(run.run_dir, predictions)
    moved = _move_data_away(folder, tmp_path, monkeypatch)
    rows = _split_rows(moved, 2).drop(["click", "like", "watch_time"])  # the candidates' actions are unknown
    scores = Predictor.from_run(run.run_dir, threads=1).score(rows)
    assert list(scores) == ["click", "like", "long_watch"]
    got = np.stack(list(scores.values()), 1)
    assert float(np.abs(got - expected).max()) <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    labels = _split_rows(moved, 2).column("click").to_numpy()
    assert auc(labels, scores["click"]) == pytest.approx(run.test["click_auc"], abs=1e-9)


def test_recommend_ranks_the_catalogue_as_evaluation_scores_it(seq_data: Path, tmp_path: Path, monkeypatch) -> None:
    config = load_config(None, ["name=groups", "task=sequential", f"data.path={seq_data}", f"run_dir={tmp_path}",
                                "model={name: sasrec, embedding_dim: 16, num_layers: 1, max_length: 10}",
                                "data.batch_size=32", "train.epochs=1", "train.threads=1", "eval.ks=[5]"])
    run = train(config, progress=False, run_dir=tmp_path / "run")
    task = load_task(run.run_dir)
    batch = next(iter(task.loader("test")))
    with torch.no_grad():
        catalogue_scores = task.model.eval().score_catalogue(batch)
    events = pa.concat_tables([_split_rows(seq_data, 0), _split_rows(seq_data, 1)])  # a test target's history
    events = events.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    histories = []
    for user in batch.user_ids.tolist():
        mine = events.filter(pc.equal(events.column("user_id"), user))
        histories.append(mine.column("item_id").to_numpy())
    monkeypatch.chdir(tmp_path)
    predictor = Predictor.from_run(run.run_dir, threads=1)
    items, scores = predictor.recommend_many(histories, [np.arange(h.size) for h in histories], k=5,
                                             exclude_seen=False)
    top_scores, top_rows = torch.topk(catalogue_scores, 5, dim=1)
    np.testing.assert_allclose(scores, top_scores.numpy(), atol=1e-5)
    rows = task.model.item_rows(torch.from_numpy(hash_array(pa.array(items.ravel()), "item_id"))).view(items.shape)
    assert torch.equal(rows, top_rows)
    assert [h.size for h in histories] == batch.lengths.tolist()
    # exclude_seen removes every item of the history, however long
    seen_items, _ = predictor.recommend(histories[0], k=5)
    assert not set(seen_items.tolist()) & set(histories[0].tolist())


def test_predict_command_scores_a_file(ctr_copy: Path, tmp_path: Path) -> None:
    run = train(_ctr_config(ctr_copy, tmp_path, "train.epochs=1"), progress=False, run_dir=tmp_path / "run")
    rows = _split_rows(ctr_copy, 2)
    source, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(rows, source)
    result = CliRunner().invoke(app, ["predict", str(run.run_dir), "--input", str(source), "--out", str(out),
                                      "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    scored = pq.read_table(out)
    assert scored.num_rows == rows.num_rows and "score_click" in scored.column_names
    assert auc(rows.column("click").to_numpy(), scored.column("score_click").to_numpy()) == pytest.approx(
        run.test["auc"], abs=1e-9)
    bad = CliRunner().invoke(app, ["predict", str(run.run_dir), "--input", str(tmp_path / "nope.parquet"),
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "does not exist" in " ".join(bad.output.split())
    missing = tmp_path / "missing.parquet"
    pq.write_table(rows.drop(["device"]), missing)
    bad = CliRunner().invoke(app, ["predict", str(run.run_dir), "--input", str(missing), "--out", str(out)])
    assert bad.exit_code == 2 and "device" in " ".join(bad.output.split())


def test_eval_from_another_directory_with_the_data_moved(ctr_copy: Path, tmp_path: Path, monkeypatch) -> None:
    run = train(_ctr_config(ctr_copy, tmp_path, "train.epochs=1"), progress=False, run_dir=tmp_path / "run")
    moved = _move_data_away(ctr_copy, tmp_path, monkeypatch)
    gone = CliRunner().invoke(app, ["eval", str(run.run_dir)])
    assert gone.exit_code == 2 and "dataset.yaml" in " ".join(gone.output.split())
    result = CliRunner().invoke(app, ["eval", str(run.run_dir), "--data", str(moved)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["auc"] == pytest.approx(run.test["auc"], abs=1e-9)


def test_int8_tables_score_close_to_fp32(ctr_copy: Path, tmp_path: Path) -> None:
    run = train(_ctr_config(ctr_copy, tmp_path, "train.epochs=1", "model={name: dlrm, embedding_dim: 8}"),
                progress=False, run_dir=tmp_path / "run")
    rows = _split_rows(ctr_copy, 2)
    exact = Predictor.from_run(run.run_dir, threads=1).score(rows)["click"]
    int8 = Predictor.from_run(run.run_dir, threads=1, tables="int8")
    assert int8.quantized_tables == 1
    scores = int8.score(rows)["click"]
    assert 0 < float(np.abs(scores - exact).max()) < 0.02  # quantised, and close
    with pytest.raises(ValueError, match="int8"):
        Predictor.from_run(run.run_dir, tables="int4")
