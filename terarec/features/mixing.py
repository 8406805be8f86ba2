"""The one 64-bit mixer (splitmix64's finaliser) and the id folds built on it.

Every place that scrambles 64-bit integers calls ``mix64`` (directly or through
``splitmix64``): slot hashing of raw ids (``terarec.features.hashing``), the cross folds
below (``terarec.features.crosses``), the managed vocabulary's probability admission
(``terarec.embedding.vocabulary``), seeded random splits (``terarec.data.splits``) and the
benchmarks' raw-looking id streams. ``mix64`` is Stafford's "Mix13" variant of the MurmurHash3
finaliser as splitmix64 (Steele, Lea and Flood 2014) uses it: xor-shift 30, multiply, xor-shift
27, multiply, xor-shift 31, a bijection on 64 bits. ``splitmix64(x) = mix64(x + GOLDEN)`` is one
step of the splitmix64 generator.

Bucket selection by multiplication (Fibonacci hashing of a managed vocabulary's home slots,
its count-min sketch's multiply-shift rows, the synthetic generator's key set) is a different
tool, one multiply and a shift on the hot path; those places take their odd multipliers from
here (``GOLDEN``, ``MIX1``, ``MIX2``) so that no constant is written twice.

Folds: ``fold_ids(slot, [a, b, ...])`` is ``h = slot_seed(slot); h = splitmix64(h ^ a); h =
splitmix64(h ^ b); ...`` row by row, and ``fold_lists`` folds each list's length and then its
elements: the arithmetic of every declared cross.
"""

from __future__ import annotations

import hashlib

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
# fold_lists folds each distinct list length as its own matrix while the lengths' sum (the
# number of vector steps) stays below this; past it, one pass per position over all rows.
_MAX_GROUPED_POSITIONS = 4096


def as_int64(value: np.uint64) -> int:
    """A 64-bit constant as the signed Python int with the same bits (for int64 tensor arithmetic)."""
    return int(np.asarray(value, dtype=np.uint64).view(np.int64))


