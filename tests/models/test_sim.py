"""SIM: hard and soft search (GSU), multi-head target attention (ESU), learning from the history."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from terarec.config import ConfigError
from terarec.layers.target_attention import MultiHeadTargetAttention
from terarec.models.sim import SIM
from terarec.train.loop import train
from tests.models.test_din import (
    HISTORY,
    history_config,
    tiny_batch,
    tiny_inputs,
)


def _model(**options) -> SIM:
    torch.manual_seed(0)
    config = SIM.Config(**{"embedding_dim": 4, "history": HISTORY, "history_extra": ["hist_rating"], "top_k": 2,
                           "num_heads": 2, "mlp": [16], **options})
    return SIM(config, tiny_inputs(extra=True))


def test_hard_search_keeps_only_the_latest_items_of_the_target_category() -> None:
    model = _model()
    # Genre of item i is 100 + i % 3: target 4 is genre 101, as are 1 and 7 (and 4) in its history.
    batch = tiny_batch([4, 2, 3], [[1, 2, 7, 3, 4, 8], [2], [1, 2]], extra=True)
    behaviors = model.behaviors(batch.sparse_features)
    _, _, kept, kept_mask = model.search(behaviors)
    items = behaviors.history_ids[..., 0].gather(1, kept)  # (B, K) item ids at the kept positions
    assert sorted(items[0][kept_mask[0]].tolist()) == [4, 7]  # the two latest of 1, 7, 4
    assert items[1][kept_mask[1]].tolist() == [2]  # fewer matches than K: the rest is padding
    assert kept_mask[2].sum() == 0  # nothing of genre 100 in [1, 2]
    genres = behaviors.history_ids[..., 1].gather(1, kept)
    assert (genres[kept_mask] == behaviors.target_ids[:, 1:].expand_as(genres)[kept_mask]).all()
    logits = model(batch)
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()


def test_soft_search_keeps_the_top_scores_and_trains_them_by_an_auxiliary_loss() -> None:
    model = _model(search="soft", aux_weight=0.5)
    batch = tiny_batch([4, 2], [[1, 2, 7, 3, 4, 8], [2, 5, 6]], extra=True)
    behaviors = model.behaviors(batch.sparse_features)
    scores, searchable, kept, kept_mask = model.search(behaviors)
    best = scores.masked_fill(~searchable, -torch.inf).topk(2, dim=1).values
    assert torch.equal(scores.gather(1, kept), best) and kept_mask.all()
    model.train()
    logits, aux_logits = model._forward(batch)
    loss = model.loss(batch)
    expected = F.binary_cross_entropy_with_logits(logits, batch.labels) + 0.5 * F.binary_cross_entropy_with_logits(
        aux_logits, batch.labels)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.project_history.weight.grad.abs().sum() > 0  # W_b learns through the auxiliary task


def test_multi_head_attention_ignores_padding() -> None:
    torch.manual_seed(0)
    attention = MultiHeadTargetAttention(8, 2, query_dim=4, key_dim=6)
    target, history = torch.randn(2, 4), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [False] * 5])
    changed = history.clone()
    changed[0, 3:] = 50.0
    out = attention(target, history, mask)
    assert out.shape == (2, 8) and torch.allclose(out, attention(target, changed, mask), atol=1e-6)
    assert torch.allclose(out[1], attention.output.bias)  # no history: only the output bias


def test_sim_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="model.category"):
        _model(category="hist_colour")
    with pytest.raises(ConfigError, match="model.num_heads"):
        _model(num_heads=5)
    with pytest.raises(ConfigError, match="model.top_k"):
        _model(top_k=0)


def test_sim_learns_what_only_the_history_tells(taste_data: Path, tmp_path: Path) -> None:
    model = ("model={name: sim, embedding_dim: 8, history: {hist_item_id: item_id, hist_genre: genre}, "
             "mlp: [32], top_k: 4, num_heads: 2}")
    assert train(history_config(taste_data, tmp_path, model), progress=False).test["auc"] > 0.75
