"""Tests for terarec.data.sampling: alias tables, the exact key set, seed trees."""

from __future__ import annotations

import numpy as np

from terarec.data.sampling import KeySet, alias_tables, seeded_rng


def test_alias_tables_are_exact():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(1, 40, rng.integers(1, 6))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        weights = rng.pareto(rng.uniform(0.5, 3.0), bounds[-1]) + 1e-6
        prob, alias = alias_tables(weights, bounds)
        group = np.repeat(np.arange(len(sizes)), sizes)
        assert (group[alias] == group).all() and (prob >= 0).all() and (prob <= 1).all()
        implied = prob / sizes[group]
        np.add.at(implied, alias, (1 - prob) / sizes[group])
        expected = weights / np.bincount(group, weights=weights)[group]
        np.testing.assert_allclose(implied, expected, atol=1e-9)


def test_key_set_is_exact_through_growth() -> None:
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 2**40, 50_000))
    inserted, absent = keys[::2], keys[1::2]
    key_set = KeySet(40, expected=100)  # far too small at first: it must grow
    for piece in np.array_split(inserted, 7):
        key_set.add(piece)
    assert key_set.contains(inserted).all()
    assert not key_set.contains(absent).any()
    assert key_set.contains(inserted[:6].reshape(2, 3)).tolist() == [True] * 6


def test_seeded_rng_nodes_are_the_spawn_tree() -> None:
    spawned = np.random.SeedSequence(7).spawn(3)[2].spawn(2)[1]
    expected = np.random.Generator(np.random.PCG64(spawned)).random(3)
    np.testing.assert_array_equal(seeded_rng(7, 2, 1).random(3), expected)
