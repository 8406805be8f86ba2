"""Tests for terarec.features.mixing: the one 64-bit mixer and the cross folds on it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from terarec.features import mixing
from terarec.features.hashing import hash_ints
from terarec.features.mixing import fold_ids, fold_lists, mix64, slot_seed, splitmix64


def test_fold_is_splitmix_of_state_xor_id_starting_from_the_slot_seed() -> None:
    a = hash_ints(np.array([1, 2, 3]), "a")
    b = hash_ints(np.array([4, 5, 6]), "b")
    first = splitmix64(np.full(3, slot_seed("x"), dtype=np.uint64) ^ a.view(np.uint64))
    expected = splitmix64(first ^ b.view(np.uint64)).view(np.int64)
    np.testing.assert_array_equal(fold_ids("x", [a, b]), expected)


@pytest.mark.parametrize("grouped", [True, False])
def test_fold_lists_matches_a_per_row_fold(grouped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # fold_lists has two ragged paths: a matrix per distinct length, and a pass per position.
    if not grouped:
        monkeypatch.setattr(mixing, "_MAX_GROUPED_POSITIONS", 0)
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 9, 200)
    element_ids = rng.integers(-(2**63), 2**63 - 1, int(lengths.sum()), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for ordered in (True, False):
        keys = fold_lists("s", element_ids, lengths, ordered=ordered)
        for row in range(0, 200, 7):
            values = element_ids[starts[row] : starts[row] + lengths[row]]
            values = values if ordered else np.sort(values)
            expected = fold_ids("s", [np.array([lengths[row]])] + [np.array([v]) for v in values])[0]
            assert keys[row] == expected



# ----------------------------------------------------------------------------- pinned values
# Cross ids and the managed vocabulary's admission are stored in prepared datasets and
# checkpoints; these values were computed by the code before the mixer was shared.


def test_mix64_is_the_finaliser_and_splitmix64_adds_the_golden_gamma_first() -> None:
    assert int(splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF  # Vigna, seed 0
    assert int(splitmix64(np.array([1], dtype=np.uint64))[0]) == 0x910A2DEC89025CC1
    assert int(mix64(np.array([1], dtype=np.uint64))[0]) == 0x5692161D100B05E5
    values = np.array([0, 5, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(splitmix64(values), mix64(values + mixing.GOLDEN))


def test_mix64_in_place_with_scratch_equals_the_copying_call() -> None:
    values = np.arange(1000, dtype=np.uint64) * np.uint64(0x12345)
    expected = mix64(values)
    scratch = np.empty_like(values)
    assert mix64(values, out=values, scratch=scratch) is values
    np.testing.assert_array_equal(values, expected)


def test_mix64_is_a_bijection_on_a_sample() -> None:
    values = np.random.default_rng(0).integers(0, 2**63, 100_000, dtype=np.int64).view(np.uint64)
    assert np.unique(mix64(values)).size == np.unique(values).size


def test_fold_pinned_values() -> None:
    assert fold_ids("x", [np.array([1, -2, 3]), np.array([4, 5, -(2**63)])]).tolist() == [
        1799299718865763934, -351648041474781429, -666047023268570461,
    ]
    assert fold_lists("team", np.array([3, 1, 2, 7, 7]), np.array([3, 0, 2]), ordered=False).tolist() == [
        4840975437168374887, -4100161422356904505, -1518683886128489827,
    ]


def test_slot_seed_is_blake2b_of_the_name() -> None:
    digest = hashlib.blake2b(b"item_id", digest_size=8).digest()
    assert slot_seed("item_id") == np.uint64(int.from_bytes(digest, "little"))
