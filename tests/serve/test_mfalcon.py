"""M-FALCON: each candidate scores as if appended alone to the history; micro-batches and other
candidates do not change it."""

from __future__ import annotations

import pytest
import torch

from terarec.layers.hstu import HSTUStack
from terarec.serve.mfalcon import cache_history, mfalcon, score_candidates

D = 8


def _stack(**options) -> HSTUStack:
    torch.manual_seed(0)
    settings = {"embedding_dim": D, "num_layers": 2, "num_heads": 2, "attention_dim": 4, "linear_dim": 3,
                "dropout": 0.0, "max_length": 16, "num_buckets": 32}
    settings.update(options)
    stack = HSTUStack(HSTUStack.Options(**settings)).double().eval()
    with torch.no_grad():  # visible biases, so a wrong position or time gap shows
        for layer in stack.layers:
            for weights in (layer.bias.position_weights, layer.bias.time_weights):
                if weights is not None:
                    weights.normal_(std=1.0)
    return stack


def _inputs(n: int, m: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    history = torch.randn(n, D, generator=generator, dtype=torch.float64)
    candidates = torch.randn(m, D, generator=generator, dtype=torch.float64)
    history_times = torch.cumsum(torch.randint(1, 5000, (n,), generator=generator), 0)
    candidate_times = history_times[-1] + torch.randint(0, 10**6, (m,), generator=generator)
    return history, candidates, history_times, candidate_times


def _appended_one_by_one(stack, history, candidates, history_times, candidate_times, request_times):
    """The reference: the full stack on history + [candidate], causal, one candidate at a time."""
    rows = []
    with torch.no_grad():
        for i in range(candidates.shape[0]):
            x = torch.cat([history, candidates[i : i + 1]])
            times = torch.cat([history_times, candidate_times[i : i + 1]])
            queries = torch.cat([history_times, request_times[i : i + 1]])
            rows.append(stack(x, torch.tensor([x.shape[0]]), times, queries)[-1])
    return torch.stack(rows)


@pytest.mark.parametrize("options", [{}, {"softmax": True}, {"num_buckets": 0}, {"position_bias": False}])
def test_equals_the_full_stack_on_history_plus_candidate(options) -> None:
    stack = _stack(**options)
    history, candidates, history_times, candidate_times = _inputs(n=9, m=6)
    request_times = candidate_times + 77  # a query time distinct from the candidate's own time
    expected = _appended_one_by_one(stack, history, candidates, history_times, candidate_times, request_times)
    cache = cache_history(stack, history, history_times)
    got = score_candidates(stack, cache, candidates, candidate_times, request_times, micro_batch=4)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_without_timestamps_and_with_an_empty_history() -> None:
    stack = _stack()
    history, candidates, _, _ = _inputs(n=5, m=3)
    with torch.no_grad():
        expected = torch.stack(
            [stack(torch.cat([history, c[None]]), torch.tensor([6]))[-1] for c in candidates]
        )
        alone = torch.stack([stack(c[None], torch.tensor([1]))[-1] for c in candidates])
    torch.testing.assert_close(mfalcon(stack, history, candidates), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(mfalcon(stack, history[:0], candidates), alone, atol=1e-10, rtol=0)


def test_micro_batch_size_does_not_change_results() -> None:
    stack = _stack()
    history, candidates, history_times, candidate_times = _inputs(n=7, m=11)
    cache = cache_history(stack, history, history_times)
    results = [score_candidates(stack, cache, candidates, candidate_times, micro_batch=b) for b in (1, 3, 11, 64)]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], atol=1e-12, rtol=0)


def test_candidates_do_not_see_each_other() -> None:
    stack = _stack()
    history, candidates, history_times, candidate_times = _inputs(n=7, m=5)
    cache = cache_history(stack, history, history_times)
    before = score_candidates(stack, cache, candidates, candidate_times, micro_batch=5)
    changed, times = candidates.clone(), candidate_times.clone()
    changed[2] = torch.randn(D, dtype=torch.float64) * 3
    times[2] += 12345
    after = score_candidates(stack, cache, changed, times, micro_batch=5)
    others = [0, 1, 3, 4]
    torch.testing.assert_close(after[others], before[others], atol=0, rtol=0)
    assert not torch.allclose(after[2], before[2])


def test_rejects_training_mode_and_too_long_histories() -> None:
    stack = _stack()
    history, _, history_times, _ = _inputs(n=16, m=2)
    with pytest.raises(ValueError, match="max_length"):
        cache_history(stack, history, history_times)
    with pytest.raises(ValueError, match="eval mode"):
        cache_history(stack.train(), history[:4], history_times[:4])
