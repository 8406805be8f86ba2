"""Jagged helpers: positions, next-item pairs, padding round trip."""

from __future__ import annotations

import torch

from terarec.layers.jagged import (
    last_index,
    next_item_split,
    padded_index,
    padding_mask,
    positions,
    positions_from_end,
    to_jagged,
    to_padded,
)


def test_positions_and_pairs() -> None:
    lengths = torch.tensor([3, 1, 2])
    assert positions(lengths).tolist() == [0, 1, 2, 0, 0, 1]
    assert positions_from_end(lengths).tolist() == [2, 1, 0, 0, 1, 0]
    assert last_index(lengths).tolist() == [2, 3, 5]
    is_input, is_target, input_lengths = next_item_split(lengths)
    assert is_input.tolist() == [True, True, False, False, True, False]
    assert is_target.tolist() == [False, True, True, False, False, True]
    assert input_lengths.tolist() == [2, 0, 1]


def test_padding_round_trip() -> None:
    lengths = torch.tensor([2, 0, 3])
    values = torch.arange(10.0).view(5, 2)
    index = padded_index(lengths, 3)
    padded = to_padded(values, index, 3, 3)
    assert padded.shape == (3, 3, 2)
    assert padded[1].abs().sum() == 0 and padded[0, 2].abs().sum() == 0
    torch.testing.assert_close(padded[2], values[2:])
    torch.testing.assert_close(to_jagged(padded, index), values)
    assert padding_mask(lengths, 3).tolist() == [[True, True, False], [False] * 3, [True] * 3]
