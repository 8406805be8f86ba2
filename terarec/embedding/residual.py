"""Res-embedding: an item's vector is the centre of its interest cluster plus a small, penalised residual.

Zhou et al., "Res-embedding for Deep Learning Based Click-Through Rate Prediction Modeling"
(arXiv:1906.10304, DLP-KDD 2019) show that CTR models generalise better when the embeddings
of items in one interest domain stay close. Their decomposition of the embedding matrix,
written here in matrix form, is

    E = W C + R,        loss = task loss + lambda * ||R||^2

C: central embeddings, W: each item's weights over them (from an item interest graph built
from user behaviour), R: the residuals, kept small by the L2 term. Here W is a hard
assignment: row i of W is one-hot a_i on the item's cluster, so e_i = C[cluster_i] + r_i.
The paper derives W from the graph by averaging / GCN / attention; a hard assignment is the
average-over-a-partition case and needs no graph at serving time (one int per item).

Clusters (``cooccurrence_clusters``) come from item co-occurrence within a window of user
histories: a symmetric sparse count matrix A, its normalised form (I + D^-1/2 A D^-1/2) / 2,
a low-rank spectral embedding of it (randomised SVD, seeded), rows scaled to unit length and
k-means (Ng, Jordan and Weiss 2001 spectral clustering). Items that never co-occur with any
other item (and the vocabulary's default row 0) have no evidence of an interest domain: they
get ``NO_CLUSTER`` and, in ``ResEmbedding``, share one extra "cold" centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils.extmath import randomized_svd
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from terarec.embedding.collection import sum_pooled_tables
from terarec.embedding.exact_vocabulary import DEFAULT_ROW, ExactVocabulary

NO_CLUSTER = -1
# Above this many items k-means runs in mini-batches (full Lloyd passes get slow).
MINIBATCH_KMEANS_ITEMS = 50_000

Histories = tuple[np.ndarray, np.ndarray] | Sequence[np.ndarray]


# ----------------------------------------------------------------------------- clusters


def _values_and_lengths(histories: Histories) -> tuple[np.ndarray, np.ndarray]:
    """Flat item rows and per-history lengths from (values, lengths) or a list of arrays."""
    if isinstance(histories, tuple) and len(histories) == 2 and np.ndim(histories[0]) == np.ndim(histories[1]) == 1:
        values, lengths = (np.asarray(part, dtype=np.int64) for part in histories)
        if lengths.sum() != values.size:
            raise ValueError(f"histories: lengths sum to {lengths.sum()} but there are {values.size} values")
        return values, lengths
    arrays = [np.asarray(history, dtype=np.int64).ravel() for history in histories]
    lengths = np.array([array.size for array in arrays], dtype=np.int64)
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return values, lengths


def cooccurrence_matrix(histories: Histories, num_items: int, window: int = 5) -> sp.csr_matrix:
    """Symmetric counts of item pairs at most ``window`` positions apart in one history.

    A[i, j] is the number of times i and j appear within ``window`` steps of each other in
    the same history (each close pair counted once per occurrence, both directions). Pairs of
    an item with itself and pairs with the default row 0 are left out.

    Args:
        histories: (values, lengths) of item rows, or a list of per-user arrays of item rows.
        num_items: table rows (items are rows 0..num_items-1).
        window: largest distance between two positions that counts as co-occurring (>= 1).
    """
    if window < 1:
        raise ValueError(f"cooccurrence_matrix: window must be >= 1, got {window}")
    values, lengths = _values_and_lengths(histories)
    if values.size and (values.min() < 0 or values.max() >= num_items):
        raise ValueError(
            f"cooccurrence_matrix: item rows must be in [0, {num_items}), got [{values.min()}, {values.max()}]"
        )
    history = np.repeat(np.arange(lengths.size), lengths)
    position = np.arange(values.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    remaining = lengths[history] - position - 1  # positions after this one in its history
    firsts, seconds = [], []
    for distance in range(1, window + 1):
        start = np.flatnonzero(remaining >= distance)
        if start.size == 0:
            break
        first, second = values[start], values[start + distance]
        keep = (first != second) & (first != DEFAULT_ROW) & (second != DEFAULT_ROW)
        firsts.append(first[keep])
        seconds.append(second[keep])
    rows = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    cols = np.concatenate(seconds) if seconds else np.zeros(0, np.int64)
    pairs = sp.coo_matrix((np.ones(rows.size, np.float64), (rows, cols)), shape=(num_items, num_items))
    return (pairs + pairs.T).tocsr()  # duplicates summed


def cooccurrence_clusters(
    histories: Histories,
    num_items: int,
    num_clusters: int,
    window: int = 5,
    seed: int = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Interest cluster of every item row, from co-occurrence in user histories (seeded, deterministic).

    Spectral clustering of the co-occurrence graph: the top ``rank`` eigenvectors of
    (I + D^-1/2 A D^-1/2) / 2 (randomised SVD, over the items that co-occur at all), rows
    normalised, k-means into ``num_clusters``.

    Args:
        histories: (values, lengths) of item rows, or a list of per-user arrays of item rows.
        num_items: table rows.
        num_clusters: k-means clusters (fewer if fewer items co-occur at all).
        window: co-occurrence window (``cooccurrence_matrix``).
        seed: seeds the SVD and k-means; the same inputs and seed give the same clusters.
        rank: spectral embedding size (default ``num_clusters``).

    Returns:
        (num_items,) int64 cluster ids in [0, num_clusters), ``NO_CLUSTER`` (-1) for rows that
        co-occur with nothing (always row 0, the default row).

    Example:
        >>> cooccurrence_clusters([np.array([1, 2, 1, 2]), np.array([3, 4, 3])], 5, 2).tolist()
        [-1, 1, 1, 0, 0]
    """
    if num_clusters < 1:
        raise ValueError(f"cooccurrence_clusters: num_clusters must be >= 1, got {num_clusters}")
    adjacency = cooccurrence_matrix(histories, num_items, window)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    linked = np.flatnonzero(degree > 0)
    clusters = np.full(num_items, NO_CLUSTER, dtype=np.int64)
    if linked.size <= num_clusters:
        clusters[linked] = np.arange(linked.size)
        return clusters
    scale = sp.diags(degree[linked] ** -0.5)
    # Lazy form (I + D^-1/2 A D^-1/2) / 2: positive semi-definite, so its top singular vectors are
    # the top eigenvectors (the smooth, cluster-indicating ones), not those of eigenvalues near -1
    # that bipartite-like pairs of items produce.
    normalised = ((sp.identity(linked.size) + scale @ adjacency[linked][:, linked] @ scale) / 2).tocsr()
    components = min(rank or num_clusters, linked.size - 1)
    vectors, _, _ = randomized_svd(normalised, components, random_state=seed)  # (n, rank)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if linked.size > MINIBATCH_KMEANS_ITEMS:
        kmeans = MiniBatchKMeans(num_clusters, random_state=seed, n_init=3, batch_size=4096)
    else:
        kmeans = KMeans(num_clusters, random_state=seed, n_init=4)
    clusters[linked] = kmeans.fit_predict(vectors)
    return clusters


