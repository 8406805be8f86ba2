"""The rand_like dropout: F.dropout's distribution (keep 1 - p, scale 1 / (1 - p)), its gradient, its edges."""

from __future__ import annotations

import pytest
import torch

from terarec.layers.dropout import dropout


def test_keeps_a_fraction_one_minus_p_scaled_and_gradient_is_the_mask() -> None:
    torch.manual_seed(0)
    values = torch.full((400, 250), 3.0, requires_grad=True)
    out = dropout(values, 0.3, training=True)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.7) < 0.005  # 100k draws: sd of the fraction ~0.0015
    torch.testing.assert_close(out[kept], torch.full((int(kept.sum()),), 3.0 / 0.7))
    out.sum().backward()
    torch.testing.assert_close(values.grad, kept.float() / 0.7)


def test_identity_in_eval_or_at_zero_and_zeros_at_one() -> None:
    values = torch.randn(5, 4)
    assert dropout(values, 0.5, training=False) is values
    assert dropout(values, 0.0, training=True) is values
    assert torch.equal(dropout(values, 1.0, training=True), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="p must lie in"):
        dropout(values, 1.5, training=True)
