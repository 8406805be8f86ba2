"""The unified feature space: first event of each unchanged run, merged by time."""

from __future__ import annotations

import pyarrow as pa
import pytest

from terarec.data.errors import DataError
from terarec.data.unified import first_of_runs, merge_series


def test_keeps_the_first_event_of_each_run_per_user() -> None:
    table = pa.table({
        "user_id": [1, 1, 1, 1, 2, 2, 1],
        "timestamp": [1, 2, 3, 4, 1, 2, 5],
        "city": ["a", "a", "b", "b", "b", "b", "a"],
    })
    kept = first_of_runs(table)
    assert kept.column("user_id").to_pylist() == [1, 1, 1, 2]
    assert kept.column("timestamp").to_pylist() == [1, 3, 5, 1]  # a -> b -> back to a is a new run
    assert kept.column("city").to_pylist() == ["a", "b", "a", "b"]


def test_rows_in_any_order_joint_values_nulls_and_sets() -> None:
    table = pa.table({
        "user_id": [1, 1, 1, 1, 1],
        "timestamp": [4, 2, 1, 3, 5],
        "age": [31, 30, 30, 31, 31],
        "followed": [None, [2, 1], [1, 2], None, [3]],
    })
    kept = first_of_runs(table, ["age", "followed"])
    assert kept.column("timestamp").to_pylist() == [1, 3, 5]  # {1,2} = {2,1}; null = null
    assert first_of_runs(table, ["age"]).column("timestamp").to_pylist() == [1, 3]


def test_merges_by_time_auxiliary_first_at_ties() -> None:
    main = pa.table({"user_id": [1, 1, 2], "timestamp": [10, 30, 5], "item_id": [7, 8, 9]})
    age = pa.table({"user_id": [1, 1, 1, 2], "timestamp": [0, 20, 30, 5], "age_bucket": [3, 3, 4, 2]})
    followed = pa.table({"user_id": [1], "timestamp": [10], "category": [[4]]})
    merged = merge_series(main, {"age": age, "follows": followed})
    assert merged.column("series").to_pylist() == ["age", "follows", "main", "age", "main", "age", "main"]
    assert merged.column("timestamp").to_pylist() == [0, 10, 10, 30, 30, 5, 5]
    assert merged.column("user_id").to_pylist() == [1, 1, 1, 1, 1, 2, 2]
    assert merged.column("item_id").to_pylist() == [None, None, 7, None, 8, None, 9]
    assert merged.column("age_bucket").to_pylist() == [3, None, None, 4, None, 2, None]


def test_errors_name_the_missing_column() -> None:
    with pytest.raises(DataError, match="timestamp"):
        first_of_runs(pa.table({"user_id": [1], "city": ["a"]}))
    with pytest.raises(ValueError, match="main"):
        merge_series(pa.table({"user_id": [1], "timestamp": [1]}), {"main": pa.table({"user_id": [1]})})
