"""HSTU ranking: interleaved tokens, causality at item tokens, M-FALCON serving equals forward."""

from __future__ import annotations

import numpy as np
import torch

from terarec.data.ranking import RankingBatch
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.features.hashing import hash_ints
from terarec.models.hstu_ranking import HSTURanking
from terarec.models.inputs import ModelInputs


def _ids(values, slot: str) -> torch.Tensor:
    return torch.from_numpy(hash_ints(np.asarray(values), slot))


def _inputs() -> ModelInputs:
    sizes = {"item_id": 20, "hour": 24, "age": 5}
    return ModelInputs(vocabularies={slot: ExactVocabulary(hash_ints(np.arange(n), slot)) for slot, n in sizes.items()})


def _model(**options) -> HSTURanking:
    torch.manual_seed(0)
    config = HSTURanking.Config(embedding_dim=16, num_layers=2, num_heads=2, max_events=8, dropout=0.0,
                                item_features=["hour"], user_features=["age"], head_mlp=[8], **options)
    return HSTURanking(config, _inputs()).eval()


def _batch(series: list[list[int]], candidate: list[bool] | None = None, seed: int = 0) -> RankingBatch:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([len(s) for s in series])
    items = [i for s in series for i in s]
    n = len(items)
    actions = torch.stack([torch.randint(0, 2, (n,), generator=generator).float(),
                           torch.randint(0, 2, (n,), generator=generator).float(),
                           torch.rand(n, generator=generator) * 100], 1)
    is_candidate = torch.zeros(n, dtype=torch.bool)
    if candidate is not None:
        ends = torch.cumsum(lengths, 0) - 1
        is_candidate[ends[torch.tensor(candidate)]] = True
    times = torch.cat([torch.cumsum(torch.randint(1, 5000, (len(s),), generator=generator), 0) for s in series])
    return RankingBatch(
        user_ids=torch.arange(len(series)),
        lengths=lengths,
        item_ids=_ids(items, "item_id"),
        timestamps=times,
        actions=actions,
        is_candidate=is_candidate,
        features={"hour": _ids(np.arange(n) % 24, "hour")},
        user_features={"age": _ids(np.arange(len(series)) % 5, "age")},
    )


def test_interleaved_tokens_and_shapes() -> None:
    model = _model()
    batch = _batch([[1, 2, 3], [4, 5]], candidate=[True, False])
    x, times, token_lengths, item_index = model.tokens(batch)
    # user token + (item, action) per event, the candidate without its action token
    assert token_lengths.tolist() == [1 + 2 + 2 + 1, 1 + 2 + 2]
    assert item_index.tolist() == [1, 3, 5, 7, 9]
    assert x.shape == (11, 16) and times.shape == (11,)
    assert model(batch).shape == (1, 3)
    assert torch.isfinite(model.loss(batch))


def test_an_item_token_never_sees_its_own_or_later_actions() -> None:
    model = _model()
    batch = _batch([[1, 2, 3, 4, 5]])
    before, _ = model.encode(batch)
    batch.actions[2] = torch.tensor([1.0 - batch.actions[2, 0], 1.0 - batch.actions[2, 1], 999.0])
    after, _ = model.encode(batch)
    torch.testing.assert_close(after[:3], before[:3])  # events 0..2: item token 2 comes before action 2
    assert not torch.allclose(after[3:], before[3:])


def test_mfalcon_serving_equals_appending_each_candidate() -> None:
    model = _model()
    history = _batch([[3, 1, 4, 1, 5, 9]], seed=1)
    candidates = [2, 6, 5, 3, 7]
    request_time = int(history.timestamps[-1]) + 3600
    hours = _ids([7, 8, 9, 10, 11], "hour")
    served = model.score_candidates(history, _ids(candidates, "item_id"), {"hour": hours},
                                    torch.full((5,), request_time), micro_batch=2)
    expected = []
    with torch.no_grad():
        for i, item in enumerate(candidates):
            one = _batch([[3, 1, 4, 1, 5, 9, item]], candidate=[True], seed=1)
            one.item_ids[:6], one.timestamps[:6], one.actions[:6] = history.item_ids, history.timestamps, history.actions
            one.timestamps[6] = request_time
            one.features["hour"] = torch.cat([history.features["hour"], hours[i : i + 1]])
            expected.append(model(one)[0])
    torch.testing.assert_close(served, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_mfalcon_over_several_users_equals_each_user_alone() -> None:
    model = _model()
    histories = _batch([[3, 1, 4, 1, 5, 9], [2, 7], [8, 8, 1]], seed=2)
    candidates = [[2, 6, 5], [3, 7, 11, 12], [4]]
    starts = [0, 6, 8, 11]
    alone = []
    for user, items in enumerate(candidates):
        events = slice(starts[user], starts[user + 1])
        one = RankingBatch(user_ids=histories.user_ids[user:user + 1], lengths=histories.lengths[user:user + 1],
                           item_ids=histories.item_ids[events], timestamps=histories.timestamps[events],
                           actions=histories.actions[events], is_candidate=histories.is_candidate[events],
                           features={k: v[events] for k, v in histories.features.items()},
                           user_features={k: v[user:user + 1] for k, v in histories.user_features.items()})
        alone.append(model.score_candidates(one, _ids(items, "item_id"), {"hour": _ids([1] * len(items), "hour")},
                                            micro_batch=2))
    flat = [item for items in candidates for item in items]
    together = model.score_candidates(histories, _ids(flat, "item_id"), {"hour": _ids([1] * len(flat), "hour")},
                                      micro_batch=2, num_candidates=torch.tensor([3, 4, 1]))
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_learns_from_a_few_steps() -> None:
    model = _model()
    model.train()
    batch = _batch([[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch).item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert model.loss(batch).item() < 0.5 * first
