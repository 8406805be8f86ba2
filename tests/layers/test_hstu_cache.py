"""The HSTU stack's cached history and appended candidates (M-FALCON): each candidate scores as if
appended alone to the history, in one batched call or through the cache; micro-batches and other
candidates do not change it."""

from __future__ import annotations

import pytest
import torch

from terarec.layers.hstu import HSTUStack

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
    cache = stack.cache_history(history, history_times)
    got = stack.score_candidates(cache, candidates, candidate_times, request_times, micro_batch=4)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_without_timestamps_and_with_an_empty_history() -> None:
    stack = _stack()
    history, candidates, _, _ = _inputs(n=5, m=3)
    with torch.no_grad():
        expected = torch.stack(
            [stack(torch.cat([history, c[None]]), torch.tensor([6]))[-1] for c in candidates]
        )
        alone = torch.stack([stack(c[None], torch.tensor([1]))[-1] for c in candidates])
    got = stack.score_candidates(stack.cache_history(history), candidates)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    got = stack.score_candidates(stack.cache_history(history[:0]), candidates)
    torch.testing.assert_close(got, alone, atol=1e-10, rtol=0)


def test_micro_batch_size_does_not_change_results() -> None:
    stack = _stack()
    history, candidates, history_times, candidate_times = _inputs(n=7, m=11)
    cache = stack.cache_history(history, history_times)
    results = [stack.score_candidates(cache, candidates, candidate_times, micro_batch=b) for b in (1, 3, 11, 64)]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], atol=1e-12, rtol=0)


def test_candidates_do_not_see_each_other() -> None:
    stack = _stack()
    history, candidates, history_times, candidate_times = _inputs(n=7, m=5)
    cache = stack.cache_history(history, history_times)
    before = stack.score_candidates(cache, candidates, candidate_times, micro_batch=5)
    changed, times = candidates.clone(), candidate_times.clone()
    changed[2] = torch.randn(D, dtype=torch.float64) * 3
    times[2] += 12345
    after = stack.score_candidates(cache, changed, times, micro_batch=5)
    others = [0, 1, 3, 4]
    torch.testing.assert_close(after[others], before[others], atol=0, rtol=0)
    assert not torch.allclose(after[2], before[2])


def test_rejects_training_mode_and_too_long_histories() -> None:
    stack = _stack()
    history, _, history_times, _ = _inputs(n=16, m=2)
    with pytest.raises(ValueError, match="max_length"):
        stack.cache_history(history, history_times)
    with pytest.raises(ValueError, match="eval mode"):
        stack.train().cache_history(history[:4], history_times[:4])


