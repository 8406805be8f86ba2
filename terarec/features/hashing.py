"""Raw feature values (ints, strings) to stable, slot-prefixed 64-bit ids, vectorised.

Integers go through one splitmix64 step (``terarec.features.mixing``) keyed by the slot;
strings are dictionary-encoded by Arrow and each distinct string is hashed once with BLAKE2b
(8-byte digest, keyed by the slot), so a column of millions of repeated strings costs one hash per distinct value. The
same raw value in two slots gets two unrelated ids unless the slots share a name. Ids are
stable across runs, machines and Python versions (no use of Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.features.mixing import slot_seed, splitmix64

NULL_TOKEN = b"\x00terarec:null"


def hash_ints(values: np.ndarray, slot: str) -> np.ndarray:
    """Hash integer ids into the slot's id space; returns int64 (the uint64 bits reinterpreted).

    Example:
        >>> a = hash_ints(np.array([1, 2, 1]), "item_id")
        >>> bool(a[0] == a[2]) and bool(a[0] != hash_ints(np.array([1]), "user_id")[0])
        True
    """
    keyed = np.asarray(values).astype(np.int64).view(np.uint64) ^ slot_seed(slot)
    return splitmix64(keyed).view(np.int64)


def _hash_bytes(value: bytes, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(value, digest_size=8, key=key).digest(), "little", signed=True)


def hash_strings(values: list[str | None], slot: str) -> np.ndarray:
    """Hash a list of (distinct) strings into the slot's id space; None gets the slot's null id."""
    key = slot.encode()[:64]
    return np.fromiter(
        (_hash_bytes(NULL_TOKEN if v is None else v.encode(), key) for v in values),
        dtype=np.int64,
        count=len(values),
    )


def null_id(slot: str) -> np.int64:
    """The id a missing value gets in this slot (one id per slot, never shared with a real value's)."""
    return hash_strings([None], slot)[0]


def hash_array(array: pa.Array | pa.ChunkedArray, slot: str) -> np.ndarray:
    """Hash an Arrow column of ints or strings (nulls allowed) to int64 ids, one per row.

    Integer and string values of the same text hash differently; a column is one or the other.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = array.type
    if pa.types.is_dictionary(kind):
        dictionary = array.dictionary
        if pa.types.is_integer(dictionary.type):
            dictionary_ids = hash_ints(dictionary.to_numpy(), slot)
        else:
            dictionary_ids = hash_strings(dictionary.to_pylist(), slot)
        indices = array.indices.to_numpy(zero_copy_only=False)
        if array.null_count:
            mask = pc.is_null(array).to_numpy(zero_copy_only=False)
            out = dictionary_ids[np.where(mask, 0, indices).astype(np.int64)]
            out[mask] = null_id(slot)
            return out
        return dictionary_ids[indices.astype(np.int64)]
    if pa.types.is_integer(kind):
        if array.null_count:
            mask = pc.is_null(array).to_numpy(zero_copy_only=False)
            out = hash_ints(pc.fill_null(array, 0).to_numpy(), slot)
            out[mask] = null_id(slot)
            return out
        return hash_ints(array.to_numpy(), slot)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return hash_array(pc.dictionary_encode(array), slot)
    raise TypeError(f"feature '{slot}': cannot hash a column of type {kind}; expected integers or strings")
