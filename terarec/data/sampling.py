"""Sampling tools of the synthetic generators: seed trees, Walker alias tables, an exact vectorised key set.

``seeded_rng(seed, i, k)`` gives the generator of node ``(i, k)`` of a seed's spawn tree, so
any chunk of a data set can be made alone; ``alias_tables`` draws from many discrete
distributions at once in O(1) per draw; ``KeySet`` remembers int64 keys (e.g. clicked
(user, item) pairs) with one gather and compare per lookup.
"""

from __future__ import annotations

import numpy as np

from terarec.features.mixing import GOLDEN, as_int64


def seeded_rng(seed: int, *spawn_key: int) -> np.random.Generator:
    """A generator for one node of the seed tree: ``SeedSequence(seed, spawn_key=spawn_key)``."""
    # SeedSequence(seed, spawn_key=(i, k)) is SeedSequence(seed).spawn(i+1)[i].spawn(k+1)[k]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key)))


def alias_tables(weights: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables for independent groups of slots ``bounds[g] .. bounds[g+1]``, vectorised.

    Drawing slot ``k`` uniformly within a group, then keeping it with probability ``prob[k]``
    or taking ``alias[k]`` (a slot of the same group), samples the group's slots in proportion
    to ``weights``. Built by the sweep construction of Huebschle-Schneider & Sanders (2019)
    written with prefix sums: light slots (scaled weight < 1) are topped up by the first heavy
    slot whose cumulative excess covers the lights' cumulative deficit; each heavy slot keeps
    what it has left and is topped up by the next heavy slot.
    """
    n = len(weights)
    sizes = np.diff(bounds)
    group = np.repeat(np.arange(len(sizes)), sizes)
    mass = np.bincount(group, weights=weights, minlength=len(sizes))
    q = weights * (sizes / mass)[group]  # mean 1 within each group
    heavy = q >= 1.0
    # the largest slot of every group counts as heavy, so each group has one despite rounding
    heavy[np.lexsort((-q, group))[bounds[:-1]]] = True
    offset = np.concatenate([[0.0], np.cumsum(sizes + 1.0)])[:-1][group]  # keeps groups apart
    lights, heavies = np.flatnonzero(~heavy), np.flatnonzero(heavy)
    deficit = 1.0 - q[lights]
    light_group, heavy_group = group[lights], group[heavies]
    # cumulative deficit before each light, cumulative excess through each heavy, within groups
    s_all = np.cumsum(deficit)
    s_group_start = np.concatenate([[0.0], s_all])[np.searchsorted(light_group, light_group, side="left")]
    s_before = np.concatenate([[0.0], s_all])[:-1] - s_group_start
    e_all = np.cumsum(q[heavies] - 1.0)
    e_group_start = np.concatenate([[0.0], e_all])[np.searchsorted(heavy_group, heavy_group, side="left")]
    e_through = e_all - e_group_start
    heavy_key = e_through + offset[heavies]
    # light i is served by the first heavy of its group with excess-through >= deficit-before
    j = np.searchsorted(heavy_key, s_before + offset[lights], side="left")
    last_heavy = np.searchsorted(heavy_group, light_group, side="right") - 1
    j = np.minimum(j, last_heavy)
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    prob[lights] = q[lights]
    alias[lights] = heavies[j]
    # a heavy keeps (excess through it) + 1 - (deficits of the lights served by it and earlier ones)
    light_key = s_before + offset[lights]
    served = np.searchsorted(light_key, heavy_key, side="right")  # lights with key <= heavy key
    first_light = np.searchsorted(light_group, heavy_group, side="left")
    served = np.maximum(served, first_light)
    s_with_start = np.concatenate([[0.0], s_all])
    served_deficit = s_with_start[served] - s_with_start[first_light]
    prob[heavies] = np.clip(e_through + 1.0 - served_deficit, 0.0, 1.0)
    next_heavy = np.arange(1, len(heavies) + 1)
    same = np.zeros(len(heavies), dtype=bool)
    same[:-1] = heavy_group[1:] == heavy_group[:-1]
    alias[heavies[same]] = heavies[next_heavy[same]]
    prob[heavies[~same]] = 1.0  # the last heavy of a group keeps the rest
    return prob, alias


_HASH_MUL = np.int64(as_int64(GOLDEN))  # odd: key -> key * _HASH_MUL mod 2^K is a bijection
_BUCKET = 16  # keys per bucket: one 64-byte row of int32 fingerprints


class KeySet:
    """An exact set of int64 keys in ``[0, 2^key_bits)``, vectorised without loops over probes.

    A key is hashed by a bijection ``h = key * odd mod 2^K``; the top bits of ``h`` pick its
    bucket, a row of ``_BUCKET`` int32 slots, and the slot stores the rest of ``h`` (so the
    pair is exact: no false positives). ``contains`` is one gather and one compare. The table
    doubles when it holds more than 4 keys per row on average, or when a bucket overflows.
    """

    def __init__(self, key_bits: int, expected: int) -> None:
        self._key_bits = max(int(key_bits), 31)
        self._key_mask = np.int64((1 << self._key_bits) - 1)
        self._size = 0
        self._alloc(int(expected // 4).bit_length())

    def _alloc(self, bits: int) -> None:
        self._bits = max(bits, 4, self._key_bits - 31)  # the rest of h fits an int32 >= 0
        self._shift = self._key_bits - self._bits
        self._rest_mask = np.int64((1 << self._shift) - 1)
        # rows aligned to cache lines: a lookup then reads one line, not two
        raw = np.full(((1 << self._bits) + 1) * _BUCKET, -1, dtype=np.int32)
        start = (-raw.ctypes.data % 64) // 4
        self._table = raw[start : start + (1 << self._bits) * _BUCKET].reshape(-1, _BUCKET)
        self._fill = np.zeros(1 << self._bits, dtype=np.int8)

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        return (keys * _HASH_MUL) & self._key_mask  # int64 products wrap

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """A bool per key (keys: an int64 array of any shape; the result is flat)."""
        h = self._hash(keys.reshape(-1))
        rest = (h & self._rest_mask).astype(np.int32)
        same = self._table.take(h >> self._shift, axis=0) == rest[:, None]
        words = same.view(np.uint64)  # the 16 bools of a row as two words
        return (words[:, 0] | words[:, 1]) != 0

    def add(self, keys: np.ndarray) -> None:
        """Insert keys that are distinct and not in the set yet."""
        if not len(keys):
            return
        self._size += len(keys)
        if self._size > 4 * len(self._fill):
            self._grow()
        left = self._insert(self._hash(keys))
        while len(left):
            self._grow()
            left = self._insert(left)

    def _grow(self) -> None:
        row, col = np.nonzero(self._table >= 0)
        stored = (row.astype(np.int64) << self._shift) | self._table[row, col]
        bits = self._bits + 1
        while True:
            self._alloc(bits)
            if not len(self._insert(stored)):
                return
            bits += 1

    def _insert(self, h: np.ndarray) -> np.ndarray:
        """Insert hashed keys; return those left out because a bucket is full (normally none)."""
        bucket = h >> self._shift
        rest = (h & self._rest_mask).astype(np.int32)
        while len(h):
            slot = self._fill[bucket]
            if slot.max() >= _BUCKET:
                return h
            self._table[bucket, slot] = rest  # keys sharing a bucket: one of them lands there
            self._fill[bucket] = slot + 1
            lost = self._table[bucket, slot] != rest
            if not lost.any():
                break
            h, bucket, rest = h[lost], bucket[lost], rest[lost]
        return h[:0]