def _jagged(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat(sequences), torch.tensor([len(s) for s in sequences])


@pytest.mark.parametrize("options", [{}, {"softmax": True}])
def test_candidates_in_one_batched_call_equal_appending_each(options) -> None:
    """Without a cache: two users, each history followed by its candidates in the same sequence."""
    stack = _stack(**options)
    users = [_inputs(n=6, m=3, seed=2), _inputs(n=4, m=5, seed=3)]
    expected, sequences, times, queries = [], [], [], []
    for history, candidates, history_times, candidate_times in users:
        request_times = candidate_times + 5
        expected.append(_appended_one_by_one(stack, history, candidates, history_times, candidate_times, request_times))
        sequences.append(torch.cat([history, candidates]))
        times.append(torch.cat([history_times, candidate_times]))
        queries.append(torch.cat([history_times, request_times]))
    x, lengths = _jagged(sequences)
    with torch.no_grad():
        out = stack(x, lengths, torch.cat(times), torch.cat(queries), num_candidates=torch.tensor([3, 5]))
    got = torch.cat([out[6:9], out[13:18]])
    torch.testing.assert_close(got, torch.cat(expected), atol=1e-10, rtol=0)


def test_tokens_appended_to_a_batch_of_caches_equal_the_full_stack() -> None:
    """Incremental: cache two users' histories, append ordinary (causal) tokens, cache again."""
    stack = _stack()
    generator = torch.Generator().manual_seed(4)
    full_lengths, split = [7, 5], [4, 3]  # history, then the rest appended
    x = torch.randn(sum(full_lengths), D, generator=generator, dtype=torch.float64)
    times = torch.cumsum(torch.randint(1, 5000, (x.shape[0],), generator=generator), 0)
    with torch.no_grad():
        expected, full_cache = stack(x, torch.tensor(full_lengths), times, return_cache=True)
    firsts = [0, 1, 2, 3, 7, 8, 9]
    rests = [4, 5, 6, 10, 11]
    with torch.no_grad():
        _, cache = stack(x[firsts], torch.tensor(split), times[firsts], return_cache=True)
        got, appended_cache = stack(x[rests], torch.tensor([3, 2]), times[rests], cache=cache, return_cache=True)
    torch.testing.assert_close(got, expected[rests], atol=1e-10, rtol=0)
    assert appended_cache.lengths.tolist() == full_lengths
    torch.testing.assert_close(appended_cache.timestamps, full_cache.timestamps)
    for (keys, values), (full_keys, full_values) in zip(appended_cache.keys_values, full_cache.keys_values):
        torch.testing.assert_close(keys, full_keys, atol=1e-10, rtol=0)
        torch.testing.assert_close(values, full_values, atol=1e-10, rtol=0)


def test_cache_history_holds_the_keys_and_values_of_the_full_stack() -> None:
    """``cache_history`` skips the last layer's attention (``outputs=False``): its cache is the one
    the full forward returns, and asking for no outputs without a cache is refused."""
    stack = _stack(num_layers=3)
    histories, lengths = _jagged([_inputs(n=6, m=1, seed=2)[0], _inputs(n=4, m=1, seed=3)[0]])
    times = torch.cumsum(torch.arange(1, 11), 0)
    with torch.no_grad():
        _, full = stack(histories, lengths, times, return_cache=True)
    cache = stack.cache_history(histories, times, lengths=lengths)
    assert cache.lengths.tolist() == full.lengths.tolist()
    torch.testing.assert_close(cache.timestamps, full.timestamps, atol=0, rtol=0)
    for (keys, values), (full_keys, full_values) in zip(cache.keys_values, full.keys_values, strict=True):
        torch.testing.assert_close(keys, full_keys, atol=0, rtol=0)
        torch.testing.assert_close(values, full_values, atol=0, rtol=0)
    with pytest.raises(ValueError, match="return_cache"):
        stack(histories, lengths, times, outputs=False)


def test_rejects_inconsistent_timestamps_and_cached_candidates() -> None:
    stack = _stack()
    history, candidates, history_times, candidate_times = _inputs(n=5, m=2)
    cache = stack.cache_history(history, history_times)
    with pytest.raises(ValueError, match="timestamps"):
        stack.score_candidates(cache, candidates)  # the history has times, the candidates none
    with pytest.raises(ValueError, match="timestamps"):
        stack.score_candidates(stack.cache_history(history), candidates, candidate_times)
    with pytest.raises(ValueError, match="not cached"):
        stack(candidates, torch.tensor([2]), num_candidates=torch.tensor([1]), return_cache=True)


@pytest.mark.parametrize("micro_batch", [2, 64])
def test_candidates_of_several_cached_users_equal_each_user_alone(micro_batch: int) -> None:
    """Three users' histories cached together, their candidates (3, 5 and 1) scored in one call each
    micro-batch (users run out of candidates at different micro-batches)."""
    stack = _stack()
    users = [_inputs(n=6, m=3, seed=2), _inputs(n=4, m=5, seed=3), _inputs(n=9, m=1, seed=5)]
    expected = []
    for history, candidates, history_times, candidate_times in users:
        cache = stack.cache_history(history, history_times)
        expected.append(stack.score_candidates(cache, candidates, candidate_times, micro_batch=micro_batch))
    histories, lengths = _jagged([u[0] for u in users])
    cache = stack.cache_history(histories, torch.cat([u[2] for u in users]), lengths=lengths)
    candidates, counts = _jagged([u[1] for u in users])
    got = stack.score_candidates(cache, candidates, torch.cat([u[3] for u in users]), micro_batch=micro_batch,
                                 num_candidates=counts)
    torch.testing.assert_close(got, torch.cat(expected), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="num_candidates"):
        stack.score_candidates(cache, candidates, torch.cat([u[3] for u in users]))


@pytest.mark.parametrize("one_request_time", [True, False])
def test_float32_serving_sizes_equal_the_stack_with_candidates_appended(one_request_time: bool) -> None:
    """At serving sizes in float32 (d 64, two heads, histories of up to 150 tokens, users of 40 and 64
    candidates), ``score_candidates`` equals the stack's general attention with every user's
    candidates appended after its history (``num_candidates``, no cache) to 1e-5; with one request
    time per user the time buckets against the history are shared by its candidates."""
    torch.manual_seed(0)
    stack = HSTUStack(HSTUStack.Options(embedding_dim=64, num_layers=2, num_heads=2, dropout=0.0, max_length=160,
                                        num_buckets=64)).eval()
    with torch.no_grad():
        for layer in stack.layers:
            layer.bias.position_weights.normal_(std=0.5)
            layer.bias.time_weights.normal_(std=0.5)
    generator = torch.Generator().manual_seed(6)
    history_lengths, candidate_counts = [150, 97], [40, 64]
    sequences, times, queries, history_parts, candidate_parts = [], [], [], [], []
    for n, m in zip(history_lengths, candidate_counts):
        history, candidates = torch.randn(n, 64, generator=generator), torch.randn(m, 64, generator=generator)
        history_times = torch.cumsum(torch.randint(1, 90_000, (n,), generator=generator), 0)
        if one_request_time:
            candidate_times = torch.full((m,), int(history_times[-1]) + 600)
        else:
            candidate_times = history_times[-1] + torch.randint(0, 10**6, (m,), generator=generator)
        history_parts.append((history, history_times))
        candidate_parts.append((candidates, candidate_times))
        sequences.append(torch.cat([history, candidates]))
        times.append(torch.cat([history_times, candidate_times]))
        queries.append(torch.cat([history_times, candidate_times]))
    counts = torch.tensor(candidate_counts)
    with torch.no_grad():
        full = stack(torch.cat(sequences), torch.tensor([len(s) for s in sequences]), torch.cat(times),
                     torch.cat(queries), num_candidates=counts)
    ends = torch.cumsum(torch.tensor([len(s) for s in sequences]), 0).tolist()
    expected = torch.cat([full[end - m : end] for end, m in zip(ends, candidate_counts)])
    cache = stack.cache_history(torch.cat([h for h, _ in history_parts]), torch.cat([t for _, t in history_parts]),
                                lengths=torch.tensor(history_lengths))
    got = stack.score_candidates(cache, torch.cat([c for c, _ in candidate_parts]),
                                 torch.cat([t for _, t in candidate_parts]), micro_batch=48, num_candidates=counts)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