def mix64(values: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """splitmix64's finaliser over uint64 values (wrapping arithmetic): a bijection on 64 bits.

    Args:
        values: uint64 array (any shape).
        out: where to write (may be ``values`` itself: in place, no allocation); default a new array.
        scratch: a uint64 array of the same shape for the shifts (default allocated).

    Example:
        >>> hex(int(mix64(np.array([1], dtype=np.uint64))[0]))
        '0x5692161d100b05e5'
    """
    if out is None:
        out = np.array(values, dtype=np.uint64, copy=True)
    elif out is not values:
        np.copyto(out, values)
    if scratch is None:
        scratch = np.empty_like(out)
    for shift, multiplier in ((30, MIX1), (27, MIX2)):
        np.right_shift(out, np.uint64(shift), out=scratch)
        np.bitwise_xor(out, scratch, out=out)
        np.multiply(out, multiplier, out=out)
    np.right_shift(out, np.uint64(31), out=scratch)
    np.bitwise_xor(out, scratch, out=out)
    return out


def splitmix64(values: np.ndarray) -> np.ndarray:
    """One splitmix64 step over uint64 values: ``mix64(values + GOLDEN)``, a new array.

    Example:
        >>> hex(int(splitmix64(np.array([0], dtype=np.uint64))[0]))  # Vigna's generator seeded with 0
        '0xe220a8397b1dcdaf'
    """
    z = np.array(values, dtype=np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += GOLDEN
    return mix64(z, out=z)


def slot_seed(slot: str) -> np.uint64:
    """The 64-bit key of a slot (feature name): BLAKE2b of its UTF-8 name."""
    return np.uint64(int.from_bytes(hashlib.blake2b(slot.encode(), digest_size=8).digest(), "little"))


def _fold_into(state: np.ndarray, ids: np.ndarray, scratch: np.ndarray) -> None:
    """``state = splitmix64(state ^ ids)`` in place over uint64 arrays, with no allocation."""
    np.bitwise_xor(state, ids, out=state)
    np.add(state, GOLDEN, out=state)
    mix64(state, out=state, scratch=scratch)


def fold_ids(slot: str, column_ids: list[np.ndarray]) -> np.ndarray:
    """Fold per-column int64 ids, row by row, in order, keyed by ``slot``; int64 out.

    ``h = slot_seed(slot)``, then ``h = splitmix64(h ^ ids_k)`` for each array.
    Order matters: ``fold_ids(s, [a, b]) != fold_ids(s, [b, a])``.
    """
    num_rows = column_ids[0].size if column_ids else 0
    state = np.full(num_rows, slot_seed(slot), dtype=np.uint64)
    scratch = np.empty_like(state)
    for ids in column_ids:
        _fold_into(state, np.asarray(ids, dtype=np.int64).view(np.uint64), scratch)
    return state.view(np.int64)


def fold_lists(slot: str, element_ids: np.ndarray, lengths: np.ndarray, ordered: bool = True) -> np.ndarray:
    """One id per list: fold its length, then its element ids (sorted first unless ``ordered``).

    Args:
        slot: the cross's name.
        element_ids: int64 ids of all elements, list after list.
        lengths: int64 length of each list.
        ordered: False sorts each list's ids (signed int64 order) first: an order-invariant key.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    element_ids = np.asarray(element_ids, dtype=np.int64)
    num_rows = lengths.size
    state = np.full(num_rows, slot_seed(slot), dtype=np.uint64)
    scratch = np.empty_like(state)
    _fold_into(state, lengths.view(np.uint64), scratch)
    if num_rows == 0 or element_ids.size == 0:
        return state.view(np.int64)
    longest = int(lengths.max())
    if element_ids.size == num_rows * longest:
        # Every list has the same length: a (rows, length) view, no gathers.
        matrix = element_ids.reshape(num_rows, longest)
        if not ordered:
            matrix = np.sort(matrix, axis=1)
        for position in range(longest):
            _fold_into(state, matrix[:, position].view(np.uint64), scratch)
        return state.view(np.int64)
    starts = np.zeros(num_rows, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    rows_per_length = np.bincount(lengths)
    present = np.flatnonzero(rows_per_length[1:]) + 1
    if int(present.sum()) <= _MAX_GROUPED_POSITIONS:
        # Few distinct lengths: each length's rows as one (rows, length) matrix, as above.
        by_length = np.argsort(lengths, kind="stable")
        group_ends = np.cumsum(rows_per_length)
        for length in present.tolist():
            rows = by_length[group_ends[length] - rows_per_length[length] : group_ends[length]]
            matrix = element_ids[starts[rows][:, None] + np.arange(length)]
            if not ordered:
                matrix.sort(axis=1)
            group_state = state[rows]
            for position in range(length):
                _fold_into(group_state, matrix[:, position].view(np.uint64), scratch[: rows.size])
            state[rows] = group_state
        return state.view(np.int64)
    # Many distinct lengths: visit rows longest first, so the rows still going at each position
    # are a prefix, and sort within lists one length at a time.
    by_length = np.argsort(-lengths, kind="stable")
    if not ordered:
        element_ids = element_ids.copy()
        at_least = np.append(np.cumsum(rows_per_length[::-1])[::-1], 0)  # rows with length >= L
        for length in present[present > 1].tolist():
            rows = by_length[at_least[length + 1] : at_least[length]]
            positions = starts[rows][:, None] + np.arange(length)
            element_ids[positions] = np.sort(element_ids[positions], axis=1)
    sorted_state = state[by_length]
    sorted_starts = starts[by_length]
    rows_longer_than = num_rows - np.cumsum(rows_per_length)
    for position in range(longest):
        active = int(rows_longer_than[position])
        ids = element_ids[sorted_starts[:active] + position]
        _fold_into(sorted_state[:active], ids.view(np.uint64), scratch[:active])
    state[by_length] = sorted_state
    return state.view(np.int64)