# ----------------------------------------------------------------------------- the table


class ResEmbedding(nn.Module):
    """Item table e_row = C[cluster[row]] + R[row], with lambda * ||R||^2 as ``regularization()``.

    Two TorchRec tables in one EmbeddingBagCollection: the centres (num_clusters + 1 rows; the
    last is the shared centre of ``NO_CLUSTER`` rows) read through ``f"{feature_name}@centre"``
    and the residuals (one row per table row) through ``f"{feature_name}@residual"``.

    The penalty covers, with ``penalty_scope="batch"`` (default), the distinct rows looked up
    in training mode since the last ``regularization()`` call: cost and gradient stay sparse,
    as for the task loss (the mini-batch regularisation of DIN, by the same group, without its
    frequency weights). ``"table"`` penalises every residual row, the paper's ||R||^2; use it
    too when the model reads the whole table through ``weight`` (full softmax), which is not
    tracked.

    Args:
        cluster_of_row: (num_rows,) cluster id per row, ``NO_CLUSTER`` allowed.
        embedding_dim: row width d.
        residual_l2: lambda.
        num_clusters: centres (default: the largest cluster id + 1).
        feature_name: KJT key for ``forward_features`` / the wrappers.
        centre_init_std: std of the initial centres.
        residual_init_std: std of the initial residuals (small: items start near their centre).
        penalty_scope: "batch" or "table".
        recluster_every: 0 = clusters fixed; n > 0 = ``end_epoch`` re-clusters every n epochs
            (``recluster``).
        seed: seeds the re-clustering's k-means.

    Example:
        >>> emb = ResEmbedding(np.array([-1, 0, 0, 1]), embedding_dim=8)
        >>> emb(torch.tensor([1, 2, 3])).shape
        torch.Size([3, 8])
    """

    def __init__(
        self,
        cluster_of_row: np.ndarray | torch.Tensor,
        embedding_dim: int,
        residual_l2: float = 1e-4,
        num_clusters: int | None = None,
        feature_name: str = "item_id",
        centre_init_std: float = 0.02,
        residual_init_std: float = 1e-3,
        penalty_scope: Literal["batch", "table"] = "batch",
        recluster_every: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        clusters = torch.as_tensor(np.asarray(cluster_of_row, dtype=np.int64))
        if clusters.ndim != 1 or clusters.numel() == 0:
            raise ValueError("ResEmbedding: cluster_of_row must be a non-empty 1-d array")
        num_clusters = int(clusters.max().item()) + 1 if num_clusters is None else num_clusters
        if clusters.min() < NO_CLUSTER or clusters.max() >= num_clusters:
            raise ValueError(
                f"ResEmbedding: cluster ids must be in [{NO_CLUSTER}, {num_clusters}), "
                f"got [{int(clusters.min())}, {int(clusters.max())}]"
            )
        if penalty_scope not in ("batch", "table"):
            raise ValueError(f"ResEmbedding: penalty_scope must be 'batch' or 'table', got {penalty_scope!r}")
        self.feature_name = feature_name
        self.embedding_dim = embedding_dim
        self.num_clusters = num_clusters
        self.residual_l2 = residual_l2
        self.penalty_scope = penalty_scope
        self.recluster_every, self.seed = recluster_every, seed
        # NO_CLUSTER rows read the extra centre at index num_clusters.
        self.register_buffer("centre_of_row", torch.where(clusters == NO_CLUSTER, num_clusters, clusters))
        self.keys = [f"{feature_name}@centre", f"{feature_name}@residual"]
        self.tables = sum_pooled_tables(
            [(key, embedding_dim, size) for key, size in zip(self.keys, (num_clusters + 1, clusters.numel()))]
        )
        nn.init.normal_(self.centres, std=centre_init_std)
        nn.init.normal_(self.residuals, std=residual_init_std)
        self._pending_rows: list[torch.Tensor] = []

    @classmethod
    def from_histories(
        cls,
        histories: Histories,
        num_rows: int,
        num_clusters: int,
        embedding_dim: int,
        window: int = 5,
        seed: int = 0,
        **kwargs,
    ) -> ResEmbedding:
        """Clusters from ``cooccurrence_clusters`` of training histories, then the table."""
        clusters = cooccurrence_clusters(histories, num_rows, num_clusters, window, seed)
        return cls(clusters, embedding_dim, num_clusters=num_clusters, **kwargs)

    @property
    def centres(self) -> torch.Tensor:
        """(num_clusters + 1, d); the last row is the centre of rows without a cluster."""
        return self.tables.embedding_bags[f"t_{self.keys[0]}"].weight

    @property
    def residuals(self) -> torch.Tensor:
        """(num_rows, d)."""
        return self.tables.embedding_bags[f"t_{self.keys[1]}"].weight

    @property
    def num_rows(self) -> int:
        return int(self.centre_of_row.numel())

    @property
    def weight(self) -> torch.Tensor:
        """The whole table C[cluster] + R, (num_rows, d), differentiable (rows not tracked for the penalty)."""
        return self.centres[self.centre_of_row] + self.residuals

    def pooled(self, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sum of e_row over each bag: rows (N,), lengths (B,) -> (B, d)."""
        if self.training and self.penalty_scope == "batch":
            self._pending_rows.append(rows.detach())
        features = KeyedJaggedTensor(
            keys=self.keys,
            values=torch.cat([self.centre_of_row[rows], rows]),
            lengths=torch.cat([lengths, lengths]),
            stride=lengths.numel(),
        )
        centre_sums, residual_sums = self.tables(features).values().split(self.embedding_dim, dim=1)
        return centre_sums + residual_sums

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """centre[cluster[rows]] + residual[rows]: rows (...,) -> (..., d)."""
        flat = rows.reshape(-1)
        return self.pooled(flat, torch.ones_like(flat)).reshape(*rows.shape, self.embedding_dim)

    @torch.no_grad()
    def recluster(self, seed: int = 0) -> None:
        """Re-partition the clustered rows by k-means on their current embeddings, keeping every embedding.

        The new centre of a cluster is the mean of its rows' e = C[cluster] + R, and each residual
        becomes e - centre, so lookups are unchanged; what changes is which rows the L2 on the
        residuals pulls together from here on. Rows without a cluster keep the cold centre.
        """
        clustered = torch.nonzero(self.centre_of_row < self.num_clusters).squeeze(1)
        if clustered.numel() <= self.num_clusters:
            return
        embeddings = self.weight[clustered]  # (n, d)
        kmeans = KMeans(self.num_clusters, random_state=seed, n_init=1)
        labels = torch.from_numpy(kmeans.fit_predict(embeddings.double().numpy())).long()
        centres = torch.zeros(self.num_clusters, self.embedding_dim, dtype=embeddings.dtype)
        centres.index_add_(0, labels, embeddings)
        centres /= torch.bincount(labels, minlength=self.num_clusters).clamp(min=1).unsqueeze(1).to(embeddings.dtype)
        self.centres[: self.num_clusters] = centres
        self.residuals[clustered] = embeddings - centres[labels]
        self.centre_of_row[clustered] = labels

    def end_epoch(self, epoch: int) -> None:
        """The trainer's call after each training epoch (1-based): re-cluster every ``recluster_every`` epochs."""
        if self.recluster_every and epoch % self.recluster_every == 0:
            self.recluster(self.seed + epoch)

    def regularization(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """lambda * sum of ||r_row||^2 over distinct rows: ``rows`` if given, else per ``penalty_scope``.

        In "batch" scope this consumes the rows recorded since the previous call (zero if none).
        """
        if rows is None and self.penalty_scope == "table":
            return self.residual_l2 * self.residuals.pow(2).sum()
        if rows is None:
            if not self._pending_rows:
                return self.residuals.new_zeros(())
            rows = torch.cat(self._pending_rows)
            self._pending_rows = []
        return self.residual_l2 * self.residuals[torch.unique(rows.reshape(-1))].pow(2).sum()


# ----------------------------------------------------------------------------- drop-in wrapper


class ResSequenceEmbeddings(nn.Module):
    """Res-embedding twin of ``SequenceEmbeddings``: KJT of 64-bit ids -> JaggedTensor, plus ``weight``.

    Args:
        vocabulary: the item vocabulary.
        cluster_of_row: cluster id per table row.
        embedding_dim: row width.
        feature_name: the KJT key looked up.
        **kwargs: passed to ``ResEmbedding``.
    """

    def __init__(
        self,
        vocabulary: ExactVocabulary,
        cluster_of_row: np.ndarray,
        embedding_dim: int,
        feature_name: str = "item_id",
        **kwargs,
    ) -> None:
        super().__init__()
        if len(cluster_of_row) != vocabulary.num_rows:
            raise ValueError(f"ResSequenceEmbeddings: {len(cluster_of_row)} clusters for {vocabulary.num_rows} rows")
        self.feature_name = feature_name
        self.vocabularies = nn.ModuleDict({feature_name: vocabulary})
        self.table = ResEmbedding(cluster_of_row, embedding_dim, feature_name=feature_name, **kwargs)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table (num_rows, d), row 0 being the default row of unknown ids."""
        return self.table.weight

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Table rows of 64-bit ids (0 for unknown ids)."""
        return self.vocabularies[self.feature_name](ids)

    def forward(self, features: KeyedJaggedTensor) -> JaggedTensor:
        jagged = features[self.feature_name]
        return JaggedTensor(values=self.table(self.rows(jagged.values())), lengths=jagged.lengths())
