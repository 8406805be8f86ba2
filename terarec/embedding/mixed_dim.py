"""Mixed-dimension embeddings: frequent rows get wide rows, rare rows narrow ones, all projected to one d.

Ginart et al. 2021 ("Mixed Dimension Embeddings with Application to Memory-Efficient
Recommendation Systems") give block i of a table the width

    d_i = d_max * (p_i / p_max) ** alpha,        alpha in [0, 1]

where p_i is the block's popularity, and map every block to the common size d with a
projection: e_row = P_i E_i[row] (E_i: (n_i, d_i), P_i: (d, d_i)). alpha = 0 is the uniform
table, alpha = 1 widths proportional to popularity. Neural Input Search (Joglekar et al. 2020)
searches the same space (more dims for frequent ids); here the widths follow the rule above.

Here a block is a *frequency band*: a feature's rows sorted by training count and cut into
``num_bands`` bands (``frequency_bands``), each band one TorchRec table of its own width and
one bias-free projection to d. Because the projections are linear, summing projected rows
equals projecting the per-band sums, so pooling runs inside TorchRec's EmbeddingBagCollection
and only the (B, d_band) sums are projected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.collection import sum_pooled_tables
from terarec.embedding.exact_vocabulary import ExactVocabulary

BAND_SPLITS = ("mass", "rows")


# ----------------------------------------------------------------------------- bands and widths


@dataclass(frozen=True)
class FrequencyBands:
    """A feature's rows cut into bands by count, most frequent band first.

    Args:
        order: row indices sorted by count, descending (ties by row index).
        boundaries: (num_bands + 1,) offsets into ``order``; band b is order[boundaries[b]:boundaries[b + 1]].
        popularity: per band, the mean share of all lookups that one of its rows receives
            (mean count of its rows / total count): Ginart's p_i, non-increasing over bands.
    """

    order: np.ndarray
    boundaries: np.ndarray
    popularity: np.ndarray

    @property
    def num_bands(self) -> int:
        return int(self.boundaries.size - 1)

    @property
    def num_rows(self) -> int:
        return int(self.order.size)

    @property
    def sizes(self) -> np.ndarray:
        """Rows per band."""
        return np.diff(self.boundaries)

    def rank_of_row(self) -> np.ndarray:
        """Position of every row in popularity order (the inverse of ``order``)."""
        rank = np.empty(self.num_rows, dtype=np.int64)
        rank[self.order] = np.arange(self.num_rows)
        return rank

    def band_of_row(self) -> np.ndarray:
        """Band of every row."""
        return np.searchsorted(self.boundaries, self.rank_of_row(), side="right") - 1


def frequency_bands(counts: np.ndarray, num_bands: int, split: str = "mass") -> FrequencyBands:
    """Cut rows into ``num_bands`` popularity bands from their counts.

    ``split="mass"`` (default) gives each band about an equal share of the total count, so a
    Zipf head lands in a few small bands and the long tail in one large band: the widths then
    track where lookups go. ``split="rows"`` gives each band an equal number of rows (quantiles
    of the rows sorted by count). Either way every band holds at least one row, and rows with
    zero count sort last. With fewer rows than bands, there is one band per row.

    Args:
        counts: (num_rows,) non-negative lookup counts per table row.
        num_bands: bands wanted (>= 1).
        split: "mass" or "rows".

    Example:
        >>> frequency_bands(np.array([0, 50, 30, 10, 5, 5]), 2).boundaries.tolist()
        [0, 1, 6]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"frequency_bands: counts must be a non-empty 1-d array, got shape {counts.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("frequency_bands: counts must be finite and >= 0")
    if num_bands < 1:
        raise ValueError(f"frequency_bands: num_bands must be >= 1, got {num_bands}")
    if split not in BAND_SPLITS:
        raise ValueError(f"frequency_bands: split must be one of {BAND_SPLITS}, got {split!r}")

    num_rows = counts.size
    num_bands = min(num_bands, num_rows)
    order = np.argsort(-counts, kind="stable")
    sorted_counts = counts[order]
    total = sorted_counts.sum()
    if split == "mass" and total > 0:
        mass = np.cumsum(sorted_counts)
        # Rows needed before the cumulative count reaches k / num_bands of the total.
        inner = np.searchsorted(mass, total * np.arange(1, num_bands) / num_bands, side="left") + 1
    else:
        inner = np.round(num_rows * np.arange(1, num_bands) / num_bands).astype(np.int64)
    boundaries = np.concatenate([[0], inner, [num_rows]]).astype(np.int64)
    # Every band non-empty: at least one row after the previous boundary, one left for each later band.
    for band in range(1, num_bands):
        boundaries[band] = min(max(boundaries[band], boundaries[band - 1] + 1), num_rows - (num_bands - band))
    sums = np.add.reduceat(sorted_counts, boundaries[:-1])
    popularity = sums / np.diff(boundaries) / total if total > 0 else np.zeros(num_bands)
    return FrequencyBands(order=order, boundaries=boundaries, popularity=popularity)


