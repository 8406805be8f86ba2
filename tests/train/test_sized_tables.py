"""Training with ``embedding:`` sizing: per-feature widths, frequency bands and Res-embedding, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.config import ConfigError
from terarec.data.schema import DatasetMeta
from terarec.embedding.mixed_dim import MixedDimEmbedding
from terarec.embedding.residual import ResEmbedding, ResSequenceEmbeddings
from terarec.embedding.sized import SizedPooledEmbeddings, table_bytes
from terarec.train.experiment import load_config
from terarec.train.loop import embedding_penalty, load_task, train
from terarec.train.setup import sequence_clusters
from terarec.train.tasks import build_task
from terarec.embedding.exact_vocabulary import ExactVocabulary
from tests.train.test_train import _ctr_config, _seq_config


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


SIZED = ["data.sparse=[user_id, item_id, device]", "embedding.dims={device: 4}", "embedding.bands.num_bands=2",
         "embedding.bands.features=[user_id]", "embedding.bands.tail_rows=1", "embedding.residual.features=[item_id]",
         "embedding.residual.num_clusters=4", "embedding.residual.l2=0.01"]


def test_a_sized_ctr_run_trains_checkpoints_and_reloads(ctr_data: Path, tmp_path: Path) -> None:
    result = train(_ctr_config(ctr_data, tmp_path, *SIZED), progress=False, run_dir=tmp_path / "sized")
    task = load_task(result.run_dir)
    tables = task.model.sparse_arch
    assert isinstance(tables, SizedPooledEmbeddings)
    assert isinstance(tables.special["user_id"], MixedDimEmbedding)
    assert tables.special["user_id"].band_sizes[-1] == 1  # the shared tail
    assert isinstance(tables.special["item_id"], ResEmbedding)
    assert "w4" in tables.groups and "device" in tables.projections
    # The record keeps what rebuilds the tables without the data: counts and clusters.
    assert set(task.record["row_counts"]) == {"user_id"} and set(task.record["clusters"]) == {"item_id"}
    counts = task.record["row_counts"]["user_id"]
    assert int(counts.sum()) == DatasetMeta.load(ctr_data).split["counts"]["train"]  # one user id per row
    again = task.evaluate("test")
    assert [again["auc"], again["logloss"]] == pytest.approx([result.test["auc"], result.test["logloss"]], rel=1e-6)
    assert result.test["auc"] > 0.6  # still learns the item x device cross


def test_the_residual_penalty_joins_the_loss(ctr_data: Path, tmp_path: Path) -> None:
    task = build_task(_ctr_config(ctr_data, tmp_path, *SIZED))
    model = task.model.train()
    assert embedding_penalty(model, 0.0) is not None
    batch = next(iter(task.loader("train")))
    table = model.sparse_arch.special["item_id"]
    with torch.no_grad():
        table.residuals.fill_(0.5)
    task.loss(batch)
    rows = torch.unique(task.inputs.vocabularies["item_id"](batch.sparse_features["item_id"].values()))
    expected = 0.01 * rows.numel() * 0.25 * table.embedding_dim
    assert embedding_penalty(model, 0.0).item() == pytest.approx(expected, rel=1e-5)


def test_sizing_names_unknown_features_and_refuses_managed_bands(ctr_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"embedding.dims: \['colour'\] are not sparse features"):
        build_task(_ctr_config(ctr_data, tmp_path, "embedding.dims={colour: 4}"))
    with pytest.raises(ConfigError, match="embedding.bands / embedding.residual"):
        build_task(_ctr_config(ctr_data, tmp_path, "embedding.vocabulary=managed", "embedding.optimizer=sgd",
                               "embedding.bands.num_bands=2"))
    managed = build_task(_ctr_config(ctr_data, tmp_path, "embedding.vocabulary=managed",
                                     "embedding.optimizer=rowwise_adagrad", "embedding.dims={item_id: 4}"))
    assert table_bytes(managed.model) > 0


def test_clusters_from_histories_recover_the_item_groups(seq_data: Path, tmp_path: Path) -> None:
    config = load_config(None, ["task=sequential", f"data.path={seq_data}", "model={name: bag_of_items}",
                                "embedding.residual.features=[item_id]", "embedding.residual.num_clusters=6"])
    meta = DatasetMeta.load(seq_data)
    task = build_task(config)
    catalogue: ExactVocabulary = task.inputs.vocabularies["item_id"]
    clusters = sequence_clusters(config, seq_data, meta, catalogue)
    # Each user sees items of one group of 10 (items 10g..10g+9): a group is one cluster.
    from terarec.features.hashing import hash_ints

    for group in range(6):
        rows = catalogue(torch.from_numpy(hash_ints(np.arange(10 * group, 10 * group + 10), "item_id")))
        assert len(set(clusters[rows.numpy()].tolist())) == 1


def test_a_sequence_model_trains_with_res_embedding(seq_data: Path, tmp_path: Path) -> None:
    config = _seq_config(seq_data, tmp_path, "{name: bag_of_items, embedding_dim: 16}")
    config.embedding.residual.features = ["item_id"]
    config.embedding.residual.num_clusters = 6
    config.embedding.residual.recluster_every = 1
    result = train(config, progress=False, run_dir=tmp_path / "res")
    task = load_task(result.run_dir)
    assert isinstance(task.model.items, ResSequenceEmbeddings)
    assert result.test["hr@10"] > 0.8
