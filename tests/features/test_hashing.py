"""Tests for terarec.features.hashing: stable, slot-keyed 64-bit ids for ints and strings."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from terarec.data.ctr_dataset import FeatureSpec, ctr_batch_from_table
from terarec.features.hashing import hash_array, hash_ints, hash_strings, null_id
from terarec.features.mixing import slot_seed, splitmix64

# ----------------------------------------------------------------------------- pinned values
# These values are part of the on-disk contract (checkpoint vocabularies store hashed ids):
# if one changes, every saved model silently maps its features to the wrong rows.


def test_hash_ints_pinned_values() -> None:
    ids = hash_ints(np.array([0, 1, 2]), "item_id")
    assert ids.dtype == np.int64
    assert ids.tolist() == [-7851686507615762211, -2730874256619675644, 6035700180151068068]


def test_hash_strings_pinned_values() -> None:
    ids = hash_strings(["a", "b"], "gender")
    assert ids.tolist() == [3956404336047393846, 8620706335695569494]
    assert int(null_id("gender")) == 4840130217646291238


def test_hash_strings_is_keyed_blake2b() -> None:
    expected = int.from_bytes(hashlib.blake2b(b"ios", digest_size=8, key=b"device").digest(), "little", signed=True)
    assert int(hash_strings(["ios"], "device")[0]) == expected


def test_hash_ints_is_splitmix_of_value_xor_slot_seed() -> None:
    values = np.array([5, -3, 2**40], dtype=np.int64)
    expected = splitmix64(values.view(np.uint64) ^ slot_seed("user_id")).view(np.int64)
    np.testing.assert_array_equal(hash_ints(values, "user_id"), expected)


# ----------------------------------------------------------------------------- slots


def test_slots_have_separate_id_spaces() -> None:
    values = np.arange(1000)
    a, b = hash_ints(values, "item_id"), hash_ints(values, "user_id")
    assert np.intersect1d(a, b).size == 0
    assert np.unique(a).size == values.size  # a bijection: no collisions among 1000 ints
    s1, s2 = hash_strings(["x", "y"], "city"), hash_strings(["x", "y"], "country")
    assert not set(s1.tolist()) & set(s2.tolist())
    assert null_id("city") != null_id("country")


def test_same_slot_same_value_same_id() -> None:
    a = hash_ints(np.array([7, 8, 7]), "item_id")
    assert a[0] == a[2] and a[0] != a[1]
    np.testing.assert_array_equal(hash_array(pa.array([7, 8, 7]), "item_id"), a)


def test_int_and_string_of_same_text_differ() -> None:
    assert hash_array(pa.array([12]), "f")[0] != hash_array(pa.array(["12"]), "f")[0]


def test_int_width_does_not_matter() -> None:
    expected = hash_array(pa.array([1, 2, 300], type=pa.int64()), "f")
    np.testing.assert_array_equal(hash_array(pa.array([1, 2, 300], type=pa.int32()), "f"), expected)
    np.testing.assert_array_equal(hash_array(pa.array([1, 2, 300], type=pa.uint16()), "f"), expected)


# ----------------------------------------------------------------------------- encodings


def test_strings_dictionary_and_chunked_arrays_agree() -> None:
    values = ["ios", "android", "ios", None, "web", "android"]
    plain = hash_array(pa.array(values), "device")
    assert plain.shape == (6,)
    large = hash_array(pa.array(values, type=pa.large_string()), "device")
    dictionary = hash_array(pa.array(values).dictionary_encode(), "device")
    chunked = hash_array(pa.chunked_array([pa.array(values[:2]), pa.array(values[2:])]), "device")
    # Chunks with different dictionaries must still agree value by value.
    chunked_dict = hash_array(
        pa.chunked_array([pa.array(values[:3]).dictionary_encode(), pa.array(values[3:]).dictionary_encode()]),
        "device",
    )
    single_chunk = hash_array(pa.chunked_array([pa.array(values)]), "device")
    for other in (large, dictionary, chunked, chunked_dict, single_chunk):
        np.testing.assert_array_equal(other, plain)
    # And every non-null value is its own string hash.
    np.testing.assert_array_equal(plain[[0, 1, 4]], hash_strings(["ios", "android", "web"], "device"))


def test_int_dictionary_and_chunked_agree() -> None:
    values = [3, 1, 3, None, 2]
    plain = hash_array(pa.array(values, type=pa.int64()), "cat")
    np.testing.assert_array_equal(hash_array(pa.array(values, type=pa.int64()).dictionary_encode(), "cat"), plain)
    np.testing.assert_array_equal(
        hash_array(pa.chunked_array([pa.array(values[:1]), pa.array(values[1:])], type=pa.int64()), "cat"), plain
    )
    np.testing.assert_array_equal(plain[[0, 1, 4]], hash_ints(np.array([3, 1, 2]), "cat"))


def test_empty_chunked_array() -> None:
    assert hash_array(pa.chunked_array([], type=pa.string()), "s").shape == (0,)


# ----------------------------------------------------------------------------- nulls


def test_string_nulls_get_the_slot_null_id() -> None:
    ids = hash_array(pa.array(["a", None, None, "b"]), "s")
    assert ids[1] == ids[2] == null_id("s")
    assert null_id("s") not in hash_strings(["a", "b", "", "null", "None"], "s")


def test_dictionary_nulls_in_indices_and_in_dictionary() -> None:
    in_indices = pa.DictionaryArray.from_arrays(pa.array([0, None, 1]), pa.array(["a", "b"]))
    in_dictionary = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1]), pa.array(["a", None]))
    assert hash_array(in_indices, "s").tolist() == [hash_strings(["a"], "s")[0], null_id("s"), hash_strings(["b"], "s")[0]]
    assert hash_array(in_dictionary, "s").tolist()[1:] == [null_id("s"), null_id("s")]


def test_int_nulls_get_the_slot_null_id_not_the_id_of_zero() -> None:
    ids = hash_array(pa.array([0, None, 5], type=pa.int64()), "age")
    assert ids[1] == null_id("age")
    assert ids[0] == hash_ints(np.array([0]), "age")[0]
    assert ids[0] != ids[1]
    assert ids[2] == hash_ints(np.array([5]), "age")[0]


def test_null_id_is_shared_between_int_and_string_columns_of_a_slot() -> None:
    assert hash_array(pa.array([None, 1]), "f")[0] == hash_array(pa.array([None, "x"]), "f")[0] == null_id("f")


def test_unsupported_type_names_the_feature() -> None:
    with pytest.raises(TypeError, match="price"):
        hash_array(pa.array([1.5, 2.5]), "price")


# ----------------------------------------------------------------------------- list columns


def test_list_columns_through_ctr_batches() -> None:
    table = pa.table(
        {
            "tags": pa.array([[1, 2], [], None, [2, None, 3]], type=pa.list_(pa.int64())),
            "words": pa.array([["a"], ["b", "a"], None, []], type=pa.list_(pa.string())),
            "click": pa.array([1.0, 0.0, 1.0, 0.0], type=pa.float32()),
        }
    )
    batch = ctr_batch_from_table(table, FeatureSpec(sparse=["tags", "words"], labels=["click"]))
    kjt = batch.sparse_features
    assert kjt.keys() == ["tags", "words"]
    assert kjt["tags"].lengths().tolist() == [2, 0, 0, 3]
    expected_tags = hash_ints(np.array([1, 2, 2, 0, 3]), "tags")
    expected_tags[3] = null_id("tags")
    assert kjt["tags"].values().tolist() == expected_tags.tolist()
    assert kjt["words"].lengths().tolist() == [1, 2, 0, 0]
    assert kjt["words"].values().tolist() == hash_strings(["a", "b", "a"], "words").tolist()
    # A list element hashes like the same value in a single-valued column of that slot.
    single = ctr_batch_from_table(pa.table({"tags": pa.array([2, 1]), "click": [0.0, 1.0]}), FeatureSpec(["tags"], [], ["click"]))
    assert single.sparse_features["tags"].values().tolist() == hash_ints(np.array([2, 1]), "tags").tolist()
    assert single.sparse_features["tags"].lengths().tolist() == [1, 1]


def test_sliced_list_column_respects_offsets() -> None:
    table = pa.table({"tags": pa.array([[1], [2, 3], [4, 5, 6]], type=pa.list_(pa.int64())), "y": [0.0, 1.0, 0.0]})
    batch = ctr_batch_from_table(table.slice(1, 2), FeatureSpec(sparse=["tags"], labels=["y"]))
    assert batch.sparse_features["tags"].lengths().tolist() == [2, 3]
    assert batch.sparse_features["tags"].values().tolist() == hash_ints(np.array([2, 3, 4, 5, 6]), "tags").tolist()
