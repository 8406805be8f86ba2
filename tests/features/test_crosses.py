"""Tests for terarec.features.crosses: declared crosses as slot-keyed 64-bit ids, vectorised."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from terarec.config import ConfigError
from terarec.data.batches import FeatureSpec, ctr_batch_from_table
from terarec.features import crosses as crosses_module
from terarec.features.crosses import (
    CrossSpec,
    apply_crosses,
    crosses_from_config,
    fold_ids,
    fold_lists,
    most_frequent_in_window,
    weak_semantic_keys,
)
from terarec.features.hashing import (
    hash_array,
    hash_ints,
    null_id,
    slot_seed,
    splitmix64,
)

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


# ----------------------------------------------------------------------------- arithmetic


def test_fold_is_splitmix_of_state_xor_id_starting_from_the_slot_seed() -> None:
    a = hash_ints(np.array([1, 2, 3]), "a")
    b = hash_ints(np.array([4, 5, 6]), "b")
    first = splitmix64(np.full(3, slot_seed("x"), dtype=np.uint64) ^ a.view(np.uint64))
    expected = splitmix64(first ^ b.view(np.uint64)).view(np.int64)
    np.testing.assert_array_equal(fold_ids("x", [a, b]), expected)


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


@pytest.mark.parametrize("grouped", [True, False])
def test_fold_lists_matches_a_per_row_fold(grouped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # fold_lists has two ragged paths: a matrix per distinct length, and a pass per position.
    if not grouped:
        monkeypatch.setattr(crosses_module, "_MAX_GROUPED_POSITIONS", 0)
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


def test_ctr_batch_from_table_appends_the_crosses_after_the_plain_keys() -> None:
    table = _rows().append_column("picks", pa.array([[1, 2], [2, 1], [3], [], [1]], type=pa.list_(pa.int64())))
    table = table.append_column("click", pa.array([1.0, 0.0, 1.0, 0.0, 1.0], type=pa.float32()))
    plain = FeatureSpec(sparse=["item_id", "gender", "picks"], labels=["click"])
    batch = ctr_batch_from_table(table, plain)
    crosses = [
        CrossSpec("item_x_gender", "interaction", ["item_id", "gender"]),
        CrossSpec("team", "combination", ["picks"]),
        CrossSpec("each", "elements", ["picks"]),
    ]
    crossed = ctr_batch_from_table(table, dataclasses.replace(plain, crosses=crosses))
    features = crossed.sparse_features
    assert features.keys() == ["item_id", "gender", "picks", "item_x_gender", "team", "each"]
    for key in ("item_id", "gender", "picks"):
        assert features[key].values().tolist() == batch.sparse_features[key].values().tolist()
        assert features[key].lengths().tolist() == batch.sparse_features[key].lengths().tolist()
    expected = apply_crosses(table, crosses)
    for cross in crosses:
        ids, lengths = expected[cross.name]
        assert features[cross.name].values().tolist() == ids.tolist()
        assert features[cross.name].lengths().tolist() == lengths.tolist()
    assert features["team"].values()[0] == features["team"].values()[1]
    assert crossed.labels.tolist() == batch.labels.tolist() and len(crossed) == 5


# ----------------------------------------------------------------------------- weak semantic


def _history() -> pa.Table:
    #            user 1 .........................................   user 2 ..
    return pa.table(
        {
            "user_id": pa.array([1, 1, 1, 1, 1, 1, 2, 2], type=pa.int64()),
            "timestamp": pa.array([0, 1, 2, 3, 33, 70, 0, 0], type=pa.int64()) * DAY,
            "item_id": pa.array([10, 20, 10, 30, 40, 50, 10, 20], type=pa.int64()),
        }
    )


def test_most_frequent_in_window_hand_built() -> None:
    table = _history()
    rows = most_frequent_in_window(
        table["user_id"].to_numpy(), table["timestamp"].to_numpy(), table["item_id"].to_numpy(), 30 * DAY
    )
    assert rows.tolist() == [
        -1,  # first event of user 1: no history
        0,  # {10}
        1,  # {10: 1, 20: 1}: a tie goes to the most recent, 20
        2,  # {10: 2, 20: 1}: 10, at its latest occurrence
        3,  # day 33: only day 3 (exactly 30 days back) is in the window, days 0..2 are not
        -1,  # day 70: nothing in the last 30 days
        -1,  # user 2's first event: user 1's rows are not its history
        6,  # an earlier row at the same time counts
    ]


def test_weak_semantic_keys_cross_the_favourite_with_the_candidate() -> None:
    table = _history()
    cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=30)
    ids = weak_semantic_keys(table, cross)
    items = hash_array(table["item_id"], "item_id")
    favourite = np.array([0, 0, 1, 2, 3, 0, 0, 6])
    expected = fold_ids("fav_x_item", [items[favourite], items])
    no_history = [0, 5, 6]
    expected[no_history] = null_id("fav_x_item")
    np.testing.assert_array_equal(ids, expected)
    # The window is in days: 29.9 days drops day 3 for the day-33 event.
    shorter = weak_semantic_keys(table, CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"], window_days=29.9))
    assert shorter[4] == null_id("fav_x_item") and shorter[3] == ids[3]


def test_weak_semantic_history_mask_nulls_and_other_columns() -> None:
    table = _history().append_column("category", pa.array([1, 2, None, 1, 3, 3, 4, 4], type=pa.int64()))
    cross = CrossSpec("fav_cat_x_item", "weak_semantic", ["category", "item_id"], window_days=30)
    rows_ids = weak_semantic_keys(table, cross)
    categories = hash_array(table["category"], "category")
    items = hash_array(table["item_id"], "item_id")
    # Row 3's history is categories {1, 2, null}: the null does not count, so 1 vs 2 tie -> 2 (row 1).
    assert rows_ids[3] == fold_ids("fav_cat_x_item", [categories[[1]], items[[3]]])[0]
    # Only clicked rows count as history: without row 1, category 1 (row 0) wins.
    mask = np.array([True, False, True, True, True, True, True, True])
    masked = weak_semantic_keys(table, cross, history_mask=mask)
    assert masked[3] == fold_ids("fav_cat_x_item", [categories[[0]], items[[3]]])[0]
    # A row outside the mask still gets a key from its own history.
    assert masked[1] == rows_ids[1] == fold_ids("fav_cat_x_item", [categories[[0]], items[[1]]])[0]
    first_masked = weak_semantic_keys(table, cross, history_mask=~np.eye(8, dtype=bool)[0])
    assert first_masked[1] == null_id("fav_cat_x_item")  # its only history row is masked out
    null_candidate = table.set_column(2, "item_id", pa.array([10, 20, 10, None, 40, 50, 10, 20], type=pa.int64()))
    assert weak_semantic_keys(null_candidate, cross)[3] == null_id("fav_cat_x_item")


def _reference_modes(users, times, values, window, eligible):
    modes = []
    for i in range(len(users)):
        counts: dict[int, int] = {}
        latest: dict[int, int] = {}
        for j in range(i):
            if users[j] == users[i] and times[i] - times[j] <= window and eligible[j]:
                counts[values[j]] = counts.get(values[j], 0) + 1
                latest[values[j]] = j
        modes.append(latest[max(counts, key=lambda v: (counts[v], latest[v]))] if counts else -1)
    return modes


@pytest.mark.parametrize("seed, scale", [(0, 1), (1, 1), (2, 1), (3, 2**56)])
def test_most_frequent_in_window_matches_a_brute_force_reference(seed: int, scale: int) -> None:
    # scale 2**56 spreads times over ~2**61 per user, past the (user, time) int64 key: the rank path.
    rng = np.random.default_rng(seed)
    num_rows = 400
    users = np.sort(rng.integers(0, 12, num_rows))
    times = np.zeros(num_rows, dtype=np.int64)
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        times[rows] = np.sort(rng.integers(0, 40, rows.size)) * scale
    values = rng.integers(0, 4, num_rows)
    eligible = rng.random(num_rows) < 0.8
    for window in (0, 3 * scale, 10 * scale, 1000 * scale):
        got = most_frequent_in_window(users, times, values, window, eligible)
        assert got.tolist() == _reference_modes(users, times, values, window, eligible)


def test_weak_semantic_needs_sorted_events() -> None:
    cross = CrossSpec("fav", "weak_semantic", ["item_id", "item_id"])
    unsorted_users = pa.table({"user_id": [1, 2, 1], "timestamp": [0, 0, 1], "item_id": [1, 2, 3]})
    with pytest.raises(ValueError, match="not contiguous"):
        weak_semantic_keys(unsorted_users, cross)
    unsorted_times = pa.table({"user_id": [1, 1], "timestamp": [5, 1], "item_id": [1, 2]})
    with pytest.raises(ValueError, match="time decreases"):
        weak_semantic_keys(unsorted_times, cross)


def test_apply_crosses_passes_precomputed_weak_semantic_ids_through() -> None:
    table = _history()
    cross = CrossSpec("fav_x_item", "weak_semantic", ["item_id", "item_id"])
    with pytest.raises(ValueError, match="weak_semantic_keys"):
        apply_crosses(table, [cross])
    ids = weak_semantic_keys(table, cross)
    stored = table.append_column("fav_x_item", pa.array(ids))
    out_ids, lengths = apply_crosses(stored, [cross])["fav_x_item"]
    np.testing.assert_array_equal(out_ids, ids)
    assert lengths.tolist() == [1] * 8


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
    events = pa.table({"user_id": pa.array([], pa.int64()), "timestamp": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64())})
    assert weak_semantic_keys(events, CrossSpec("w", "weak_semantic", ["item_id", "item_id"])).size == 0
