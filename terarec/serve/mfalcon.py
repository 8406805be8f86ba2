"""M-FALCON: score m candidates for one user in one pass over a trained HSTU stack.

Zhai et al. 2024, "Actions Speak Louder than Words", arXiv 2402.17152, section 3.4
("Microbatched-Fast Attention Leveraging Cacheable OperatioNs"). Ranking with a causal
sequential transducer appends the candidate to the user's history, so naively m candidates
cost m forward passes over n + 1 tokens. M-FALCON instead:

* runs the history x_0 .. x_{n-1} once through the stack and keeps every layer's keys and
  values K^l, V^l (the history never sees a candidate under the causal mask, so they do not
  depend on the candidates);
* feeds the candidates c_1 .. c_m in micro-batches of b; inside a micro-batch, with the
  attention mask

      M[i, j] = 1 for every history key j,   M[i, n + i] = 1,   0 for the other candidates,

  each candidate's query sees the whole history and itself only, and is given the relative
  bias it would have as the token right after the history: position gap ``n - j`` to
  history key j (0 to itself), time gap ``t_query(c) - t_j`` (``t_query(c) - t_c`` to itself).

Per layer l and micro-batch C (eqs. (1)-(3) of the paper, ``terarec.layers.hstu``):

    U_C, V_C, Q_C, K_C = Split(SiLU(f1(LN(X_C))))
    A_C = SiLU(Q_C [K^l_hist ; K_C]^T + rab) / n  masked by M
    X_C <- X_C + f2(LN(A_C [V^l_hist ; V_C]) * U_C)

so candidate c's output equals the stack's output at the last position of history + [c]
(causal), and the cost is one history pass plus O(m (n + b) d) attention, instead of
O(m n^2 d). ``micro_batch`` trades memory (b x (n + b) weights per head) for fewer, larger
matrix products; the results do not depend on it.

Example:
    >>> stack = HSTUStack(HSTUStack.Options(embedding_dim=16, max_length=20)).eval()
    >>> cache = cache_history(stack, torch.randn(5, 16), torch.arange(5))
    >>> out = score_candidates(stack, cache, torch.randn(7, 16), torch.full((7,), 9))  # (7, 16)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from terarec.layers.hstu import HSTULayer, HSTUStack, hstu_attention, time_buckets


@dataclass
class HistoryCache:
    """One user's history after a pass through the stack.

    Args:
        keys_values: per layer, the history's keys (n, H * d_qk) and values (n, H * d_v).
        timestamps: (n,) the history's event times in seconds (keys' times), or None.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    timestamps: torch.Tensor | None

    @property
    def length(self) -> int:
        return int(self.keys_values[0][0].shape[0]) if self.keys_values else 0


@torch.no_grad()
def cache_history(
    stack: HSTUStack,
    history: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    query_timestamps: torch.Tensor | None = None,
) -> HistoryCache:
    """Run one user's history through the stack once and keep each layer's keys and values.

    Args:
        stack: a trained stack, in eval mode (dropout would make candidates' scores random).
        history: (n, d) the stack's inputs for the history, oldest first.
        timestamps: (n,) event times in seconds, or None (no time bias).
        query_timestamps: (n,) the time each history position queries at (default its own);
            give what the full model would use for history + [candidate].
    """
    if stack.training:
        raise ValueError("M-FALCON scores with a stack in eval mode (call .eval() first)")
    length = history.shape[0]
    if length + 1 > stack.options.max_length:
        raise ValueError(
            f"a history of {length} events plus a candidate is longer than max_length {stack.options.max_length}"
        )
    if length == 0:
        empty = []
        for layer in stack.layers:
            h = layer.num_heads
            empty.append((history.new_zeros(0, h * layer.attention_dim), history.new_zeros(0, h * layer.linear_dim)))
        return HistoryCache(empty, timestamps)
    lengths = torch.tensor([length], device=history.device)
    _, keys_values = stack(history, lengths, timestamps, query_timestamps, return_kv=True)
    return HistoryCache(list(keys_values), timestamps)


