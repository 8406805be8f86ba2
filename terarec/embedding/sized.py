"""Pooled tables of per-feature sizes, each projected to the model's width: what ``embedding:`` sizing builds.

A model asks for F pooled d-wide embeddings (``terarec.embedding.factory.pooled_embeddings``);
this module gives them with tables sized per feature:

* **whole** tables of width w (``embedding.dims``; default d). Features of one width share one
  grouped module (``PooledEmbeddings``, or the fused engine's ``FusedPooledEmbeddings``, exact or
  managed vocabularies), and a w-wide feature is mapped to d by a learned P (d x w): one block
  of Ginart et al. 2019's mixed-dimension embedding, e = P E[row]. Neural Input Search
  (Joglekar et al. 2019) searches this per-feature width (and vocabulary) against memory.
* **banded** tables (``embedding.bands``): the feature's rows cut into frequency bands of widths
  d_i = d (p_i / p_max)^alpha (or searched widths), e = P_i E_i[row] (``MixedDimEmbedding``), the
  rarest band optionally shared (``tail_rows``).
* **residual** tables (``embedding.residual``): e_i = C[cluster_i] + r_i with lambda ||r||^2
  (Zhou et al. 2019 Res-embedding, ``ResEmbedding``); clusters from co-occurrence in histories.

The output is the KeyedTensor (B, F * d) a ``PooledEmbeddings`` gives, keys in feature order, so
dense parts are unchanged. ``table_bytes`` counts what the tables cost (weights, projections,
row maps), the quantity ``terarec search-embeddings`` trades against validation quality.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from terarec.config import EmbeddingConfig
from terarec.embedding.engine import FusedPooledEmbeddings
from terarec.embedding.mixed_dim import MixedDimEmbedding, band_dims, frequency_bands
from terarec.embedding.residual import ResEmbedding

# Grouped whole tables of one width: (vocabularies, width) -> KJT of ids -> KeyedTensor (B, F * width).
TableBuilder = Callable[[dict[str, nn.Module], int], nn.Module]


def feature_band_widths(config: EmbeddingConfig, name: str, counts: np.ndarray, embedding_dim: int) -> list[int]:
    """The widths of a banded feature's bands: ``bands.widths[name]``, else Ginart's rule from its counts."""
    bands = config.bands
    if name in bands.widths:
        return list(bands.widths[name])
    popularity = frequency_bands(counts, bands.num_bands, bands.split).popularity
    return band_dims(popularity, embedding_dim, bands.alpha, min(bands.d_min, embedding_dim))


class SizedPooledEmbeddings(nn.Module):
    """Sum-pooled tables sized per feature by the ``embedding:`` config: KJT of 64-bit ids -> KeyedTensor (B, F * d).

    Args:
        vocabularies: feature name -> its vocabulary (sizes the tables).
        embedding_dim: d, the width of every output key.
        config: ``embedding.dims``, ``embedding.bands``, ``embedding.residual``.
        row_counts: feature -> training lookups per row, for every banded feature.
        clusters: feature -> cluster per row, for every residual feature.
        tables: builds the grouped whole tables of one width (the factory's choice: Adam-trained
            ``PooledEmbeddings`` or the fused engine).

    Example:
        >>> from terarec.config import BandsConfig
        >>> from terarec.embedding.collection import PooledEmbeddings
        >>> from terarec.embedding.exact_vocabulary import ExactVocabulary
        >>> vocabularies = {"item": ExactVocabulary(np.arange(200)), "city": ExactVocabulary(np.arange(5))}
        >>> config = EmbeddingConfig(dims={"city": 4}, bands=BandsConfig(num_bands=2, features=["item"]))
        >>> counts = {"item": np.r_[0, np.arange(200, 0, -1)]}
        >>> emb = SizedPooledEmbeddings(vocabularies, 16, config, counts, {}, PooledEmbeddings)
        >>> features = KeyedJaggedTensor.from_lengths_sync(["item", "city"], torch.tensor([3, 7, 1]), torch.tensor([2, 1]))
        >>> emb(features).values().shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        vocabularies: Mapping[str, nn.Module],
        embedding_dim: int,
        config: EmbeddingConfig,
        row_counts: Mapping[str, np.ndarray],
        clusters: Mapping[str, np.ndarray],
        tables: TableBuilder,
    ) -> None:
        super().__init__()
        self.feature_names = list(vocabularies)
        self.embedding_dim = embedding_dim
        whole: dict[int, dict[str, nn.Module]] = {}
        special: dict[str, nn.Module] = {}
        for name, vocabulary in vocabularies.items():
            if name in config.residual.features:
                if name not in clusters:
                    raise ValueError(f"embedding.residual.features: no clusters were fitted for '{name}'")
                options = config.residual
                special[name] = ResEmbedding(clusters[name], embedding_dim, options.l2, options.num_clusters,
                                             name, recluster_every=options.recluster_every)
            elif config.bands.banded(name, vocabulary.num_rows):
                if name not in row_counts:
                    raise ValueError(f"embedding.bands: no row counts were fitted for '{name}'")
                widths = feature_band_widths(config, name, row_counts[name], embedding_dim)
                bands = frequency_bands(row_counts[name], len(widths), config.bands.split)
                if bands.num_bands != len(widths):
                    raise ValueError(f"embedding.bands.widths.{name}: {len(widths)} widths for a table of "
                                     f"{bands.num_rows} rows ({bands.num_bands} bands)")
                special[name] = MixedDimEmbedding(bands, widths, embedding_dim, name, tail_rows=config.bands.tail_rows)
            else:
                whole.setdefault(config.dims.get(name, embedding_dim), {})[name] = vocabulary
        self.special = nn.ModuleDict(special)
        self.special_vocabularies = nn.ModuleDict({name: vocabularies[name] for name in special})
        self.group_features = {f"w{width}": list(group) for width, group in whole.items()}
        self.groups = nn.ModuleDict({f"w{width}": tables(group, width) for width, group in whole.items()})
        self.projections = nn.ModuleDict()
        for width, group in whole.items():
            for name in group if width != embedding_dim else ():
                projection = nn.Linear(width, embedding_dim, bias=False)
                nn.init.normal_(projection.weight, std=width**-0.5)  # outputs start at the rows' scale
                self.projections[name] = projection

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        jagged = features.to_dict()
        pooled: dict[str, torch.Tensor] = {}
        for key, group in self.groups.items():
            names = self.group_features[key]
            out = group(KeyedJaggedTensor.from_jt_dict({name: jagged[name] for name in names}))
            for name in names:
                pooled[name] = self.projections[name](out[name]) if name in self.projections else out[name]
        for name, table in self.special.items():
            rows = self.special_vocabularies[name](jagged[name].values())
            pooled[name] = table.pooled(rows, jagged[name].lengths())
        values = torch.cat([pooled[name] for name in self.feature_names], dim=1)  # (B, F * d)
        return KeyedTensor(keys=self.feature_names, length_per_key=[self.embedding_dim] * len(self.feature_names),
                           values=values)

    def table_bytes(self) -> int:
        """Bytes of the tables: weights (the fused engine's included), projections, band and cluster maps."""
        special = [*self.special.parameters(), *self.special.buffers(), *self.projections.parameters()]
        return _bytes(special) + sum(table_bytes(group) for group in self.groups.values())


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def table_bytes(module: nn.Module) -> int:
    """Bytes of every embedding table in ``module`` (a model or part of one), projections and row maps included.

    Vocabularies (id -> row) and optimizer state are left out: every sizing of a feature has the
    same ones. A uniform d-wide table of R rows counts R * d * 4 bytes (fp32).
    """
    if isinstance(module, SizedPooledEmbeddings):
        return module.table_bytes()
    if isinstance(module, FusedPooledEmbeddings):
        return _bytes(module.fused_parameters())
    if isinstance(module, (MixedDimEmbedding, ResEmbedding)):
        return _bytes([*module.parameters(), *module.buffers()])
    if isinstance(module, (EmbeddingBagCollection, EmbeddingCollection)):
        return _bytes(list(module.parameters()))
    return sum(table_bytes(child) for child in module.children())
