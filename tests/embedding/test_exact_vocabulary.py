"""Tests for terarec.embedding.exact_vocabulary.ExactVocabulary: known ids -> 1..N, unknown -> 0 (counted)."""

from __future__ import annotations

import numpy as np
import torch

from terarec.embedding.exact_vocabulary import DEFAULT_ROW, ExactVocabulary
from terarec.features.hashing import hash_ints


def test_known_ids_map_to_one_based_rows_in_sorted_order() -> None:
    vocab = ExactVocabulary(np.array([30, -5, 10, 30, 20]))  # unsorted, with a duplicate
    assert vocab.num_rows == 5  # 4 distinct ids + the default row
    assert vocab.ids.tolist() == [-5, 10, 20, 30]
    assert vocab(torch.tensor([-5, 10, 20, 30])).tolist() == [1, 2, 3, 4]
    assert vocab(torch.tensor([30, 30, -5])).tolist() == [4, 4, 1]
    assert int(vocab.unknown_count) == 0


def test_hashed_64bit_ids_including_extremes() -> None:
    ids = np.concatenate([hash_ints(np.arange(100), "item_id"), [np.iinfo(np.int64).min, np.iinfo(np.int64).max]])
    vocab = ExactVocabulary(ids)
    rows = vocab(torch.from_numpy(ids))
    # Row of each id is 1 + its position in sorted order.
    expected = np.searchsorted(np.sort(ids), ids) + 1
    assert rows.tolist() == expected.tolist()
    assert sorted(rows.tolist()) == list(range(1, ids.size + 1))


def test_unknown_ids_go_to_row_zero_and_are_counted() -> None:
    vocab = ExactVocabulary(np.array([10, 20, 30]))
    rows = vocab(torch.tensor([5, 10, 25, 35, 30, 10**15]))  # below, between and above the known ids
    assert rows.tolist() == [DEFAULT_ROW, 1, DEFAULT_ROW, DEFAULT_ROW, 3, DEFAULT_ROW]
    assert int(vocab.unknown_count) == 4
    vocab(torch.tensor([99]))
    assert int(vocab.unknown_count) == 5


def test_empty_vocabulary() -> None:
    vocab = ExactVocabulary(np.zeros(0, np.int64))
    assert vocab.num_rows == 1
    assert vocab(torch.tensor([1, 2, 3])).tolist() == [0, 0, 0]
    assert int(vocab.unknown_count) == 3


def test_empty_batch() -> None:
    vocab = ExactVocabulary(np.array([1, 2]))
    assert vocab(torch.zeros(0, dtype=torch.int64)).numel() == 0
    assert int(vocab.unknown_count) == 0


def test_accepts_a_tensor() -> None:
    vocab = ExactVocabulary(torch.tensor([3, 1, 2]))
    assert vocab(torch.tensor([1, 2, 3, 4])).tolist() == [1, 2, 3, 0]


def test_state_dict_round_trip() -> None:
    vocab = ExactVocabulary(np.array([7, 3, 11]))
    vocab(torch.tensor([3, 100]))  # one unknown
    state = {f"vocab.{k}": v.clone() for k, v in vocab.state_dict().items()}
    assert set(state) == {"vocab.ids", "vocab.unknown_count"}

    restored = ExactVocabulary(state["vocab.ids"].numpy())  # how a checkpoint's ids rebuild it
    restored.load_state_dict({k.removeprefix("vocab."): v for k, v in state.items()})
    assert restored.ids.tolist() == [3, 7, 11]
    assert int(restored.unknown_count) == 1
    assert restored(torch.tensor([11, 7, 3, 0])).tolist() == [3, 2, 1, 0]
    assert restored.num_rows == vocab.num_rows


def test_vocabulary_state_travels_inside_a_parent_module() -> None:
    parent = torch.nn.ModuleDict({"item": ExactVocabulary(np.array([5, 6]))})
    state = parent.state_dict()
    other = torch.nn.ModuleDict({"item": ExactVocabulary(np.array([8, 9]))})
    other.load_state_dict(state)
    assert other["item"](torch.tensor([5, 6, 8])).tolist() == [1, 2, 0]