def band_dims(
    band_popularity: np.ndarray | list[float],
    d_max: int,
    alpha: float,
    d_min: int = 4,
    round_to: int = 4,
) -> list[int]:
    """Widths d_i = d_max * (p_i / p_max) ** alpha, rounded to a multiple of ``round_to``, in [d_min, d_max].

    Non-decreasing in popularity (every step is). Rounding to multiples of 4 keeps rows
    aligned for TorchRec / FBGEMM kernels. Bands of zero popularity get ``d_min`` (alpha > 0).

    Args:
        band_popularity: per band popularity (any scale: only ratios to the maximum matter).
        d_max: width of the most popular band.
        alpha: temperature in [0, 1]; 0 gives every band d_max.
        d_min: narrowest width allowed (>= 1).
        round_to: widths are rounded to the nearest multiple of this (1: no rounding).

    Example:
        >>> band_dims([0.1, 0.01, 0.001], d_max=64, alpha=0.5)
        [64, 20, 8]
    """
    popularity = np.asarray(band_popularity, dtype=np.float64)
    if popularity.ndim != 1 or popularity.size == 0 or (popularity < 0).any():
        raise ValueError("band_dims: band_popularity must be a non-empty 1-d array of values >= 0")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"band_dims: alpha must be in [0, 1], got {alpha}")
    if not 1 <= d_min <= d_max:
        raise ValueError(f"band_dims: need 1 <= d_min <= d_max, got d_min={d_min}, d_max={d_max}")
    if round_to < 1:
        raise ValueError(f"band_dims: round_to must be >= 1, got {round_to}")
    top = popularity.max()
    ratio = popularity / top if top > 0 else np.ones_like(popularity)
    raw = d_max * ratio**alpha
    rounded = np.floor(raw / round_to + 0.5) * round_to
    return [int(width) for width in np.clip(rounded, d_min, d_max)]


