"""Tests for terarec.embedding.residual: co-occurrence clusters and Res-embedding (centre + residual)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.residual import (
    NO_CLUSTER,
    ResEmbedding,
    ResSequenceEmbeddings,
    cooccurrence_clusters,
    cooccurrence_matrix,
)


def _planted_histories(
    groups: list[np.ndarray], num_users: int, length: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's history draws only from one group: items co-occur only within their group."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, size=num_users)
    values = np.concatenate([rng.choice(groups[user % len(groups)], size=n) for user, n in enumerate(lengths)])
    return values, lengths


# ----------------------------------------------------------------------------- co-occurrence


def test_cooccurrence_counts_pairs_within_the_window_of_one_history() -> None:
    histories = [np.array([1, 2, 3, 1]), np.array([4, 2])]
    matrix = cooccurrence_matrix(histories, num_items=5, window=2).toarray()
    assert (matrix == matrix.T).all()
    assert np.diag(matrix).sum() == 0
    # history 1 pairs within distance 2: (1,2) (2,3) (3,1) (1,3) (2,1); history 2: (4,2)
    assert matrix[1, 2] == 2 and matrix[1, 3] == 2 and matrix[2, 3] == 1 and matrix[2, 4] == 1
    assert matrix[1, 4] == 0 and matrix[3, 4] == 0  # different histories never pair
    window_one = cooccurrence_matrix(histories, num_items=5, window=1).toarray()
    assert window_one[1, 3] == 1 and window_one[1, 2] == 1  # only adjacent pairs


def test_cooccurrence_accepts_values_and_lengths_and_skips_the_default_row() -> None:
    values, lengths = np.array([0, 1, 2, 0, 2, 1]), np.array([3, 3])
    flat = cooccurrence_matrix((values, lengths), num_items=3, window=3).toarray()
    listed = cooccurrence_matrix([values[:3], values[3:]], num_items=3, window=3).toarray()
    assert (flat == listed).all()
    assert flat[0].sum() == 0 and flat[:, 0].sum() == 0
    with pytest.raises(ValueError, match=r"item rows must be in \[0, 2\)"):
        cooccurrence_matrix((values, lengths), num_items=2)
    with pytest.raises(ValueError, match="lengths sum to 5"):
        cooccurrence_matrix((values, np.array([2, 3])), num_items=3)


def test_clusters_recover_a_planted_partition() -> None:
    groups = [np.arange(1, 21), np.arange(21, 41), np.arange(41, 61)]
    histories = _planted_histories(groups, num_users=300, length=12, seed=0)
    clusters = cooccurrence_clusters(histories, num_items=62, num_clusters=3, window=4, seed=0)
    assert clusters.shape == (62,) and clusters.dtype == np.int64
    assert clusters[0] == NO_CLUSTER  # the default row
    assert clusters[61] == NO_CLUSTER  # never seen in a history
    labels = [set(clusters[group].tolist()) for group in groups]
    assert all(len(label) == 1 for label in labels)  # each group in one cluster
    assert len(set.union(*labels)) == 3  # and the groups in different clusters


def test_clusters_recover_groups_despite_cross_group_noise() -> None:
    groups = [np.arange(1, 31), np.arange(31, 61)]
    values, lengths = _planted_histories(groups, num_users=400, length=10, seed=1)
    rng = np.random.default_rng(2)
    noisy = rng.random(values.size) < 0.03  # 3% of positions jump to a random item of either group
    values = np.where(noisy, rng.integers(1, 61, size=values.size), values)
    clusters = cooccurrence_clusters((values, lengths), num_items=61, num_clusters=2, window=3, seed=0)
    first, second = clusters[groups[0]], clusters[groups[1]]
    assert len(set(first.tolist())) == 1 and len(set(second.tolist())) == 1 and first[0] != second[0]


def test_clusters_of_item_pairs_are_found() -> None:
    # Each pair alternates: a bipartite graph per pair, whose eigenvalue -1 must not crowd out the +1 ones.
    histories = [np.array([1, 2, 1, 2]), np.array([3, 4, 3]), np.array([5, 6, 5, 6, 5])]
    clusters = cooccurrence_clusters(histories, num_items=7, num_clusters=3, window=1, seed=0)
    assert clusters[0] == NO_CLUSTER
    assert clusters[1] == clusters[2] and clusters[3] == clusters[4] and clusters[5] == clusters[6]
    assert len({clusters[1], clusters[3], clusters[5]}) == 3


def test_clusters_are_deterministic_under_a_seed() -> None:
    rng = np.random.default_rng(3)
    histories = [rng.integers(1, 200, size=rng.integers(2, 30)) for _ in range(500)]
    first = cooccurrence_clusters(histories, num_items=200, num_clusters=8, window=5, seed=7)
    second = cooccurrence_clusters(histories, num_items=200, num_clusters=8, window=5, seed=7)
    assert (first == second).all()
    assert set(first[1:].tolist()) <= set(range(8))


def test_fewer_linked_items_than_clusters_get_one_cluster_each() -> None:
    clusters = cooccurrence_clusters([np.array([1, 2])], num_items=4, num_clusters=5)
    assert clusters.tolist() == [NO_CLUSTER, 0, 1, NO_CLUSTER]


# ----------------------------------------------------------------------------- the table


def test_forward_is_centre_of_the_cluster_plus_the_residual() -> None:
    torch.manual_seed(0)
    clusters = np.array([NO_CLUSTER, 0, 0, 1, 1, 1, NO_CLUSTER])
    emb = ResEmbedding(clusters, embedding_dim=8, num_clusters=2)
    assert tuple(emb.centres.shape) == (3, 8) and tuple(emb.residuals.shape) == (7, 8)
    rows = torch.tensor([[1, 2, 3], [6, 0, 5]])
    out = emb(rows)
    assert out.shape == (2, 3, 8)
    centre_index = torch.tensor([[0, 0, 1], [2, 2, 1]])  # NO_CLUSTER rows read the extra centre 2
    torch.testing.assert_close(out, emb.centres[centre_index] + emb.residuals[rows])
    torch.testing.assert_close(emb.weight[rows], out)


def test_items_of_one_cluster_share_the_centre() -> None:
    emb = ResEmbedding(np.array([NO_CLUSTER, 0, 0, 0, 1, 1]), embedding_dim=4, residual_init_std=0.0)
    out = emb(torch.arange(6))
    assert torch.equal(out[1], out[2]) and torch.equal(out[2], out[3])
    assert torch.equal(out[4], out[5])
    assert not torch.equal(out[1], out[4])
    with torch.no_grad():
        emb.centres[0] += 1.0  # moving a centre moves all of its items together
    moved = emb(torch.arange(6))
    torch.testing.assert_close(moved[1:4] - out[1:4], torch.ones(3, 4))
    torch.testing.assert_close(moved[4:], out[4:])


def test_pooled_sums_rows_of_each_bag() -> None:
    emb = ResEmbedding(np.array([NO_CLUSTER, 0, 1, 1]), embedding_dim=4)
    rows = torch.tensor([1, 2, 3, 3])
    pooled = emb.pooled(rows, torch.tensor([2, 0, 2]))
    single = emb(rows)
    torch.testing.assert_close(pooled, torch.stack([single[:2].sum(0), torch.zeros(4), single[2:].sum(0)]))


def test_penalty_is_positive_and_gradient_descent_shrinks_the_residuals() -> None:
    torch.manual_seed(0)
    emb = ResEmbedding(np.array([NO_CLUSTER, 0, 0, 1]), embedding_dim=8, residual_l2=0.5, residual_init_std=0.1)
    centres_before = emb.centres.detach().clone()
    norm_before = emb.residuals.detach().norm(dim=1)
    optimizer = torch.optim.SGD(emb.parameters(), lr=0.1)
    penalties = []
    for _ in range(20):
        emb(torch.tensor([1, 3]))
        penalty = emb.regularization()
        penalties.append(penalty.item())
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert penalties[0] > 0
    assert penalties[-1] < 0.5 * penalties[0]
    norm_after = emb.residuals.detach().norm(dim=1)
    assert (norm_after[[1, 3]] < 0.5 * norm_before[[1, 3]]).all()  # rows looked up shrink
    torch.testing.assert_close(norm_after[[0, 2]], norm_before[[0, 2]])  # rows not looked up are untouched
    torch.testing.assert_close(emb.centres.detach(), centres_before)  # the penalty leaves centres alone


def test_penalty_scopes() -> None:
    torch.manual_seed(0)
    emb = ResEmbedding(np.array([0, 0, 1, 1]), embedding_dim=4, residual_l2=2.0, residual_init_std=0.1)
    residuals = emb.residuals.detach()
    emb(torch.tensor([1, 1, 3]))
    emb(torch.tensor([3]))
    torch.testing.assert_close(emb.regularization(), 2.0 * residuals[[1, 3]].pow(2).sum())  # distinct rows once
    assert emb.regularization().item() == 0.0  # consumed
    torch.testing.assert_close(emb.regularization(torch.tensor([0, 2])), 2.0 * residuals[[0, 2]].pow(2).sum())
    emb.eval()
    emb(torch.tensor([2]))
    assert emb.regularization().item() == 0.0  # lookups outside training are not recorded
    table = ResEmbedding(np.array([0, 0, 1, 1]), embedding_dim=4, residual_l2=2.0, penalty_scope="table")
    torch.testing.assert_close(table.regularization(), 2.0 * table.residuals.detach().pow(2).sum())


def test_bad_cluster_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="cluster ids must be in"):
        ResEmbedding(np.array([0, 3]), embedding_dim=4, num_clusters=2)
    with pytest.raises(ValueError, match="penalty_scope"):
        ResEmbedding(np.array([0, 1]), embedding_dim=4, penalty_scope="rows")  # type: ignore[arg-type]


def test_from_histories_is_deterministic_under_a_seed() -> None:
    groups = [np.arange(1, 11), np.arange(11, 21)]
    histories = _planted_histories(groups, num_users=100, length=8, seed=4)
    tables = []
    for _ in range(2):
        torch.manual_seed(0)
        tables.append(ResEmbedding.from_histories(histories, 21, num_clusters=2, embedding_dim=4, seed=5))
    assert torch.equal(tables[0].centre_of_row, tables[1].centre_of_row)
    torch.testing.assert_close(tables[0].weight, tables[1].weight)
    assert len(set(tables[0].centre_of_row[1:11].tolist())) == 1


# ----------------------------------------------------------------------------- drop-in wrappers


def test_sequence_wrapper_matches_the_sequence_embeddings_interface() -> None:
    vocab = ExactVocabulary(np.array([100, 200, 300]))
    emb = ResSequenceEmbeddings(vocab, np.array([NO_CLUSTER, 0, 0, 1]), embedding_dim=4)
    assert emb.num_rows == 4 and emb.weight.shape == (4, 4)
    assert emb.rows(torch.tensor([300, 5])).tolist() == [3, 0]
    features = KeyedJaggedTensor(keys=["item_id"], values=torch.tensor([100, 200, 300]), lengths=torch.tensor([1, 2]))
    jagged = emb(features)
    assert jagged.lengths().tolist() == [1, 2]
    torch.testing.assert_close(jagged.values(), emb.weight[1:4])


def test_state_dict_carries_the_cluster_map() -> None:
    emb = ResEmbedding(np.array([NO_CLUSTER, 0, 1, 1]), embedding_dim=4)
    other = ResEmbedding(np.array([NO_CLUSTER, 1, 0, 0]), embedding_dim=4)
    other.load_state_dict(emb.state_dict())
    assert other.centre_of_row.tolist() == [2, 0, 1, 1]
    torch.testing.assert_close(other.weight, emb.weight)
