"""Tests for terarec.embedding.sized and the factory: per-feature widths, frequency bands, Res-embedding from config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.config import BandsConfig, ConfigError, EmbeddingConfig, ResidualConfig, parse_config
from terarec.embedding.collection import PooledEmbeddings, SequenceEmbeddings
from terarec.embedding.engine import FusedPooledEmbeddings
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.factory import pooled_embeddings, sequence_embeddings
from terarec.embedding.mixed_dim import MixedDimEmbedding, band_dims, frequency_bands
from terarec.embedding.residual import NO_CLUSTER, ResEmbedding, ResSequenceEmbeddings
from terarec.embedding.sized import SizedPooledEmbeddings, table_bytes
from terarec.embedding.vocabulary import ManagedVocabulary
from terarec.models.inputs import ModelInputs


def _vocabularies() -> dict[str, ExactVocabulary]:
    return {
        "item": ExactVocabulary(np.arange(1000, 1300)),  # 301 rows
        "city": ExactVocabulary(np.arange(10)),  # 11 rows
        "user": ExactVocabulary(np.arange(5000, 5040)),  # 41 rows
    }


def _item_counts() -> np.ndarray:
    counts = np.zeros(301)
    counts[1:] = np.floor(1e4 / np.arange(1, 301))  # row 1 most frequent ... row 300 rarest
    return counts


def _user_clusters() -> np.ndarray:
    return np.r_[NO_CLUSTER, np.arange(40) % 4]


def _features() -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(
        ["item", "city", "user"],
        torch.tensor([1000, 1299, 1150, 3, 7, 5001, 5039, 777]),
        torch.tensor([2, 1, 1, 1, 1, 2]),  # item: 2, 1; city: 1, 1; user: 1, 2 (777 unknown)
    )


def _sized(config: EmbeddingConfig, d: int = 16) -> SizedPooledEmbeddings:
    return SizedPooledEmbeddings(_vocabularies(), d, config, {"item": _item_counts()}, {"user": _user_clusters()},
                                 PooledEmbeddings)


def test_each_feature_is_the_table_the_config_names_projected_to_d() -> None:
    torch.manual_seed(0)
    config = EmbeddingConfig(dims={"city": 4}, bands=BandsConfig(num_bands=3, alpha=1.0, features=["item"]),
                             residual=ResidualConfig(features=["user"], num_clusters=4))
    emb = _sized(config)
    features = _features()
    out = emb(features)
    assert out.keys() == ["item", "city", "user"] and out.values().shape == (2, 48)

    # city: a 4-wide table times its projection (d x 4).
    city_table = emb.groups["w4"].tables.embedding_bags["t_city"].weight
    rows = _vocabularies()["city"](torch.tensor([3, 7]))
    torch.testing.assert_close(out["city"], city_table[rows] @ emb.projections["city"].weight.T)
    # item: Ginart's widths from its bands' popularity; each bag the sum of its rows' projected band rows.
    item = emb.special["item"]
    assert isinstance(item, MixedDimEmbedding)
    bands = frequency_bands(_item_counts(), 3)
    assert item.dims == band_dims(bands.popularity, 16, 1.0, 4)
    rows = _vocabularies()["item"](torch.tensor([1000, 1299, 1150]))
    torch.testing.assert_close(out["item"], torch.stack([item.lookup(rows[:2]).sum(0), item.lookup(rows[2:])[0]]))
    # user: centre of its cluster plus its residual (the unknown id: row 0, the cold centre).
    user = emb.special["user"]
    assert isinstance(user, ResEmbedding)
    rows = _vocabularies()["user"](torch.tensor([5001, 5039, 777]))
    expected = user.centres[user.centre_of_row[rows]] + user.residuals[rows]
    torch.testing.assert_close(out["user"], torch.stack([expected[0], expected[1] + expected[2]]))


def test_a_shared_tail_gives_the_rarest_band_one_row() -> None:
    config = EmbeddingConfig(bands=BandsConfig(widths={"item": [16, 8, 4]}, tail_rows=1))
    item = _sized(config).special["item"]
    assert item.dims == [16, 8, 4]
    assert item.band_weight(2).shape == (1, 4)
    bands = frequency_bands(_item_counts(), 3)
    tail = torch.from_numpy(bands.order[bands.boundaries[2]:])
    vectors = item.lookup(tail)
    assert tail.numel() > 100 and torch.allclose(vectors, vectors[:1].expand_as(vectors))
    head = item.lookup(torch.from_numpy(bands.order[:2]))
    assert not torch.allclose(head[0], head[1])


def test_table_bytes_counts_tables_projections_and_maps() -> None:
    uniform = PooledEmbeddings(_vocabularies(), 16)
    assert table_bytes(uniform) == (301 + 11 + 41) * 16 * 4
    config = EmbeddingConfig(dims={"city": 4, "user": 8}, bands=BandsConfig(widths={"item": [16, 4]}))
    emb = _sized(config)
    item = emb.special["item"]
    band_rows = item.band_sizes
    expected = (11 * 4 + 16 * 4) * 4 + (41 * 8 + 16 * 8) * 4  # city, user: tables + projections
    expected += (band_rows[0] * 16 + band_rows[1] * 4 + 16 * 4) * 4  # item bands + the 4-wide band's projection
    expected += 301 * 4 + 8 * 2 + 8 * 2  # rank map (int32), band starts and band rows (int64)
    assert table_bytes(emb) == expected < table_bytes(uniform)


def _inputs(config: EmbeddingConfig, vocabularies=None) -> ModelInputs:
    return ModelInputs(vocabularies=vocabularies or _vocabularies(), embedding=config,
                       row_counts={"item": _item_counts()}, clusters={"user": _user_clusters()})


def test_factory_builds_whole_tables_on_the_fused_engine_and_with_managed_vocabularies() -> None:
    config = EmbeddingConfig(optimizer="rowwise_adagrad", learning_rate=0.1, dims={"city": 4})
    emb = pooled_embeddings(_inputs(config), 16)
    assert isinstance(emb, SizedPooledEmbeddings)
    assert all(isinstance(group, FusedPooledEmbeddings) for group in emb.groups.values())
    assert sorted(emb.groups) == ["w16", "w4"]
    out = emb(_features())
    before = emb.groups["w4"].weight("city").clone()
    out.values().sum().backward()  # the engine updates the 4-wide city rows in backward
    assert not torch.equal(before, emb.groups["w4"].weight("city"))
    assert table_bytes(emb) == (301 * 16 + 41 * 16 + 11 * 4 + 16 * 4) * 4

    managed = {name: ManagedVocabulary(64) for name in ("item", "city", "user")}
    config = EmbeddingConfig(vocabulary="managed", optimizer="rowwise_adagrad", dims={"item": 8})
    emb = pooled_embeddings(_inputs(config, managed), 16)
    assert emb(_features()).values().shape == (2, 48)
    assert emb.groups["w8"].weight("item").shape == (65, 8)  # capacity + the default row


def test_plain_config_keeps_the_plain_tables() -> None:
    assert isinstance(pooled_embeddings(_inputs(EmbeddingConfig()), 16), PooledEmbeddings)
    sequence = ModelInputs(vocabularies={"item_id": ExactVocabulary(np.arange(9))}, embedding=EmbeddingConfig(),
                           clusters={"item_id": np.r_[NO_CLUSTER, np.arange(9) % 2]})
    assert isinstance(sequence_embeddings(sequence, 8), SequenceEmbeddings)
    sequence.embedding = EmbeddingConfig(residual=ResidualConfig(features=["item_id"], num_clusters=2, l2=0.5))
    table = sequence_embeddings(sequence, 8)
    assert isinstance(table, ResSequenceEmbeddings) and table.table.penalty_scope == "table"
    torch.testing.assert_close(table.table.regularization(), 0.5 * table.table.residuals.detach().pow(2).sum())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="did you mean 'num_bands'"):
        parse_config(None, ["embedding.bands.num_band=4"])
    with pytest.raises(ConfigError, match="embedding.bands.alpha"):
        parse_config(None, ["embedding.bands.alpha=2"])
    with pytest.raises(ConfigError, match="embedding.dims.city"):
        parse_config(None, ["embedding.dims={city: 0}"])
    with pytest.raises(ConfigError, match="embedding.dims.item: the feature also has embedding.bands.widths"):
        parse_config(None, ["embedding.dims={item: 8}", "embedding.bands.widths={item: [8, 4]}"])
    with pytest.raises(ConfigError, match="embedding.residual.features: 'item'"):
        parse_config(None, ["embedding.dims={item: 8}", "embedding.residual.features=[item]"])
    with pytest.raises(ValueError, match=r"embedding.bands.widths.item: 3 widths for a table of 2 rows"):
        SizedPooledEmbeddings({"item": ExactVocabulary(np.arange(1))}, 8,
                              EmbeddingConfig(bands=BandsConfig(widths={"item": [8, 4, 4]})),
                              {"item": np.array([0, 5])}, {}, PooledEmbeddings)


def test_recluster_keeps_every_embedding_and_moves_rows_between_clusters() -> None:
    torch.manual_seed(0)
    table = ResEmbedding(np.r_[NO_CLUSTER, np.arange(40) % 4], 8, num_clusters=4, residual_init_std=0.5,
                         recluster_every=2)
    before = table.weight.detach().clone()
    assignment = table.centre_of_row.clone()
    table.end_epoch(1)  # not a re-clustering epoch
    assert torch.equal(table.centre_of_row, assignment)
    table.end_epoch(2)
    torch.testing.assert_close(table.weight.detach(), before)
    assert not torch.equal(table.centre_of_row, assignment)
    assert int(table.centre_of_row[0]) == 4  # the default row keeps the cold centre
    # Each centre is the mean of its rows' embeddings.
    rows = torch.nonzero(table.centre_of_row == 0).squeeze(1)
    torch.testing.assert_close(table.centres[0].detach(), before[rows].mean(0))


def test_the_planner_counts_what_the_modules_hold() -> None:
    from terarec.embedding.planner import TablePlan, table_memory

    emb = _sized(EmbeddingConfig(bands=BandsConfig(widths={"item": [16, 8, 4]}),
                                 residual=ResidualConfig(features=["user"], num_clusters=4)))
    item, user = emb.special["item"], emb.special["user"]
    banded = TablePlan("item", rows=301, dim=16, band_dims=[16, 8, 4], band_rows=item.band_sizes, optimizer="none")
    # The module also keeps each band's first rank and row count (2 x 8 bytes a band).
    assert table_memory(banded).weights == table_bytes(item) - 2 * 8 * 3
    residual = TablePlan("user", rows=41, dim=16, clusters=4, optimizer="none")
    assert table_memory(residual).weights == table_bytes(user)
    with pytest.raises(ValueError, match="table 'item': band_rows needs one count per band_dims entry"):
        TablePlan("item", rows=10, dim=16, band_dims=[16, 4], band_rows=[10])


def test_the_shipped_sized_configs_load() -> None:
    from pathlib import Path

    from terarec.embedding.planner import load_plan, table_memory
    from terarec.train.experiment import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    searched = load_config(root / "ml100k" / "dlrm_searched.yaml").embedding
    assert searched.bands.widths == {"item_id": [16, 8, 4, 4]} and searched.dims["user_id"] == 4
    assert load_config(root / "frappe" / "dlrm_bands.yaml").embedding.bands.num_bands == 4
    uniform, banded, residual = (table_memory(t).weights for t in load_plan(root / "plans" / "100m_sized.yaml").tables)
    assert banded < uniform < residual