def _candidate_bias(
    layer: HSTULayer,
    history_length: int,
    num_candidates: int,
    history_times: torch.Tensor | None,
    candidate_times: torch.Tensor | None,
    query_times: torch.Tensor | None,
) -> torch.Tensor | None:
    """(1, 1, b, n + b) rab^{p,t} of b candidates placed right after a history of n events.

    Mirrors ``RelativeBias.forward`` for the query at position n: position weight of gap
    ``n - j`` for history key j and of gap 0 for the candidate itself; the time weight of the
    gap from the candidate's query time. Columns of other candidates are masked anyway.
    """
    relative = layer.bias
    n, b = history_length, num_candidates
    bias = None
    if relative.position_weights is not None:
        weights = relative.position_weights
        gaps = torch.arange(n, 0, -1, device=weights.device)  # n - j for history key j
        index = (gaps + relative.max_length - 1).clamp(0, 2 * relative.max_length - 2)
        history_part = weights[index]  # (n,)
        self_part = weights[relative.max_length - 1].expand(b)
        bias = torch.cat([history_part, self_part]).unsqueeze(0)  # (1, n + b)
    if relative.time_weights is not None and candidate_times is not None and query_times is not None:
        weights = relative.time_weights
        history_part = weights[time_buckets(query_times.unsqueeze(1) - history_times.unsqueeze(0), relative.num_buckets)]
        self_part = torch.diag_embed(weights[time_buckets(query_times - candidate_times, relative.num_buckets)])
        time_bias = torch.cat([history_part, self_part], dim=1)  # (b, n + b)
        bias = time_bias if bias is None else bias + time_bias
    return None if bias is None else bias.view(1, 1, -1, bias.shape[-1])


def _layer_candidates(
    layer: HSTULayer,
    x: torch.Tensor,
    history_kv: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Eqs. (1)-(3) for b candidates (b, d) against the cached history keys and values."""
    b, h = x.shape[0], layer.num_heads
    u, v, q, k = layer.project(x)
    history_keys, history_values = history_kv

    def heads(t: torch.Tensor, width: int) -> torch.Tensor:  # (T, H*w) -> (1, H, T, w)
        return t.view(1, -1, h, width).transpose(1, 2)

    attended = hstu_attention(
        heads(q, layer.attention_dim),
        heads(torch.cat([history_keys, k]), layer.attention_dim),
        heads(torch.cat([history_values, v]), layer.linear_dim),
        mask,
        bias,
        scale_length=layer.max_length,
        softmax=layer.softmax,
    )  # (1, H, b, d_v)
    attended = attended.transpose(1, 2).reshape(b, h * layer.linear_dim)
    return layer.output(x, attended, u)  # eq. (3), the layer's own (dropout is off in eval)


@torch.no_grad()
def score_candidates(
    stack: HSTUStack,
    cache: HistoryCache,
    candidates: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    query_timestamps: torch.Tensor | None = None,
    micro_batch: int = 128,
) -> torch.Tensor:
    """The stack's output for each candidate as if appended alone to the cached history.

    Args:
        stack: the stack ``cache`` was made with, in eval mode.
        cache: from ``cache_history``.
        candidates: (m, d) the stack's inputs for the candidates (embedded as the token at
            position n, e.g. with position n's embedding).
        timestamps: (m,) each candidate's own time (its key's time), e.g. the request time;
            needed when the history has timestamps and the stack a time bias.
        query_timestamps: (m,) the time each candidate queries at (default its own).
        micro_batch: candidates per micro-batch, b.

    Returns:
        (m, d) outputs, row i for candidate i.
    """
    if stack.training:
        raise ValueError("M-FALCON scores with a stack in eval mode (call .eval() first)")
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    use_time = cache.timestamps is not None and stack.options.num_buckets > 0
    if use_time and timestamps is None:
        raise ValueError("the history has timestamps: give the candidates' timestamps too")
    if use_time and query_timestamps is None:
        query_timestamps = timestamps
    n = cache.length
    outputs = []
    for start in range(0, candidates.shape[0], micro_batch):
        x = candidates[start : start + micro_batch]
        b = x.shape[0]
        # Whole history, then itself only: the other candidates of the micro-batch are hidden.
        mask = torch.cat(
            [torch.ones(b, n, dtype=torch.bool, device=x.device), torch.eye(b, dtype=torch.bool, device=x.device)], 1
        )
        times = query_times = None
        if use_time:
            times = timestamps[start : start + micro_batch]
            query_times = query_timestamps[start : start + micro_batch]
        for layer, history_kv in zip(stack.layers, cache.keys_values):
            bias = _candidate_bias(layer, n, b, cache.timestamps if use_time else None, times, query_times)
            x = _layer_candidates(layer, x, history_kv, mask, bias)
        outputs.append(x)
    return torch.cat(outputs) if outputs else candidates.new_zeros(0, candidates.shape[1])


def mfalcon(
    stack: HSTUStack,
    history: torch.Tensor,
    candidates: torch.Tensor,
    history_timestamps: torch.Tensor | None = None,
    candidate_timestamps: torch.Tensor | None = None,
    micro_batch: int = 128,
    history_query_timestamps: torch.Tensor | None = None,
    candidate_query_timestamps: torch.Tensor | None = None,
) -> torch.Tensor:
    """``cache_history`` then ``score_candidates``: (m, d) outputs for one user's m candidates."""
    cache = cache_history(stack, history, history_timestamps, history_query_timestamps)
    return score_candidates(stack, cache, candidates, candidate_timestamps, candidate_query_timestamps, micro_batch)