def row_counts(vocabulary: ExactVocabulary, ids: np.ndarray | torch.Tensor) -> np.ndarray:
    """Lookups per table row of a stream of 64-bit ids (unknown ids count for row 0).

    Reads the vocabulary without calling it, so its ``unknown_count`` is left alone.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    known = vocabulary.ids.numpy()
    if known.size == 0:
        return np.array([ids.size], dtype=np.int64)
    position = np.minimum(np.searchsorted(known, ids), known.size - 1)
    rows = np.where(known[position] == ids, position + 1, 0)
    return np.bincount(rows, minlength=vocabulary.num_rows)


# ----------------------------------------------------------------------------- one feature


class MixedDimEmbedding(nn.Module):
    """One feature's table split into frequency bands of different widths, each projected to d.

    Input is table rows (from a vocabulary: row 0 is its default row). ``forward`` pools a KJT
    of rows per bag (sum) -> (B, d); ``lookup`` gives one vector per row -> (..., d). Both go
    through one TorchRec EmbeddingBagCollection holding a table per band, whose feature for band
    b is ``f"{feature_name}@band{b}"``; a band whose width is d needs no projection (identity).

    Args:
        bands: the rows' popularity bands (``frequency_bands``).
        dims: width of each band's table (``band_dims``).
        embedding_dim: the common output width d.
        feature_name: the KJT key read by ``forward``.
        init_std: std of the table rows; projections are N(0, 1 / d_band), so outputs start
            with about this std per coordinate, as a uniform table would.
        tail_rows: rows of the last (rarest) band's table: 0 = one per row; k > 0 = the band's
            rows share k table rows (popularity rank modulo k; 1 = one shared vector).

    Example:
        >>> emb = MixedDimEmbedding.from_counts(np.array([0, 90, 9, 1]), d=8, alpha=1.0, num_bands=2)
        >>> emb.lookup(torch.tensor([1, 3])).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        bands: FrequencyBands,
        dims: list[int],
        embedding_dim: int,
        feature_name: str = "feature",
        init_std: float = 0.01,
        tail_rows: int = 0,
    ) -> None:
        super().__init__()
        if tail_rows < 0:
            raise ValueError(f"MixedDimEmbedding: tail_rows must be >= 0, got {tail_rows}")
        if len(dims) != bands.num_bands:
            raise ValueError(f"MixedDimEmbedding: {len(dims)} dims for {bands.num_bands} bands")
        if any(width < 1 for width in dims) or embedding_dim < 1:
            raise ValueError(f"MixedDimEmbedding: widths must be >= 1, got dims={dims}, embedding_dim={embedding_dim}")
        self.feature_name = feature_name
        self.embedding_dim = embedding_dim
        self.dims = list(dims)
        self.band_sizes = [int(size) for size in bands.sizes]
        if tail_rows:
            self.band_sizes[-1] = min(self.band_sizes[-1], tail_rows)
        # Table rows of each band: a row's index in its band is taken modulo this (identity but in a shared tail).
        self.register_buffer("band_rows", torch.tensor(self.band_sizes, dtype=torch.int64))
        self.band_keys = [f"{feature_name}@band{band}" for band in range(bands.num_bands)]
        # A row's band and index within it follow from its popularity rank: 4 bytes per row.
        rank_dtype = torch.int32 if bands.num_rows < 2**31 else torch.int64
        self.register_buffer("rank_of_row", torch.from_numpy(bands.rank_of_row()).to(rank_dtype))
        self.register_buffer("band_starts", torch.from_numpy(bands.boundaries[:-1].copy()))
        self.tables = sum_pooled_tables(list(zip(self.band_keys, self.dims, self.band_sizes)))
        for table in self.tables.embedding_bags.values():
            nn.init.normal_(table.weight, std=init_std)
        self.projections = nn.ModuleList()
        for width in self.dims:
            if width == embedding_dim:
                self.projections.append(nn.Identity())
                continue
            projection = nn.Linear(width, embedding_dim, bias=False)
            nn.init.normal_(projection.weight, std=width**-0.5)
            self.projections.append(projection)

    @classmethod
    def from_counts(
        cls,
        counts_per_row: np.ndarray,
        d: int,
        d_max: int | None = None,
        alpha: float = 0.5,
        num_bands: int = 4,
        d_min: int = 4,
        round_to: int = 4,
        split: str = "mass",
        feature_name: str = "feature",
        init_std: float = 0.01,
    ) -> MixedDimEmbedding:
        """Bands from per-row counts, widths from their popularity (d_max defaults to d)."""
        d_max = d if d_max is None else d_max
        bands = frequency_bands(counts_per_row, num_bands, split)
        dims = band_dims(bands.popularity, d_max, alpha, min(d_min, d_max), round_to)
        return cls(bands, dims, d, feature_name, init_std)

    @property
    def num_rows(self) -> int:
        return int(self.rank_of_row.numel())

    def band_weight(self, band: int) -> torch.Tensor:
        """Table of one band, (band size, d_band); row i is the band's i-th most popular row."""
        return self.tables.embedding_bags[f"t_{self.band_keys[band]}"].weight

    def locate(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Band of each row and its index in that band's table."""
        rank = self.rank_of_row[rows].long()
        band = torch.bucketize(rank, self.band_starts, right=True) - 1
        return band, (rank - self.band_starts[band]) % self.band_rows[band]

    def pooled(self, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sum of the projected rows of each bag: rows (N,), lengths (B,) -> (B, d)."""
        num_bags = lengths.numel()
        band, index = self.locate(rows)
        bag = torch.repeat_interleave(torch.arange(num_bags), lengths)
        # Regroup the values band-major, bag-minor: the layout of a KJT whose keys are the bands.
        slot = band * num_bags + bag
        regrouped = torch.argsort(slot, stable=True)
        band_features = KeyedJaggedTensor(
            keys=self.band_keys,
            values=index[regrouped],
            lengths=torch.bincount(slot, minlength=len(self.band_keys) * num_bags),
            stride=num_bags,
        )
        per_band = self.tables(band_features).values().split(self.dims, dim=1)  # (B, d_b) each
        out = torch.zeros(num_bags, self.embedding_dim, dtype=per_band[0].dtype)
        for sums, projection in zip(per_band, self.projections):
            out = out + projection(sums)
        return out  # (B, d)

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """One projected vector per row: rows (...,) -> (..., d)."""
        flat = rows.reshape(-1)
        return self.pooled(flat, torch.ones_like(flat)).reshape(*rows.shape, self.embedding_dim)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Sum-pool the rows of ``feature_name`` in a KJT of table rows: -> (B, d)."""
        jagged = features[self.feature_name]
        return self.pooled(jagged.values(), jagged.lengths())

    def memory_bytes(self) -> int:
        """Bytes of the band tables, the projections and the row -> rank map."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def uniform_memory_bytes(self) -> int:
        """Bytes of one uniform table of the same rows at width d (same dtype)."""
        return self.num_rows * self.embedding_dim * self.band_weight(0).element_size()

    def table_weights(self) -> list[torch.Tensor]:
        """The band tables (not the projections), for ``embedding.regularization``'s L2."""
        return [table.weight for table in self.tables.embedding_bags.values()]
