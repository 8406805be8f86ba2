"""The sampled-softmax retrieval head: positives never negatives, full catalogue, in-batch, L2 and temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from terarec.layers.retrieval import SampledSoftmax, own_target_columns


def test_the_positive_is_never_a_negative() -> None:
    torch.manual_seed(0)
    table = torch.randn(5, 4)  # rows 1..4 are items: 64 draws cover every one
    targets = torch.tensor([1, 2, 3, 4, 2])
    logits, rows = SampledSoftmax(num_negatives=64).logits(torch.randn(5, 4), targets, table)
    assert logits.shape == (5, 65) and (rows >= 1).all()  # row 0 (unknown ids) never sampled
    same = rows.unsqueeze(0) == targets.unsqueeze(1)
    assert same.any()
    assert torch.isneginf(logits[:, 1:][same]).all() and torch.isfinite(logits[:, 1:][~same]).all()
    assert torch.isfinite(logits[:, 0]).all()


def test_full_catalogue_equals_cross_entropy_over_rows() -> None:
    torch.manual_seed(0)
    users, table, targets = torch.randn(3, 4), torch.randn(6, 4), torch.tensor([1, 5, 2])
    expected_logits = users @ table.T
    expected_logits[:, 0] = -torch.inf
    expected = F.cross_entropy(expected_logits, targets)
    torch.testing.assert_close(SampledSoftmax(num_negatives=0).loss(users, targets, table), expected)


def test_l2_norm_and_temperature() -> None:
    users, table = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0]])
    head = SampledSoftmax(num_negatives=0, temperature=0.1, l2_norm=True)
    logits, rows = head.logits(users, torch.tensor([1]), table)
    assert rows.tolist() == [1, 2]
    # cosines: target row 1 -> 0.6, row 2 -> 0.8; row 1 is the positive, so masked among negatives
    torch.testing.assert_close(logits, torch.tensor([[6.0, -math.inf, 8.0]]))
    scores = head.score_catalogue(users, table)
    assert torch.isneginf(scores[0, 0])
    torch.testing.assert_close(scores[0, 1:], torch.tensor([0.6, 0.8]))


def test_in_batch_negatives_are_the_distinct_targets() -> None:
    users, table = torch.randn(4, 3), torch.randn(10, 3)
    targets = torch.tensor([7, 2, 7, 9])
    logits, rows = SampledSoftmax(num_negatives=0, in_batch=True).logits(users, targets, table)
    assert rows.tolist() == [2, 7, 9]
    assert torch.isneginf(logits[0, 2]) and torch.isneginf(logits[1, 1]) and torch.isfinite(logits[0, 1])


def test_per_position_negatives_are_drawn_for_each_position() -> None:
    torch.manual_seed(0)
    users, table = torch.randn(6, 3), torch.randn(5, 3)
    targets = torch.tensor([1, 2, 3, 4, 1, 2])
    head = SampledSoftmax(num_negatives=40, per_position=True)
    logits, rows = head.logits(users, targets, table)
    assert rows.shape == (6, 40) and (rows >= 1).all() and (rows < 5).all()
    assert not (rows == rows[0]).all()  # each position has its own draw
    same = rows == targets.unsqueeze(1)
    assert same.any() and torch.isneginf(logits[:, 1:][same]).all()
    torch.testing.assert_close(logits[:, 1:][~same], (users.unsqueeze(1) * table[rows]).sum(-1)[~same])
    torch.testing.assert_close(logits[:, 0], (users * table[targets]).sum(-1))


def test_per_position_with_in_batch_adds_the_distinct_targets_to_every_row() -> None:
    torch.manual_seed(0)
    users, table, targets = torch.randn(4, 3), torch.randn(10, 3), torch.tensor([7, 2, 7, 9])
    logits, rows = SampledSoftmax(num_negatives=3, in_batch=True, per_position=True).logits(users, targets, table)
    assert rows.shape == (4, 6) and rows[:, 3:].tolist() == [[2, 7, 9]] * 4
    assert torch.isneginf(logits[0, 1 + 4]) and torch.isneginf(logits[1, 1 + 3]) and torch.isfinite(logits[1, 1 + 4])


def test_per_position_scores_agree_whether_rows_are_gathered_or_the_catalogue_scored() -> None:
    users, targets = torch.randn(3, 4, dtype=torch.float64), torch.tensor([1, 2, 3])
    for rows_in_table, negatives in ((50, 4), (5, 40)):  # 12 gathered rows < 50; 120 > 5
        table = torch.randn(rows_in_table, 4, dtype=torch.float64)
        head = SampledSoftmax(num_negatives=negatives, per_position=True, l2_norm=True)
        logits, rows = head.logits(users, targets, table)
        expected = (F.normalize(users, dim=-1).unsqueeze(1) * F.normalize(table[rows], dim=-1)).sum(-1)
        finite = rows != targets.unsqueeze(1)
        torch.testing.assert_close(logits[:, 1:][finite], expected[finite])


def test_per_position_without_negatives_is_refused() -> None:
    with pytest.raises(ValueError, match="num_negatives > 0"):
        SampledSoftmax(num_negatives=0, per_position=True)


def test_shared_negatives_loss_and_table_gradient_match_the_formula() -> None:
    """The positives and negatives come from one gather of the table: loss and the table's gradient
    equal the written-out sampled softmax (separate lookups, L2 norm, temperature), in float64."""
    generator = torch.Generator().manual_seed(3)
    users = torch.randn(6, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    table = torch.randn(9, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 8, 2, 5])
    head = SampledSoftmax(num_negatives=7, temperature=0.2, l2_norm=True)
    loss = head.loss(users, targets, table, torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(loss, (users, table))

    rows = torch.randint(1, 9, (7,), generator=torch.Generator().manual_seed(1))  # the head's draw
    unit_users, unit_table = F.normalize(users, dim=-1), F.normalize(table, dim=-1)
    negatives = (unit_users @ unit_table[rows].T).masked_fill(rows == targets.unsqueeze(1), -math.inf)
    positives = (unit_users * unit_table[targets]).sum(-1, keepdim=True)
    expected = F.cross_entropy(torch.cat([positives, negatives], 1) / 0.2, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, torch.autograd.grad(expected, (users, table))):
        torch.testing.assert_close(got, want)


def test_seeded_negatives_depend_on_the_seed_and_step_alone() -> None:
    users, table, targets = torch.randn(6, 4), torch.randn(500, 4), torch.randint(1, 500, (6,))

    def negatives(seed: int, step: int, batch: slice = slice(None)) -> list[int]:
        head = SampledSoftmax(num_negatives=16)
        head.seed_negatives(seed, step)
        torch.manual_seed(seed * 100 + step + 1)  # the global generator plays no part
        return head.logits(users[batch], targets[batch], table)[1].tolist()

    assert negatives(0, 5) == negatives(0, 5)
    assert negatives(0, 5, slice(0, 2)) == negatives(0, 5, slice(2, 6))  # each share of a batch: the same draw
    assert negatives(0, 5) != negatives(0, 6)
    assert negatives(0, 5) != negatives(1, 5)


def test_own_target_columns_are_the_nonzeros_of_the_comparison() -> None:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(1, 9, (40,), generator=generator)  # many repeats
    targets = torch.randint(1, 12, (30,), generator=generator)  # some never drawn
    position, column = own_target_columns(rows, targets)
    expected = (rows.unsqueeze(0) == targets.unsqueeze(1)).nonzero()
    found = sorted(zip(position.tolist(), column.tolist()))
    assert found == sorted(map(tuple, expected.tolist())) and len(found) > len(targets)


def test_sampled_loss_gradients_equal_the_masked_cross_entropy() -> None:
    """The hidden own targets take no masking pass in backward: the gradients are those of the
    plain masked_fill graph, in float64."""
    torch.manual_seed(0)
    users = torch.randn(20, 8, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 7, (20,))
    head = SampledSoftmax(num_negatives=16, temperature=0.05, l2_norm=True)
    head.seed_negatives(0, 3)
    head.loss(users, targets, table).backward()
    fast = [users.grad.clone(), table.grad.clone()]
    users.grad, table.grad = None, None
    head.seed_negatives(0, 3)
    rows = head.logits(users.detach(), targets, table.detach())[1]
    u, e = F.normalize(users, dim=-1, eps=head.eps), F.normalize(table, dim=-1, eps=head.eps)
    negatives = (u @ e[rows].T).masked_fill(rows.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
    logits = torch.cat([(u * e[targets]).sum(-1, keepdim=True), negatives], 1) / head.temperature
    F.cross_entropy(logits, torch.zeros(20, dtype=torch.long)).backward()
    torch.testing.assert_close(fast, [users.grad, table.grad], rtol=1e-12, atol=1e-12)
