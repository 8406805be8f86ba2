"""Tests for terarec.eval.binary: AUC, log loss, gAUC and their accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from terarec.eval.binary import BinaryAccumulator, auc, gauc, gauc_with_count, logloss

# ----------------------------------------------------------------------------- AUC


def test_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.35,0.1) ok, (0.35,0.4) wrong, (0.8,0.1) ok, (0.8,0.4) ok -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_perfect_and_inverted() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.0)


def test_auc_ties_count_half() -> None:
    # One pos and one neg tied at 0.5 (half a pair), the other pos above every neg.
    # Pairs: (0.5,0.5)=0.5, (0.5,0.2)=1, (0.9,0.5)=1, (0.9,0.2)=1 -> 3.5/4.
    labels = [1, 0, 1, 0]
    scores = [0.5, 0.5, 0.9, 0.2]
    assert auc(labels, scores) == pytest.approx(3.5 / 4)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    # A constant model has AUC 0.5.
    assert auc([0, 1, 0, 1, 1], [0.3] * 5) == pytest.approx(0.5)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_single_class_raises(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="AUC needs both positive and negative labels"):
        auc(labels, [0.5] * len(labels))


@pytest.mark.parametrize("bad", [2, -1, 0.5])
def test_auc_rejects_non_binary_labels(bad: float) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        auc([0, 1, bad, 0], [0.1, 0.2, 0.3, 0.4])


def test_auc_rejects_length_mismatch_and_nan() -> None:
    with pytest.raises(ValueError, match="same length"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])


def test_auc_accepts_bool_and_torch() -> None:
    labels = torch.tensor([False, False, True, True])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    assert auc(labels, scores) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_random_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    labels = rng.integers(0, 2, n)
    # Coarse rounding produces many ties, correlated with the label.
    scores = np.round(rng.random(n) * 0.7 + 0.3 * labels, 1)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    cont = rng.normal(size=n) + labels
    assert auc(labels, cont) == pytest.approx(roc_auc_score(labels, cont), abs=1e-12)


# ----------------------------------------------------------------------------- log loss


def test_logloss_hand_computed() -> None:
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert logloss([1, 0], [0.8, 0.3]) == pytest.approx(expected)


def test_logloss_clipping_keeps_it_finite() -> None:
    value = logloss([1, 0], [0.0, 1.0], eps=1e-7)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_logloss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 2000)
    probs = np.clip(rng.random(2000) * 0.6 + 0.35 * labels, 0.01, 0.99)
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs, labels=[0, 1]), rel=1e-9)


def test_logloss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3"):
        logloss([0, 3], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss([0, 1], [0.1, 2.5])  # looks like a logit
    with pytest.raises(ValueError, match="eps"):
        logloss([0, 1], [0.1, 0.2], eps=0.0)


# ----------------------------------------------------------------------------- gAUC


def test_gauc_hand_computed_two_users() -> None:
    # User 1: pos {0.1, 0.9} vs neg {0.2} -> AUC 0.5, 3 impressions.
    # User 2: pos {0.4} vs neg {0.3}      -> AUC 1.0, 2 impressions.
    users = [1, 2, 1, 2, 1]
    labels = [0, 0, 1, 1, 1]
    scores = [0.2, 0.3, 0.1, 0.4, 0.9]
    value, n_users = gauc_with_count(users, labels, scores)
    assert value == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)
    assert n_users == 2
    assert gauc(users, labels, scores) == pytest.approx(0.7)


def test_gauc_skips_single_class_users() -> None:
    # User 9 only has positives and user 5 only negatives: both skipped.
    users = [1, 1, 9, 9, 9, 5]
    labels = [0, 1, 1, 1, 1, 0]
    scores = [0.2, 0.1, 0.9, 0.9, 0.1, 0.5]
    value, n_users = gauc_with_count(users, labels, scores)
    assert n_users == 1
    assert value == pytest.approx(0.0)


def test_gauc_no_valid_user_is_nan() -> None:
    value, n_users = gauc_with_count([1, 2], [1, 0], [0.3, 0.4])
    assert n_users == 0
    assert math.isnan(value)


def test_gauc_ties_inside_user_only() -> None:
    # Equal scores across different users must not be treated as ties with each other.
    users = [1, 1, 2, 2]
    labels = [0, 1, 0, 1]
    scores = [0.5, 0.5, 0.5, 0.7]
    assert gauc(users, labels, scores) == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)


def test_gauc_string_user_ids() -> None:
    users = np.array(["bob", "amy", "bob", "amy", "bob"])
    labels = [0, 0, 1, 1, 1]
    scores = [0.2, 0.3, 0.1, 0.4, 0.9]
    assert gauc_with_count(users, labels, scores) == (pytest.approx(0.7), 2)


def _gauc_reference(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    num = den = 0.0
    used = 0
    for u in np.unique(users):
        m = users == u
        if labels[m].min() == labels[m].max():
            continue
        num += m.sum() * roc_auc_score(labels[m], scores[m])
        den += m.sum()
        used += 1
    return num / den, used


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gauc_matches_per_user_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    users = rng.integers(0, 300, n) * 7 + 11  # sparse, non-contiguous ids
    labels = (rng.random(n) < 0.2).astype(np.int64)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # many ties inside users
    # Make sure some users have a single class and will be skipped.
    labels[users == users[0]] = 1
    expected, expected_used = _gauc_reference(users, labels, scores)
    value, used = gauc_with_count(users, labels, scores)
    assert used == expected_used
    assert 0 < used < len(np.unique(users))
    assert value == pytest.approx(expected, abs=1e-12)
    # Shuffling the rows does not change the result.
    perm = rng.permutation(n)
    assert gauc(users[perm], labels[perm], scores[perm]) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- accumulator


def test_binary_accumulator_equals_one_shot() -> None:
    rng = np.random.default_rng(2)
    n = 1000
    users = rng.integers(0, 50, n)
    labels = rng.integers(0, 2, n)
    probs = np.clip(np.round(rng.random(n) * 0.7 + 0.25 * labels, 2), 0.0, 1.0)

    acc = BinaryAccumulator()
    acc.update(torch.from_numpy(labels[:400]), torch.from_numpy(probs[:400]), torch.from_numpy(users[:400]))
    acc.update(labels[400:], probs[400:], users[400:])
    out = acc.compute()
    assert set(out) == {"auc", "logloss", "gauc", "count"}
    assert out["count"] == n
    assert out["auc"] == pytest.approx(auc(labels, probs), abs=1e-12)
    assert out["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert out["logloss"] == pytest.approx(logloss(labels, probs), abs=1e-12)
    assert out["gauc"] == pytest.approx(gauc(users, labels, probs), abs=1e-12)


def test_binary_accumulator_without_users() -> None:
    acc = BinaryAccumulator()
    acc.update([0, 1], [0.1, 0.8])
    acc.update([0, 1], [0.4, 0.35])
    out = acc.compute()
    assert set(out) == {"auc", "logloss", "count"}
    assert out["auc"] == pytest.approx(0.75)
    assert out["count"] == 4
    with pytest.raises(ValueError, match="every update or in none"):
        acc.update([0], [0.5], user_ids=[1])


def test_binary_accumulator_errors() -> None:
    with pytest.raises(ValueError, match="before any update"):
        BinaryAccumulator().compute()
    acc = BinaryAccumulator()
    acc.update([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="AUC needs both positive and negative labels"):
        acc.compute()
