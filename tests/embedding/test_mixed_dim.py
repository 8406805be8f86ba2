"""Tests for terarec.embedding.mixed_dim: popularity bands, widths, projected lookups, per-feature dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.mixed_dim import (
    MixedDimEmbedding,
    band_dims,
    frequency_bands,
    row_counts,
)


def _zipf_counts(num_rows: int, seed: int = 0, exponent: float = 1.1) -> np.ndarray:
    """Zipf-like counts over rows 1..num_rows-1 in a shuffled order; the default row 0 is never seen."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(num_rows)
    counts[1:] = np.floor(1e6 / np.arange(1, num_rows) ** exponent)
    counts[1:] = rng.permutation(counts[1:])
    return counts


# ----------------------------------------------------------------------------- bands and widths


@pytest.mark.parametrize("split", ["mass", "rows"])
def test_bands_partition_the_rows_by_descending_count(split: str) -> None:
    counts = _zipf_counts(1000)
    bands = frequency_bands(counts, 4, split)
    assert bands.boundaries[0] == 0 and bands.boundaries[-1] == 1000
    assert (np.diff(bands.boundaries) >= 1).all()
    assert sorted(bands.order.tolist()) == list(range(1000))
    band = bands.band_of_row()
    # Every row of a band is at least as frequent as every row of any later band.
    for b in range(3):
        assert counts[band == b].min() >= counts[band == b + 1].max()
    assert (np.diff(bands.popularity) <= 0).all()
    assert bands.popularity[0] > bands.popularity[-1]


def test_mass_split_gives_each_band_an_equal_share_of_lookups() -> None:
    counts = _zipf_counts(10_000, exponent=0.8)  # no single row holds a quarter of the mass
    bands = frequency_bands(counts, 4, "mass")
    band = bands.band_of_row()
    shares = np.array([counts[band == b].sum() for b in range(4)]) / counts.sum()
    assert np.allclose(shares, 0.25, atol=0.01)
    # Head bands are small, the tail band large.
    assert (np.diff(bands.sizes) > 0).all()


def test_rows_split_gives_equal_sized_bands() -> None:
    bands = frequency_bands(_zipf_counts(1000), 4, "rows")
    assert bands.sizes.tolist() == [250, 250, 250, 250]


def test_bands_stay_non_empty_with_a_dominant_row_and_few_rows() -> None:
    counts = np.array([0, 1_000_000, 1, 1, 1, 0])
    bands = frequency_bands(counts, 4)
    assert bands.boundaries.tolist()[0] == 0 and (np.diff(bands.boundaries) >= 1).all()
    assert bands.order[0] == 1
    assert frequency_bands(np.array([3, 1]), 5).num_bands == 2  # one band per row at most
    assert frequency_bands(np.zeros(8), 2).sizes.tolist() == [4, 4]  # no counts: equal rows


def test_bands_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="counts"):
        frequency_bands(np.array([1.0, -1.0]), 2)
    with pytest.raises(ValueError, match="num_bands"):
        frequency_bands(np.array([1.0, 2.0]), 0)
    with pytest.raises(ValueError, match="split"):
        frequency_bands(np.array([1.0, 2.0]), 2, "quantile")


def test_band_dims_follow_popularity_to_the_alpha() -> None:
    popularity = np.array([1.0, 0.25, 1 / 16, 1 / 256])
    assert band_dims(popularity, d_max=64, alpha=0.5, d_min=1, round_to=1) == [64, 32, 16, 4]
    assert band_dims(popularity, d_max=64, alpha=0.0) == [64, 64, 64, 64]  # uniform
    assert band_dims(popularity, d_max=64, alpha=1.0, d_min=4) == [64, 16, 4, 4]  # clipped at d_min
    dims = band_dims(np.array([0.3, 0.1, 0.05, 0.0]), d_max=30, alpha=0.7, d_min=2, round_to=4)
    assert all(width % 4 == 0 or width in (2, 30) for width in dims)
    assert all(2 <= width <= 30 for width in dims)


def test_band_dims_are_monotone_in_popularity() -> None:
    rng = np.random.default_rng(1)
    for alpha in (0.0, 0.2, 0.5, 0.9, 1.0):
        popularity = rng.random(12)
        dims = np.array(band_dims(popularity, d_max=64, alpha=alpha, d_min=4))
        by_popularity = dims[np.argsort(popularity)]
        assert (np.diff(by_popularity) >= 0).all()
        assert dims[np.argmax(popularity)] == 64


def test_band_dims_reject_bad_parameters() -> None:
    with pytest.raises(ValueError, match="alpha"):
        band_dims([1.0], 16, alpha=1.5)
    with pytest.raises(ValueError, match="d_min"):
        band_dims([1.0], 16, alpha=0.5, d_min=32)


def test_row_counts_match_vocabulary_rows_without_touching_the_unknown_counter() -> None:
    vocab = ExactVocabulary(np.array([10, 20, 30]))
    counts = row_counts(vocab, np.array([10, 10, 30, 99, 99, 99]))
    assert counts.tolist() == [3, 2, 0, 1]
    assert int(vocab.unknown_count) == 0


