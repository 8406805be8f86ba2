"""Jagged helpers: positions, next-item pairs, padding round trip."""

from __future__ import annotations

import torch

from terarec.layers.jagged import (
    last_index,
    next_item_split,
    padded_index,
    padding_mask,
    place_rows,
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


def test_placed_rows_equal_a_scatter_into_zeros_forward_and_backward() -> None:
    torch.manual_seed(0)
    cached, new = torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, 3, dtype=torch.float64,
                                                                                           requires_grad=True)
    cached_index, new_index = torch.tensor([7, 0, 2, 9]), torch.tensor([1, 8, 4])
    placed = place_rows(11, (cached, cached_index), (new, new_index))
    expected = torch.zeros(11, 3, dtype=torch.float64).index_copy(0, cached_index, cached).index_copy(0, new_index, new)
    assert torch.equal(placed, expected)
    assert placed[[3, 5, 6, 10]].abs().sum() == 0  # rows no part names stay zero
    assert torch.autograd.gradcheck(lambda a, b: place_rows(11, (a, cached_index), (b, new_index)), (cached, new))
    weights = torch.randn(11, 3, dtype=torch.float64)
    (placed * weights).sum().backward()
    assert torch.equal(cached.grad, weights[cached_index]) and torch.equal(new.grad, weights[new_index])


def test_to_padded_keeps_integer_values() -> None:
    lengths = torch.tensor([2, 3])
    times = torch.tensor([10, 11, 20, 21, 22])
    assert to_padded(times, padded_index(lengths, 3), 2, 3).tolist() == [[10, 11, 0], [20, 21, 22]]
