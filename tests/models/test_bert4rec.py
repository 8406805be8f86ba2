"""BERT4Rec: shapes, bidirectional attention, padding invariance, the cloze objective, learning."""

from __future__ import annotations

import torch

from terarec.models.bert4rec import BERT4Rec
from tests.models.sequences import (
    batch,
    check_padding_invariance,
    check_scores,
    inputs,
    learns_the_cycle,
)


def _model(**options) -> BERT4Rec:
    torch.manual_seed(0)
    return BERT4Rec(BERT4Rec.Config(embedding_dim=16, num_layers=2, num_heads=2, max_length=10, **options), inputs())


def test_scores_the_catalogue_without_row_zero() -> None:
    check_scores(_model(), [[1, 2, 3], [4], [5, 6, 7, 8, 9]])


def test_padding_invariant() -> None:
    check_padding_invariance(_model(), [1, 2, 3, 4, 5, 6, 7, 8], [9, 2, 6])


def test_attention_is_bidirectional() -> None:
    model = _model().eval()
    embeddings = model.items(batch([[3, 1, 4, 1, 5]]).item_ids).values()
    changed = embeddings.clone()
    changed[-1] = model.items.weight[9]
    lengths = torch.tensor([5])
    with torch.no_grad():
        assert not torch.allclose(model.encode(embeddings, lengths)[0], model.encode(changed, lengths)[0])


def test_cloze_loss_masks_at_least_one_item_per_sequence() -> None:
    model = _model(mask_probability=1e-9)  # nothing masked at random: each sequence's last item is
    loss = model.loss(batch([[1, 2, 3, 4], [5, 6]]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.mask_embedding.grad is not None and model.mask_embedding.grad.abs().sum() > 0


def test_learns_a_deterministic_next_item() -> None:
    torch.manual_seed(0)
    config = BERT4Rec.Config(embedding_dim=32, num_layers=1, num_heads=1, max_length=8, dropout=0.0, mask_probability=0.3)
    # The cloze objective learns the walk more slowly than next-item training: chance is 1/12.
    assert learns_the_cycle(BERT4Rec(config, inputs()), steps=70, lr=0.005) > 0.5
