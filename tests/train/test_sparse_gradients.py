"""Row-sparse table gradients kept in a dense ``.grad``: the same gradients and Adam updates as dense lookups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terarec.embedding.residual import ResSequenceEmbeddings
from terarec.models.hstu import HSTU
from terarec.models.sasrec import SASRec
from terarec.train.loop import clear_gradients, sparse_gradient_tables
from tests.models.sequences import batch, cycle_histories, inputs

MODELS = {
    "hstu": lambda: HSTU(HSTU.Config(embedding_dim=16, num_heads=2, max_length=10, num_negatives=6), inputs()),
    "sasrec": lambda: SASRec(SASRec.Config(embedding_dim=16, num_heads=2, max_length=10, num_negatives=6), inputs()),
}


def _train(make, sparse: bool, steps: int) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """``steps`` fused-Adam steps on cycle histories; the first step's gradients and the model."""
    torch.manual_seed(0)
    model = make().train()
    tables = sparse_gradient_tables(model) if sparse else []
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    first_gradients = {}
    for step in range(steps):
        torch.manual_seed(100 + step)  # the same dropout masks on both sides
        model.head.seed_negatives(0, step)
        loss = model.loss(batch(cycle_histories(6, 5, seed=step)))
        clear_gradients(optimizer, tables)
        loss.backward()
        if step == 0:
            first_gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
        optimizer.step()
    return first_gradients, model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparse_table_gradients_give_the_dense_gradients(name: str) -> None:
    dense, _ = _train(MODELS[name], sparse=False, steps=1)
    sparse, model = _train(MODELS[name], sparse=True, steps=1)
    assert model.items.weight.grad.layout == torch.strided  # Adam (fused) takes no sparse gradient
    table = "items.tables.embeddings.t_item_id.weight"
    assert (dense[table][0] == 0).all() and (dense[table][1:] != 0).any()  # row 0 is never looked up
    assert dense.keys() == sparse.keys()
    for key, gradient in dense.items():  # float32 sums in another order: equal to rounding
        torch.testing.assert_close(sparse[key], gradient, rtol=1e-5, atol=1e-6, msg=key)


def test_sparse_table_gradients_give_the_dense_updates() -> None:
    """HSTU over 15 steps (SASRec's key bias has a zero gradient up to rounding, which Adam's
    normalisation turns into steps of random sign: no test of equal updates there)."""
    _, dense = _train(MODELS["hstu"], sparse=False, steps=15)
    _, sparse = _train(MODELS["hstu"], sparse=True, steps=15)
    # Adam's 15 steps (lr 0.01) grow the rounding to ~1e-5 of a tensor's largest value; a lost or
    # doubled gradient would move rows by ~lr per step.
    for (key, after_sparse), after_dense in zip(sparse.state_dict().items(), dense.state_dict().values()):
        scale = after_dense.abs().max().item() if after_dense.is_floating_point() else 0.0
        torch.testing.assert_close(after_sparse, after_dense, rtol=0, atol=5e-5 * scale, msg=key)


def test_kept_gradient_is_zeroed_in_place_and_others_dropped() -> None:
    model = MODELS["hstu"]().train()
    (table,) = sparse_gradient_tables(model)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    clear_gradients(optimizer, [table])
    kept = table.grad
    model.loss(batch(cycle_histories(3, 4))).backward()
    assert table.grad is kept and kept.abs().sum() > 0  # the sparse rows were added into it
    clear_gradients(optimizer, [table])
    assert table.grad is kept and (kept == 0).all()
    assert all(p.grad is None for p in model.parameters() if p is not table)


def test_a_computed_table_keeps_dense_gradients() -> None:
    """Res-embedding's table is computed from its parameters: no sparse gradients are sent to it."""
    model = MODELS["sasrec"]()
    model.items = ResSequenceEmbeddings(model.items.vocabularies["item_id"], np.zeros(13, dtype=np.int64), 16)
    assert sparse_gradient_tables(model) == []
    assert not model.head.sparse_gradients