# ----------------------------------------------------------------------------- one feature


def _kjt(key: str, values: list[int], lengths: list[int]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=[key],
        values=torch.tensor(values, dtype=torch.int64),
        lengths=torch.tensor(lengths, dtype=torch.int64),
    )


def _manual_lookup(emb: MixedDimEmbedding, rows: torch.Tensor) -> torch.Tensor:
    """Row by row: find the band and index from the popularity order, look up, project."""
    rank = emb.rank_of_row.long()
    starts = emb.band_starts.tolist() + [emb.num_rows]
    out = []
    for row in rows.tolist():
        position = int(rank[row])
        band = max(b for b in range(len(emb.dims)) if starts[b] <= position)
        vector = emb.band_weight(band)[position - starts[band]]
        out.append(emb.projections[band](vector.unsqueeze(0))[0])
    return torch.stack(out)


def test_from_counts_builds_bands_with_widths_decreasing_from_d_max() -> None:
    counts = _zipf_counts(500)
    emb = MixedDimEmbedding.from_counts(counts, d=32, d_max=32, alpha=0.6, num_bands=4, feature_name="item_id")
    assert emb.dims[0] == 32 and emb.dims == sorted(emb.dims, reverse=True) and emb.dims[-1] < 32
    assert sum(emb.band_sizes) == 500
    for band, (width, size) in enumerate(zip(emb.dims, emb.band_sizes)):
        assert tuple(emb.band_weight(band).shape) == (size, width)
    assert isinstance(emb.projections[0], torch.nn.Identity)  # the d-wide band needs no projection
    band, index = emb.locate(torch.arange(500))
    assert torch.bincount(band).tolist() == emb.band_sizes
    for b in range(3):  # rows of a band are at least as frequent as rows of later bands
        assert counts[(band == b).numpy()].min() >= counts[(band == b + 1).numpy()].max()
    for b in range(4):  # each band's rows fill its table exactly once
        assert sorted(index[band == b].tolist()) == list(range(emb.band_sizes[b]))


def test_lookup_and_pooled_output_the_common_width_and_equal_manual_lookup_plus_projection() -> None:
    torch.manual_seed(0)
    counts = _zipf_counts(300)
    emb = MixedDimEmbedding.from_counts(counts, d=16, alpha=0.8, num_bands=3, feature_name="item_id")
    rows = torch.tensor([5, 0, 299, 17, 5, 120, 3, 250])
    manual = _manual_lookup(emb, rows)

    looked_up = emb.lookup(rows)
    assert looked_up.shape == (8, 16)
    torch.testing.assert_close(looked_up, manual)
    assert emb.lookup(rows.view(2, 4)).shape == (2, 4, 16)

    lengths = [3, 0, 1, 4]
    pooled = emb(_kjt("item_id", rows.tolist(), lengths))
    assert pooled.shape == (4, 16)
    expected = torch.stack([chunk.sum(0) for chunk in manual.split(lengths)])
    torch.testing.assert_close(pooled, expected)
    assert torch.count_nonzero(pooled[1]) == 0  # empty bag


def test_gradients_reach_the_bands_and_projections_that_were_used() -> None:
    counts = _zipf_counts(200)
    emb = MixedDimEmbedding.from_counts(counts, d=16, alpha=1.0, num_bands=3)
    tail_row = int(np.argsort(-counts, kind="stable")[-1])
    emb.lookup(torch.tensor([tail_row])).sum().backward()
    last = len(emb.dims) - 1
    assert emb.band_weight(last).grad.abs().sum() > 0
    assert emb.projections[last].weight.grad.abs().sum() > 0
    assert emb.band_weight(0).grad is None or emb.band_weight(0).grad.abs().sum() == 0


def test_memory_is_smaller_than_a_uniform_table() -> None:
    emb = MixedDimEmbedding.from_counts(_zipf_counts(20_000), d=64, alpha=0.5, num_bands=4)
    assert emb.uniform_memory_bytes() == 20_000 * 64 * 4
    assert emb.memory_bytes() < 0.6 * emb.uniform_memory_bytes()
    # alpha = 0 is the uniform table, plus the 4-byte row map.
    uniform = MixedDimEmbedding.from_counts(_zipf_counts(20_000), d=64, alpha=0.0, num_bands=4)
    assert uniform.dims == [64, 64, 64, 64]
    assert uniform.memory_bytes() == uniform.uniform_memory_bytes() + 20_000 * 4 + 2 * 4 * 8  # + band starts, rows


def test_state_dict_round_trip_into_a_module_built_from_the_same_counts() -> None:
    counts = _zipf_counts(300)
    emb = MixedDimEmbedding.from_counts(counts, d=16, alpha=0.8, num_bands=3, feature_name="item_id")
    other = MixedDimEmbedding.from_counts(counts, d=16, alpha=0.8, num_bands=3, feature_name="item_id")
    other.load_state_dict(emb.state_dict())
    rows = torch.arange(300)
    torch.testing.assert_close(other.lookup(rows), emb.lookup(rows))
