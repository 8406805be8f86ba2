"""Tiny sequence batches and checks shared by the next-item model tests (HSTU, SASRec, BERT4Rec, GRU4Rec)."""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data.batches import SequenceBatch
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.models.inputs import ModelInputs

NUM_ITEMS = 12  # raw item ids 1..12 map to rows 1..12


def inputs(num_items: int = NUM_ITEMS) -> ModelInputs:
    return ModelInputs(vocabularies={"item_id": ExactVocabulary(np.arange(1, num_items + 1))})


def batch(
    histories: list[list[int]],
    timestamps: list[list[int]] | None = None,
    targets: list[int] | None = None,
    target_timestamps: list[int] | None = None,
) -> SequenceBatch:
    """A SequenceBatch of raw item ids (oldest first); timestamps default to 100 s apart."""
    if timestamps is None:
        timestamps = [[100 * t for t in range(len(h))] for h in histories]
    flat = [i for h in histories for i in h]
    return SequenceBatch(
        user_ids=torch.arange(len(histories)),
        item_ids=KeyedJaggedTensor.from_lengths_sync(
            keys=["item_id"], values=torch.tensor(flat, dtype=torch.int64), lengths=torch.tensor([len(h) for h in histories])
        ),
        timestamps=torch.tensor([t for ts in timestamps for t in ts], dtype=torch.int64),
        actions=torch.zeros(len(flat), 0),
        target_item_ids=None if targets is None else torch.tensor(targets, dtype=torch.int64),
        target_timestamps=None if target_timestamps is None else torch.tensor(target_timestamps, dtype=torch.int64),
    )


def cycle_histories(count: int, length: int, num_items: int = NUM_ITEMS, seed: int = 0) -> list[list[int]]:
    """Histories that walk the catalogue in order (next item = current + 1, wrapping)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(1, num_items + 1, count)
    return [[int((s - 1 + t) % num_items) + 1 for t in range(length)] for s in starts]


def check_scores(model, histories: list[list[int]]) -> torch.Tensor:
    """score_catalogue is (B, rows) with row 0 never a candidate; returns the scores."""
    model.eval()
    with torch.no_grad():
        scores = model.score_catalogue(batch(histories))
    assert scores.shape == (len(histories), NUM_ITEMS + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    assert torch.isfinite(scores[:, 1:]).all()
    return scores


def check_padding_invariance(model, long_history: list[int], short_history: list[int]) -> None:
    """A history scores the same alone as beside a longer one (padded in the batch)."""
    model.eval()
    with torch.no_grad():
        alone = model.user_vectors(batch([short_history]))
        together = model.user_vectors(batch([long_history, short_history, long_history[:2]]))
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


def check_causal(model, history: list[int]) -> None:
    """Changing the last item never changes the outputs at earlier positions."""
    model.eval()
    changed = history[:-1] + [history[-1] % NUM_ITEMS + 1]
    with torch.no_grad():
        before = model.encode(batch([history]), None, torch.tensor([len(history)]))
        after = model.encode(batch([changed]), None, torch.tensor([len(history)]))
    torch.testing.assert_close(before[:-1], after[:-1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before[-1], after[-1])


def learns_the_cycle(model, steps: int = 50, lr: float = 0.02, length: int = 6) -> float:
    """Train on cycling histories; return HR@1 of the next item on fresh ones (near 1 if it learned)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        loss = model.loss(batch(cycle_histories(32, length, seed=step)))
        loss.backward()
        optimizer.step()
    histories = cycle_histories(64, length - 1, seed=10_000)
    targets = torch.tensor([h[-1] % NUM_ITEMS + 1 for h in histories])
    model.eval()
    with torch.no_grad():
        scores = model.score_catalogue(batch(histories))
    return float((scores.argmax(1) == model.item_rows(targets)).float().mean())
