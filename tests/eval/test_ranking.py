"""Tests for terarec.eval.ranking: target ranks over the catalogue, HR, NDCG, MRR and their accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terarec.eval.ranking import RankingAccumulator, hit_rate_at_k, mrr, ndcg_at_k, rank_of_targets, ranking_metrics

# ----------------------------------------------------------------------------- ranks


def test_rank_hand_example() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7]])
    ranks = rank_of_targets(scores, torch.tensor([2]))
    assert ranks.tolist() == [2]
    assert ranks.dtype == np.int64


def test_rank_accepts_numpy_and_multiple_rows() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.7],
            [0.1, 0.2, 0.3, 0.4],
            [0.4, 0.3, 0.2, 0.1],
        ]
    )
    assert rank_of_targets(scores, np.array([2, 0, 0])).tolist() == [2, 3, 0]


def test_rank_ties_are_pessimistic() -> None:
    scores = torch.zeros(2, 5)  # constant model
    assert rank_of_targets(scores, torch.tensor([0, 3])).tolist() == [4, 4]
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    # 1 item strictly greater + 2 others tied -> rank 3.
    assert rank_of_targets(scores, torch.tensor([0])).tolist() == [3]


def test_rank_infinite_scores() -> None:
    scores = torch.tensor([[-math.inf, -math.inf, 0.0, -math.inf]])
    assert rank_of_targets(scores, torch.tensor([0])).tolist() == [3]  # a -inf target is last
    assert rank_of_targets(scores, torch.tensor([2])).tolist() == [0]  # -inf items never rank above


def test_rank_matches_bruteforce_random() -> None:
    rng = np.random.default_rng(0)
    b, n = 16, 50
    scores = np.round(rng.random((b, n)), 1)  # many ties
    targets = rng.integers(0, n, b)
    got = rank_of_targets(torch.from_numpy(scores), torch.from_numpy(targets))
    for i in range(b):
        t = scores[i, targets[i]]
        assert got[i] == sum(1 for j in range(n) if j != targets[i] and scores[i, j] >= t), i


def test_rank_input_validation() -> None:
    scores = torch.rand(2, 4)
    with pytest.raises(ValueError, match="targets"):
        rank_of_targets(scores, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="one entry per row"):
        rank_of_targets(scores, torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        rank_of_targets(torch.full((1, 3), float("nan")), torch.tensor([0]))


# ----------------------------------------------------------------------------- HR / NDCG / MRR


def test_hr_ndcg_mrr_hand_values() -> None:
    ranks = np.array([0, 3, 20])
    assert hit_rate_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 4 + 1 / 21) / 3)
    assert mrr(ranks, k=10) == pytest.approx((1 + 1 / 4) / 3)
    # Cutoff boundary: rank k-1 counts, rank k does not.
    assert hit_rate_at_k([3, 4], 4) == pytest.approx(0.5)
    assert ndcg_at_k([4], 4) == 0.0


def test_ranking_metrics_keys_and_values() -> None:
    ranks = [0, 3, 20]
    out = ranking_metrics(ranks, ks=(10, 50))
    assert list(out) == ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"]
    assert out["hr@10"] == pytest.approx(2 / 3)
    assert out["hr@50"] == pytest.approx(1.0)
    assert out["ndcg@50"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(22)) / 3)
    assert out["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 21) / 3)
    assert set(ranking_metrics(ranks)) == {
        "hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr",
    }


def test_ranking_metric_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        hit_rate_at_k([], 10)
    with pytest.raises(ValueError, match="non-negative"):
        mrr([-1, 2])
    with pytest.raises(ValueError, match="k"):
        ndcg_at_k([1], 0)


# ----------------------------------------------------------------------------- accumulators


def test_ranking_accumulator_equals_one_shot() -> None:
    rng = np.random.default_rng(1)
    b, n = 12, 300
    scores = torch.from_numpy(np.round(rng.random((b, n)), 2))
    targets = torch.from_numpy(rng.integers(0, n, b))
    ks = (1, 10, 50)
    expected = ranking_metrics(rank_of_targets(scores, targets), ks)

    acc = RankingAccumulator(ks=ks)
    split = 5
    acc.update(scores[:split], targets[:split])
    acc.add_ranks(rank_of_targets(scores[split:], targets[split:]))
    assert acc.count == b
    got = acc.compute()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()

