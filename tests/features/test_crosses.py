"""Tests for terarec.features.crosses: declared crosses as slot-keyed 64-bit ids, vectorised."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

from terarec.config import ConfigError
from terarec.data.ctr_dataset import FeatureSpec, ctr_batch_from_table
from terarec.features.crosses import CrossSpec, apply_crosses, crosses_from_config
from terarec.features.hashing import hash_array, hash_ints, null_id
from terarec.features.mixing import fold_ids

DAY = 86_400


def _ids(table: pa.Table, cross: CrossSpec) -> np.ndarray:
    ids, lengths = apply_crosses(table, [cross])[cross.name]
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    return ids


def _rows() -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array([10, 11, 10, 12, 10], type=pa.int64()),
            "gender": pa.array(["f", "m", "f", "m", "f"]),
            "age": pa.array([17, 25, 17, 40, 30], type=pa.int64()),
            "category": pa.array([1, 1, 1, 2, 1], type=pa.int32()),
            "price": pa.array([5.0, 20.0, 5.0, 99.0, 5.0]),
        }
    )

def test_tuple_cross_is_the_fold_of_the_columns_ids_in_their_own_slots() -> None:
    table = _rows()
    cross = CrossSpec("item_x_gender", "interaction", ["item_id", "gender"])
    expected = fold_ids("item_x_gender", [hash_array(table["item_id"], "item_id"), hash_array(table["gender"], "gender")])
    np.testing.assert_array_equal(_ids(table, cross), expected)


def test_one_column_derivation_is_the_column_id_rehashed_in_the_cross_slot() -> None:
    table = _rows()
    ids = _ids(table, CrossSpec("item_again", "derivation", ["item_id"]))
    np.testing.assert_array_equal(ids, hash_ints(hash_array(table["item_id"], "item_id"), "item_again"))


# ----------------------------------------------------------------------------- determinism and slots


def test_same_inputs_same_ids_and_equal_rows_equal_ids() -> None:
    cross = CrossSpec("item_x_gender_x_age", "interaction", ["item_id", "gender", "age"], buckets={"age": [18, 30]})
    first, second = _ids(_rows(), cross), _ids(_rows(), cross)
    np.testing.assert_array_equal(first, second)
    assert first[0] == first[2]  # rows 0 and 2 are the same (item, gender, age bucket)
    assert len(set(first.tolist())) == 4


def test_different_cross_names_have_different_id_spaces() -> None:
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.integers(0, 50, 2000), "b": rng.integers(0, 50, 2000)})
    one = _ids(table, CrossSpec("one", "derivation", ["a", "b"]))
    two = _ids(table, CrossSpec("two", "derivation", ["a", "b"]))
    assert np.intersect1d(one, two).size == 0
    assert null_id("one") != null_id("two")
    # 2000 draws of 2500 possible pairs: ids are distinct exactly when the pairs are.
    pairs = np.unique(np.stack([table["a"].to_numpy(), table["b"].to_numpy()], 1), axis=0)
    assert np.unique(one).size == pairs.shape[0]


def test_derivation_equals_interaction_and_column_order_matters() -> None:
    table = _rows()
    derivation = _ids(table, CrossSpec("c", "derivation", ["category", "price"], buckets={"price": [10.0, 50.0]}))
    interaction = _ids(table, CrossSpec("c", "interaction", ["category", "price"], buckets={"price": [10.0, 50.0]}))
    np.testing.assert_array_equal(derivation, interaction)
    swapped = _ids(table, CrossSpec("c", "interaction", ["price", "category"], buckets={"price": [10.0, 50.0]}))
    assert not np.intersect1d(derivation, swapped).size


def test_crossed_features_do_not_collide_with_their_inputs() -> None:
    table = _rows()
    ids = _ids(table, CrossSpec("item_x_gender", "interaction", ["item_id", "gender"]))
    inputs = np.concatenate([hash_array(table["item_id"], "item_id"), hash_array(table["gender"], "gender")])
    assert np.intersect1d(ids, inputs).size == 0


def test_string_and_dictionary_columns_cross_alike() -> None:
    table = _rows()
    encoded = table.set_column(1, "gender", table["gender"].dictionary_encode())
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=2))
    cross = CrossSpec("item_x_gender", "interaction", ["item_id", "gender"])
    expected = _ids(table, cross)
    np.testing.assert_array_equal(_ids(encoded, cross), expected)
    np.testing.assert_array_equal(_ids(chunked, cross), expected)


# ----------------------------------------------------------------------------- bucketing


def test_bucket_boundaries_belong_to_the_bucket_above() -> None:
    prices = [-1.0, 0.0, 9.99, 10.0, 10.5, 49.9, 50.0, 1e9]
    table = pa.table({"category": [1] * len(prices), "price": prices})
    ids = _ids(table, CrossSpec("c", "derivation", ["category", "price"], buckets={"price": [0.0, 10.0, 50.0]}))
    # buckets: (-inf, 0) -> 0, [0, 10) -> 1, [10, 50) -> 2, [50, inf) -> 3
    buckets = [0, 1, 1, 2, 2, 2, 3, 3]
    expected = fold_ids("c", [hash_ints(np.ones(8, np.int64), "category"), hash_ints(np.array(buckets), "price:bucket")])
    np.testing.assert_array_equal(ids, expected)
    assert len(set(ids.tolist())) == 4


def test_integer_columns_bucket_too_and_buckets_change_the_ids() -> None:
    table = pa.table({"item_id": [1, 1, 1], "age": pa.array([17, 18, 64], type=pa.int16())})
    ids = _ids(table, CrossSpec("x", "interaction", ["item_id", "age"], buckets={"age": [18, 65]}))
    assert ids[0] != ids[1] and ids[1] == ids[2]
    raw = _ids(table, CrossSpec("x", "interaction", ["item_id", "age"]))
    assert len(set(raw.tolist())) == 3 and not np.intersect1d(raw, ids).size


def test_bad_bucket_declarations() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        CrossSpec("c", "derivation", ["price"], buckets={"price": [10.0, 5.0]})
    with pytest.raises(ValueError, match="'cost', which is not one of its columns"):
        CrossSpec("c", "derivation", ["price"], buckets={"cost": [1.0]})
    with pytest.raises(ValueError, match="buckets apply to derivation and interaction"):
        CrossSpec("c", "permutation", ["picks"], buckets={"picks": [1.0]})
    with pytest.raises(ValueError, match="bucketing needs a numeric column"):
        _ids(_rows(), CrossSpec("c", "derivation", ["gender"], buckets={"gender": [1.0]}))


# ----------------------------------------------------------------------------- nulls


def test_null_in_any_input_gives_the_cross_null_id() -> None:
    table = pa.table(
        {
            "item_id": pa.array([1, None, 1, 1], type=pa.int64()),
            "gender": pa.array(["f", "f", None, "f"]),
            "price": pa.array([1.0, 1.0, 1.0, float("nan")]),
        }
    )
    ids = _ids(table, CrossSpec("c", "interaction", ["item_id", "gender", "price"], buckets={"price": [5.0]}))
    assert ids[1:].tolist() == [null_id("c")] * 3
    assert ids[0] != null_id("c")
    table = pa.table({"price": pa.array([None, 1.0])})
    assert _ids(table, CrossSpec("d", "derivation", ["price"], buckets={"price": [5.0]}))[0] == null_id("d")


def test_list_nulls() -> None:
    table = pa.table({"picks": pa.array([None, [], [1, None], [1, None]], type=pa.list_(pa.int64()))})
    out = apply_crosses(
        table,
        [
            CrossSpec("order", "permutation", ["picks"]),
            CrossSpec("team", "combination", ["picks"]),
            CrossSpec("each", "elements", ["picks"]),
        ],
    )
    order, team = out["order"][0], out["team"][0]
    assert order[0] == null_id("order") and team[0] == null_id("team")
    # An empty list is a value (no picks), not a missing one; a null element is a value too.
    assert len({order[0], order[1], order[2]}) == 3 and order[2] == order[3]
    each_ids, each_lengths = out["each"]
    assert each_lengths.tolist() == [0, 0, 2, 2]
    assert each_ids.tolist() == [hash_ints(np.array([1]), "each")[0], null_id("each")] * 2


# ----------------------------------------------------------------------------- list kinds


def _picks(lists: list[list[int]]) -> pa.Table:
    return pa.table({"picks": pa.array(lists, type=pa.list_(pa.int64()))})


def test_combination_is_order_invariant_and_permutation_is_not() -> None:
    table = _picks([[1, 2, 3], [3, 2, 1], [2, 3, 1], [1, 2, 4]])
    order = _ids(table, CrossSpec("order", "permutation", ["picks"]))
    team = _ids(table, CrossSpec("team", "combination", ["picks"]))
    assert len(set(order.tolist())) == 4
    assert team[0] == team[1] == team[2] and team[3] != team[0]


def test_combination_is_a_multiset_and_lists_of_different_lengths_differ() -> None:
    table = _picks([[1, 1, 2], [1, 2], [2, 1, 1], [1], [1, 1]])
    team = _ids(table, CrossSpec("team", "combination", ["picks"]))
    assert team[0] == team[2]
    assert len({team[0], team[1], team[3], team[4]}) == 4
    order = _ids(table, CrossSpec("order", "permutation", ["picks"]))
    assert order[3] != order[4]


def test_list_keys_fold_length_then_elements() -> None:
    table = _picks([[3, 1, 2]])
    elements = hash_ints(np.array([3, 1, 2]), "picks")  # the list column's own slot
    assert _ids(table, CrossSpec("order", "permutation", ["picks"]))[0] == fold_ids(
        "order", [np.array([3])] + [elements[[k]] for k in range(3)]
    )[0]
    ascending = np.sort(elements)
    assert _ids(table, CrossSpec("team", "combination", ["picks"]))[0] == fold_ids(
        "team", [np.array([3])] + [ascending[[k]] for k in range(3)]
    )[0]


def test_equal_and_ragged_list_lengths_give_the_same_keys() -> None:
    # Lists of one length take a reshaped path, ragged ones a gather path: a row's key must not
    # depend on which path its batch took.
    rng = np.random.default_rng(1)
    ragged = [rng.integers(0, 6, rng.integers(0, 7)).tolist() for _ in range(300)]
    crosses = [CrossSpec("order", "permutation", ["picks"]), CrossSpec("team", "combination", ["picks"])]
    together = apply_crosses(_picks(ragged), crosses)
    for cross in crosses:
        alone = np.array([apply_crosses(_picks([row]), [cross])[cross.name][0][0] for row in ragged])
        np.testing.assert_array_equal(together[cross.name][0], alone)
    # and against a direct per-row fold
    for k in (0, 17, 123):
        ids = hash_ints(np.array(ragged[k], dtype=np.int64), "picks")
        expected = fold_ids("team", [np.array([len(ids)])] + [np.array([v]) for v in np.sort(ids)])[0]
        assert together["team"][0][k] == expected


def test_elements_are_each_element_in_the_cross_slot() -> None:
    table = _picks([[5, 6, 7], [7], [], [5, 5]])
    ids, lengths = apply_crosses(table, [CrossSpec("each", "elements", ["picks"])])["each"]
    assert lengths.tolist() == [3, 1, 0, 2]
    np.testing.assert_array_equal(ids, hash_ints(np.array([5, 6, 7, 7, 5, 5]), "each"))
    assert not np.intersect1d(ids, hash_ints(np.array([5, 6, 7]), "picks")).size


def test_sliced_and_string_list_columns() -> None:
    table = pa.table({"picks": pa.array([["a"], ["b", "c"], ["c", "b"], None], type=pa.list_(pa.string()))})
    cross = CrossSpec("team", "combination", ["picks"])
    full = _ids(table, cross)
    assert full[1] == full[2]
    np.testing.assert_array_equal(_ids(table.slice(1, 3), cross), full[1:])
    ids, lengths = apply_crosses(table.slice(1, 3), [CrossSpec("each", "elements", ["picks"])])["each"]
    assert lengths.tolist() == [2, 2, 0]
    np.testing.assert_array_equal(ids, hash_array(pa.array(["b", "c", "c", "b"]), "each"))


# ----------------------------------------------------------------------------- batches


def test_feature_spec_crosses_append_keys_to_ctr_batches() -> None:
    table = _rows().append_column("picks", pa.array([[1, 2], [2, 1], [3], [], [1]], type=pa.list_(pa.int64())))
    table = table.append_column("click", pa.array([1.0, 0.0, 1.0, 0.0, 1.0], type=pa.float32()))
    crosses = [
        CrossSpec("item_x_gender", "interaction", ["item_id", "gender"]),
        CrossSpec("team", "combination", ["picks"]),
        CrossSpec("each", "elements", ["picks"]),
    ]
    plain = ctr_batch_from_table(table, FeatureSpec(sparse=["item_id", "gender", "picks"], labels=["click"]))
    crossed = ctr_batch_from_table(
        table, FeatureSpec(sparse=["item_id", "gender", "picks"], labels=["click"], crosses=crosses)
    )
    features = crossed.sparse_features
    assert features.keys() == ["item_id", "gender", "picks", "item_x_gender", "team", "each"]
    for key in ("item_id", "gender", "picks"):
        assert features[key].values().tolist() == plain.sparse_features[key].values().tolist()
        assert features[key].lengths().tolist() == plain.sparse_features[key].lengths().tolist()
    expected = apply_crosses(table, crosses)
    for cross in crosses:
        ids, lengths = expected[cross.name]
        assert features[cross.name].values().tolist() == ids.tolist()
        assert features[cross.name].lengths().tolist() == lengths.tolist()
    assert features["team"].values()[0] == features["team"].values()[1]

# ----------------------------------------------------------------------------- errors and config


def test_unknown_column_names_the_cross_the_column_and_the_columns() -> None:
    with pytest.raises(ValueError, match=r"cross 'c' \(derivation\): column 'colour' is not in the table") as error:
        _ids(_rows(), CrossSpec("c", "derivation", ["category", "colour"]))
    assert "'category'" in str(error.value) and "'price'" in str(error.value)


def test_list_kinds_need_a_list_column_and_tuple_kinds_refuse_one() -> None:
    for kind in ("permutation", "combination", "elements"):
        with pytest.raises(ValueError, match=rf"cross 'p' \({kind}\): column 'item_id' has type int64; .* needs a list column"):
            _ids(_rows(), CrossSpec("p", kind, ["item_id"]))
    with pytest.raises(ValueError, match="'picks' is a list column"):
        _ids(_picks([[1]]), CrossSpec("c", "interaction", ["picks"]))


def test_float_columns_need_buckets() -> None:
    with pytest.raises(ValueError, match=r"column 'price' is double; give it bucket boundaries in buckets\['price'\]"):
        _ids(_rows(), CrossSpec("c", "derivation", ["category", "price"]))


def test_declaration_errors() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        CrossSpec("c", "product", ["a"])
    with pytest.raises(ValueError, match="exactly one list column"):
        CrossSpec("c", "permutation", ["a", "b"])
    with pytest.raises(ValueError, match=r"\[history_column, candidate_column\]"):
        CrossSpec("c", "weak_semantic", ["item_id"])
    with pytest.raises(ValueError, match="window_days must be positive"):
        CrossSpec("c", "weak_semantic", ["item_id", "item_id"], window_days=0)
    with pytest.raises(ValueError, match="declared twice"):
        apply_crosses(_rows(), [CrossSpec("c", "derivation", ["item_id"])] * 2)


def test_crosses_from_config() -> None:
    specs = crosses_from_config(
        [
            {"name": "category_x_price", "kind": "derivation", "columns": ["category", "price"], "buckets": {"price": [10, 50]}},
            {"name": "fav", "kind": "weak_semantic", "columns": ["item_id", "item_id"], "window_days": 7},
        ]
    )
    assert specs[0].buckets == {"price": [10.0, 50.0]} and specs[1].window_days == 7.0
    with pytest.raises(ConfigError, match=r"unknown config key 'crosses\[0\].bucket'; did you mean 'buckets'"):
        crosses_from_config([{"name": "c", "kind": "derivation", "columns": ["a"], "bucket": {}}])
    with pytest.raises(ConfigError, match=r"crosses\[0\].*kind must be one of"):
        crosses_from_config([{"name": "c", "kind": "cartesian", "columns": ["a"]}])
    with pytest.raises(ConfigError, match="repeated"):
        crosses_from_config([{"name": "c", "kind": "derivation", "columns": ["a"]}] * 2)


def test_empty_tables() -> None:
    table = pa.table({"a": pa.array([], type=pa.int64()), "picks": pa.array([], type=pa.list_(pa.int64()))})
    out = apply_crosses(
        table,
        [CrossSpec("d", "derivation", ["a"]), CrossSpec("t", "combination", ["picks"]), CrossSpec("e", "elements", ["picks"])],
    )
    assert all(ids.size == 0 and lengths.size == 0 for ids, lengths in out.values())
