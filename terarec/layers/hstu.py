"""The HSTU layer and stack (Zhai et al. 2024, "Actions Speak Louder than Words", arXiv 2402.17152).

One layer, with X the (jagged) sequence of d-wide vectors, per the paper's eqs. (1)-(3) and its
reference code (pre-norm, residual):

    U, V, Q, K = Split(SiLU(f1(LN(X))))                         (1)
    A = SiLU(Q K^T + rab^{p,t}) / n    under a causal mask        (2)   no softmax
    Y = X + f2(Dropout(LN(A V) * U))                             (3)

per head (Q, K: ``attention_dim`` wide; U, V: ``linear_dim`` wide). ``n`` is the model's
maximum sequence length (a constant, so a sequence scores the same alone or padded in a
batch). ``rab^{p,t}`` is a relative attention bias learned per layer and shared by the heads:
one weight per relative position ``i - j`` plus one weight per bucket of the time gap
``t_query(i) - t(j)``, bucketed on a log scale: ``floor(ln(max(|gap|, 1)) / 0.301)``, so each
bucket spans a factor e^0.301 ~ 1.35 of seconds. With ``softmax=True`` (2) becomes
``softmax((Q K^T) / sqrt(d_qk) + rab)`` for comparison.

Pointwise work (norms, f1, f2) runs on the flat values of the jagged batch; only attention
pads, to the batch's longest sequence. ``hstu_attention`` is eq. (2) as written (dense (B, H,
T, T) weights), the readable reference; layers run ``blocked_hstu_attention``
(``terarec.layers.hstu_blocked``: tiles, no T x T tensor, no work past a sequence's end; its
pointwise causal path in a fused C++ kernel, ``terarec.layers.hstu_kernel``) unless
``attention="reference"``; tests hold them equal.

One attention op serves training and inference (``AttentionLayout``): the tokens of a call
are appended to a cached history (its keys and values from an earlier call, ``HistoryCache``;
none in training), and the last ``num_candidates`` tokens of each sequence may be candidates.
A candidate sees the history and itself only, never another candidate, and gets the relative
bias of the token right after the history (position gap ``n - j`` to history key j, 0 to
itself). M-FALCON (the paper's section 3.4, "Microbatched-Fast Attention Leveraging Cacheable
OperatioNs") caches the history once (``HSTUStack.cache_history``), then scores the candidates
(``HSTUStack.score_candidates``) with ``candidate_attention``, the same attention without the
masked block between candidates: each candidate's output equals the stack's output at the last
position of history + [candidate], at the cost of one history pass plus O(m n d) attention
instead of O(m n^2 d).

Example:
    >>> stack = HSTUStack(HSTUStack.Options(embedding_dim=16, max_length=20)).eval()
    >>> stack(torch.randn(5, 16), torch.tensor([3, 2]), torch.arange(5)).shape
    torch.Size([5, 16])
    >>> cache = stack.cache_history(torch.randn(5, 16), torch.arange(5))
    >>> stack.score_candidates(cache, torch.randn(7, 16), torch.full((7,), 9), micro_batch=4).shape
    torch.Size([7, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from terarec.layers.dropout import dropout
from terarec.layers.hstu_blocked import (
    BUCKET_CACHE_ELEMENTS,
    TIME_BUCKET_WIDTH,
    blocked_hstu_attention,
    lookup,
    time_buckets,
)
from terarec.layers.jagged import offsets_of, padded_index, padding_mask, place_rows, positions, to_jagged, to_padded

__all__ = ["TIME_BUCKET_WIDTH", "AttentionLayout", "CandidateLayout", "HSTULayer", "HSTUStack", "HistoryCache",
           "RelativeBias", "blocked_hstu_attention", "candidate_attention", "causal_mask", "hstu_attention",
           "time_buckets"]

ATTENTION_KINDS = ("blocked", "reference")


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) True where query i may attend to key j (j <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def hstu_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale_length: int = 1,
    softmax: bool = False,
    dropout: float = 0.0,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of eq. (2): pointwise SiLU(Q K^T + rab) / n, or softmax for comparison.

    Args:
        queries: (B, H, Tq, d_qk).
        keys: (B, H, Tk, d_qk).
        values: (B, H, Tk, d_v).
        mask: bool, broadcastable to (B, H, Tq, Tk): True where a query may see a key.
        bias: relative attention bias, broadcastable to (B, H, Tq, Tk), or None.
        scale_length: n, the divisor of the pointwise weights (the model's max length).
        softmax: softmax(Q K^T / sqrt(d_qk) + rab) instead of the pointwise SiLU.
        dropout: dropout on the attention weights (training only: pass 0 in eval).
        return_weights: also return the (B, H, Tq, Tk) weights.

    Returns:
        (B, H, Tq, d_v) attended values (and the weights).
    """
    if softmax:
        logits = queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1])
        if bias is not None:
            logits = logits + bias
        weights = torch.softmax(logits.masked_fill(~mask, -torch.inf), dim=-1)
        weights = torch.nan_to_num(weights)  # a query that sees no key (padding) gets zeros
    else:
        logits = queries @ keys.transpose(-1, -2)
        if bias is not None:
            logits = logits + bias
        weights = (F.silu(logits) / scale_length).masked_fill(~mask, 0.0)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    out = weights @ values
    return (out, weights) if return_weights else out


def candidate_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    history_keys: torch.Tensor,
    history_values: torch.Tensor,
    history_mask: torch.Tensor,
    history_bias: torch.Tensor | None,
    own_bias: torch.Tensor | None,
    scale_length: int,
    softmax: bool = False,
) -> torch.Tensor:
    """Eq. (2) for candidates that each see their user's history and themselves only (M-FALCON).

    ``hstu_attention`` of candidates appended after the history under ``AttentionLayout``'s mask,
    without the masked (m, m) block between candidates: one product against the history and one
    dot product with the candidate's own key.

    Args:
        queries, keys, values: (B, H, m, width) the candidates' own.
        history_keys, history_values: (B, H, n, width), zeros past each history's end.
        history_mask: (B, n) True on a real history key (softmax only: in pointwise mode a padded
            key's zero value adds nothing).
        history_bias: broadcastable to (B, H, m, n), or None.
        own_bias: broadcastable to (B, H, m): the bias of each candidate to itself, or None.
        scale_length: n, the divisor of the pointwise weights.
        softmax: softmax(Q K^T / sqrt(d_qk) + rab) instead of the pointwise SiLU.

    Returns:
        (B, H, m, d_v) attended values.
    """
    history_logits = queries @ history_keys.transpose(-1, -2)  # (B, H, m, n)
    own_logits = (queries * keys).sum(-1)  # (B, H, m)
    if softmax:
        scale = 1.0 / math.sqrt(queries.shape[-1])
        history_logits.mul_(scale)
        own_logits.mul_(scale)
    if history_bias is not None:
        history_logits.add_(history_bias)
    if own_bias is not None:
        own_logits.add_(own_bias)
    if softmax:
        hidden = ~history_mask[:, None, None, :]
        logits = torch.cat([history_logits.masked_fill_(hidden, -torch.inf), own_logits.unsqueeze(-1)], dim=-1)
        weights = torch.softmax(logits, dim=-1)
        return weights[..., :-1] @ history_values + weights[..., -1:] * values
    attended = F.silu(history_logits, inplace=True) @ history_values
    return attended.addcmul_(F.silu(own_logits).unsqueeze(-1), values).div_(scale_length)


class RelativeBias(nn.Module):
    """rab^{p,t}: a learned scalar per relative position plus one per log-scale time-gap bucket.

    Args:
        max_length: longest sequence (relative positions 0 .. max_length - 1 back).
        num_buckets: time buckets (0 disables the time part).
        position: include the relative position part.
    """

    def __init__(self, max_length: int, num_buckets: int, position: bool = True) -> None:
        super().__init__()
        self.max_length = max_length
        self.num_buckets = num_buckets
        # Indexed by i - j + max_length - 1, so keys after the query (masked anyway) fit too.
        self.position_weights = nn.Parameter(torch.empty(2 * max_length - 1).normal_(std=0.02)) if position else None
        self.time_weights = nn.Parameter(torch.empty(num_buckets).normal_(std=0.02)) if num_buckets > 0 else None

    def forward(self, relative: torch.Tensor, buckets: torch.Tensor | None) -> torch.Tensor | None:
        """(B or 1, 1, Tq, Tk) bias from (B or 1, Tq, Tk) relative positions (query minus key) and
        (B, Tq, Tk) time buckets or None."""
        bias = None
        if self.position_weights is not None:
            index = (relative + self.max_length - 1).clamp(0, 2 * self.max_length - 2)
            bias = lookup(self.position_weights, index)
        if self.time_weights is not None and buckets is not None:
            time_bias = lookup(self.time_weights, buckets)
            bias = time_bias if bias is None else bias + time_bias
        return None if bias is None else bias.unsqueeze(1)


@dataclass
class HistoryCache:
    """Every layer's keys and values of a batch of histories, to append tokens to later.

    Args:
        keys_values: per layer, the histories' keys (N, H * d_qk) and values (N, H * d_v),
            jagged: sequences concatenated, oldest first.
        lengths: (B,) history lengths.
        timestamps: (N,) the histories' event times in seconds (keys' times), or None.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    lengths: torch.Tensor
    timestamps: torch.Tensor | None


def _time_bias(
    timestamps: torch.Tensor | None,
    cached_timestamps: torch.Tensor | None,
    cached_lengths: torch.Tensor,
    num_buckets: int,
) -> bool:
    """Whether tokens appended to cached histories get a time bias; raises when only one side has times
    (an empty history has every time it needs)."""
    if num_buckets <= 0:
        return False
    if timestamps is not None and cached_timestamps is None and bool((cached_lengths > 0).any()):
        raise ValueError("these tokens have timestamps but the cached history has none")
    if timestamps is None and cached_timestamps is not None and bool((cached_lengths > 0).any()):
        raise ValueError("the cached history has timestamps: give these tokens' timestamps too")
    return timestamps is not None


class AttentionLayout:
    """Where each query and key of one stack call sits, its mask, relative positions and time buckets.

    The call's tokens (jagged, ``lengths``) come after each sequence's cached history
    (``cached_lengths``, zero without a cache); of each sequence's tokens the last
    ``num_candidates`` are candidates. Keys are history + tokens, padded on the right to the
    longest; queries are the tokens. Query i may see key j when j is not after i and is not
    another candidate. Every candidate of a sequence sits at the position of its first one.
    Computed once per call and shared by the layers.

    The padded rows are sorted by the number of tokens, longest first (``row_of_sequence``), so
    that the blocked attention can leave finished rows out of later query tiles. The dense
    ``mask``, ``relative`` and ``buckets`` of the reference attention are built on first use.

    Args:
        lengths: (B,) tokens per sequence in this call.
        max_length: n of the stack: the last position used must be below it.
        timestamps: (N,) the tokens' times (keys' times), or None: no time bias.
        query_timestamps: (N,) the time each token queries at (default: its own).
        num_buckets: time buckets of the bias.
        num_candidates: (B,) trailing candidates per sequence, or None.
        cached_lengths: (B,) cached history lengths, or None.
        cached_timestamps: (N_cached,) the cached keys' times (needed with ``timestamps``).
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        max_length: int,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        num_buckets: int = 0,
        num_candidates: torch.Tensor | None = None,
        cached_lengths: torch.Tensor | None = None,
        cached_timestamps: torch.Tensor | None = None,
    ) -> None:
        device = lengths.device
        self.lengths, self.max_length, self.num_buckets = lengths, max_length, num_buckets
        self.batch = batch = lengths.numel()
        self.query_length = int(lengths.max()) if batch else 0
        order = torch.argsort(lengths, descending=True, stable=True)
        self.row_of_sequence = torch.empty_like(order)
        self.row_of_sequence[order] = torch.arange(batch, device=device)
        self.sorted_query_lengths = lengths[order].tolist()
        self.query_index = padded_index(lengths, self.query_length, self.row_of_sequence)
        cached = torch.zeros_like(lengths) if cached_lengths is None else cached_lengths
        candidates = torch.zeros_like(lengths) if num_candidates is None else num_candidates
        if bool((candidates < 0).any()) or bool((candidates > lengths).any()):
            raise ValueError(f"num_candidates {candidates.tolist()} must lie within the lengths {lengths.tolist()}")
        total = cached + lengths
        # Position of each sequence's last token (its candidates all sit at the first one's).
        last_position = total - candidates - (candidates == 0).long()
        if batch and int(last_position.max()) >= max_length:
            raise ValueError(
                f"a sequence of {int(last_position.max()) + 1} positions is longer than max_length {max_length}"
            )
        self.key_length = int(total.max()) if batch else 0
        self.total_lengths = total
        # Per padded row (sorted order): cached keys, first candidate key, keys in all.
        self.row_cached, self.row_total = cached[order], total[order]
        self.row_first_candidate = (total - candidates)[order]
        self.max_row_cached = int(cached.max()) if batch else 0
        self.causal_only = cached_lengths is None and num_candidates is None
        if cached_lengths is None:
            self.new_flat = self.cached_flat = self.new_key_index = self.cached_key_index = None
        else:  # where the history and the tokens go in the jagged and the padded keys
            starts = offsets_of(total)
            self.new_flat = torch.repeat_interleave(starts + cached, lengths) + positions(lengths)
            self.cached_flat = torch.repeat_interleave(starts, cached) + positions(cached)
            key_index = padded_index(total, self.key_length, self.row_of_sequence)
            self.new_key_index, self.cached_key_index = key_index[self.new_flat], key_index[self.cached_flat]

        self.query_times = self.key_times = None  # (B, Tq) and (B, Tk) padded, when there is a time bias
        # The blocked attention's time buckets per tile, shared by the layers when small enough.
        small = batch * self.query_length * self.key_length <= BUCKET_CACHE_ELEMENTS
        self.tile_buckets: dict[tuple, torch.Tensor] | None = {} if small else None
        if _time_bias(timestamps, cached_timestamps, cached, num_buckets):
            if cached_lengths is not None and cached_timestamps is None:
                cached_timestamps = timestamps[:0]
            query_timestamps = timestamps if query_timestamps is None else query_timestamps
            self.query_times = to_padded(query_timestamps, self.query_index, batch, self.query_length)
            self.key_times = self.keys(timestamps, cached_timestamps)

    @cached_property
    def _query_and_key_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Tq) the key index of each query and (B, Tk) of each key (rows in sorted order)."""
        device = self.lengths.device
        query = self.row_cached.unsqueeze(1) + torch.arange(self.query_length, device=device)
        return query, torch.arange(self.key_length, device=device).expand(self.batch, -1)

    @cached_property
    def mask(self) -> torch.Tensor:
        """(B or 1, Tq, Tk) True where a query may see a key (reference attention)."""
        if self.causal_only:  # plain causal: one (1, T, T) for all
            return causal_mask(self.query_length, self.lengths.device).unsqueeze(0)
        query, key = self._query_and_key_positions
        first_candidate = self.row_first_candidate.unsqueeze(1)
        key_is_candidate = (key >= first_candidate) & (key < self.row_total.unsqueeze(1))
        return (key.unsqueeze(1) <= query.unsqueeze(2)) & (
            ~key_is_candidate.unsqueeze(1) | (key.unsqueeze(1) == query.unsqueeze(2))
        )

    @cached_property
    def relative(self) -> torch.Tensor:
        """(B or 1, Tq, Tk) query position minus key position (reference attention)."""
        if self.causal_only:
            index = torch.arange(self.query_length, device=self.lengths.device)
            return (index.unsqueeze(1) - index.unsqueeze(0)).unsqueeze(0)
        query, key = self._query_and_key_positions
        first_candidate = self.row_first_candidate.unsqueeze(1)
        return query.clamp(max=first_candidate).unsqueeze(2) - key.clamp(max=first_candidate).unsqueeze(1)

    @cached_property
    def buckets(self) -> torch.Tensor | None:
        """(B, Tq, Tk) time bucket of each query-key gap, or None (reference attention)."""
        if self.query_times is None:
            return None
        return time_buckets(self.query_times.unsqueeze(2) - self.key_times.unsqueeze(1), self.num_buckets)

    def queries(self, values: torch.Tensor) -> torch.Tensor:
        """(N, ...) the tokens' values -> (B, Tq, ...) padded."""
        return to_padded(values, self.query_index, self.batch, self.query_length)

    def keys(self, values: torch.Tensor, cached: torch.Tensor | None) -> torch.Tensor:
        """(N, ...) the tokens' values after (N_cached, ...) the history's -> (B, Tk, ...) padded."""
        if self.cached_key_index is None:
            return self.queries(values)
        flat = place_rows(self.batch * self.key_length, (cached, self.cached_key_index), (values, self.new_key_index))
        return flat.view((self.batch, self.key_length) + tuple(values.shape[1:]))

    def appended(self, values: torch.Tensor, cached: torch.Tensor | None) -> torch.Tensor:
        """(N_total, ...) jagged history + tokens of each sequence, for the next cache."""
        if self.new_flat is None:
            return values
        return place_rows(int(self.total_lengths.sum()), (cached, self.cached_flat), (values, self.new_flat))


class CandidateLayout:
    """Where the candidates of one ``HSTUStack.score_candidates`` call sit beside their users' cached
    histories, and the indexes of their relative bias; computed once per call, shared by the layers.

    Each user's candidates are padded to (B, m), its history to (B, n). A candidate sits at the
    position right after its history (L, the history's length): it sees history key j with the
    position gap L - j and itself with gap 0, as ``AttentionLayout`` places appended candidates.
    When every candidate of a user queries at one time (a request's), the time buckets against the
    history are one (B, 1, n) row shared by the candidates instead of (B, m, n).

    Args:
        cache: the users' histories (B of them).
        num_candidates: (B,) candidates per user.
        max_length: n of the stack: a history's length must be below it.
        num_buckets: time buckets of the bias.
        timestamps: (M,) the candidates' own times (their keys'), or None: no time bias.
        query_timestamps: (M,) the time each candidate queries at (default its own).
    """

    def __init__(
        self,
        cache: HistoryCache,
        num_candidates: torch.Tensor,
        max_length: int,
        num_buckets: int,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
    ) -> None:
        lengths = cache.lengths
        self.batch = batch = lengths.numel()
        self.candidate_length = int(num_candidates.max()) if batch else 0
        self.history_length = int(lengths.max()) if batch else 0
        if batch and self.history_length >= max_length:
            raise ValueError(f"a sequence of {self.history_length + 1} positions is longer than max_length "
                             f"{max_length}")
        self.candidate_index = padded_index(num_candidates, self.candidate_length)
        self.history_index = padded_index(lengths, self.history_length)
        self.history_mask = padding_mask(lengths, self.history_length)  # (B, n)
        history_keys = torch.arange(self.history_length, device=lengths.device)
        self.history_relative = (lengths.unsqueeze(1) - history_keys).unsqueeze(1)  # (B, 1, n)
        self.own_relative = torch.zeros(batch, self.candidate_length, dtype=torch.long, device=lengths.device)
        self.history_buckets = self.own_buckets = None  # (B, m or 1, n) and (B, m)
        if _time_bias(timestamps, cache.timestamps, lengths, num_buckets):
            query_times = self.candidates(timestamps if query_timestamps is None else query_timestamps)  # (B, m)
            self.own_buckets = time_buckets(query_times - self.candidates(timestamps), num_buckets)
            history_times = timestamps[:0] if cache.timestamps is None else cache.timestamps
            key_times = to_padded(history_times, self.history_index, batch, self.history_length)  # (B, n)
            real = padding_mask(num_candidates, self.candidate_length)
            if bool(((query_times == query_times[:, :1]) | ~real).all()):
                query_times = query_times[:, :1]
            self.history_buckets = time_buckets(query_times.unsqueeze(2) - key_times.unsqueeze(1), num_buckets)

    def candidates(self, values: torch.Tensor) -> torch.Tensor:
        """(M, ...) the candidates' values -> (B, m, ...) padded."""
        return to_padded(values, self.candidate_index, self.batch, self.candidate_length)

    def jagged(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, m, ...) padded -> (M, ...) the candidates' rows."""
        return to_jagged(padded, self.candidate_index)

    def history(self, values: torch.Tensor, heads: int) -> torch.Tensor:
        """(N, H * width) a layer's cached keys or values, jagged -> (B, H, n, width), zeros past each end."""
        padded = to_padded(values, self.history_index, self.batch, self.history_length)
        return _split_heads(padded, heads)

    def biases(self, bias: RelativeBias, columns: slice) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A layer's bias of the candidates in ``columns`` of the padding: against the history
        (B, 1, b or 1, n) and to themselves (B, 1, b), or None."""
        history_buckets = self.history_buckets
        if history_buckets is not None and history_buckets.shape[1] > 1:
            history_buckets = history_buckets[:, columns]
        own_buckets = None if self.own_buckets is None else self.own_buckets[:, columns]
        return bias(self.history_relative, history_buckets), bias(self.own_relative[:, columns], own_buckets)


def _split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H * width) -> (B, H, T, width), a view."""
    return tokens.view(tokens.shape[0], tokens.shape[1], heads, tokens.shape[2] // heads).transpose(1, 2)


class HSTULayer(nn.Module):
    """One HSTU layer on jagged values (eqs. 1-3); see the module docstring.

    Args:
        embedding_dim: d, the width of X.
        num_heads: H.
        attention_dim: per-head width of Q and K.
        linear_dim: per-head width of U and V.
        dropout: dropout before f2 (and on the pointwise attention weights if ``attention_dropout``).
        max_length: n, also the range of the relative position bias.
        num_buckets: time-gap buckets of the bias (0: no time bias).
        position_bias: learn the relative position part of the bias.
        softmax: softmax attention instead of pointwise SiLU (for comparison).
        attention_dropout: dropout on the attention weights.
        attention: "blocked" (``blocked_hstu_attention``, tiled, no T x T tensors) or
            "reference" (``hstu_attention``, dense); the reference also serves attention dropout
            in training, which the blocked op does not do.
    """

    # Training recomputes eq. (1) in backward for calls of at least this many tokens: it keeps
    # the peak of a long step low (10 MiB less at 4096 tokens, d 128) for a second d x 4d
    # product and the checkpoint's bookkeeping, which a Beauty step (~850 tokens at d 64: under
    # 1 MiB kept) does not need; there the recomputation was ~5% of a training epoch.
    recompute_min_tokens = 2048

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        attention_dim: int,
        linear_dim: int,
        dropout: float,
        max_length: int,
        num_buckets: int,
        position_bias: bool = True,
        softmax: bool = False,
        attention_dropout: float = 0.0,
        attention: str = "blocked",
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        self.attention = attention
        self.num_heads, self.attention_dim, self.linear_dim = num_heads, attention_dim, linear_dim
        self.max_length, self.softmax = max_length, softmax
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.input_norm = nn.LayerNorm(embedding_dim)
        self.f1 = nn.Linear(embedding_dim, num_heads * (2 * linear_dim + 2 * attention_dim))
        self.attention_norm = nn.LayerNorm(num_heads * linear_dim)
        self.f2 = nn.Linear(num_heads * linear_dim, embedding_dim)
        self.bias = RelativeBias(max_length, num_buckets, position_bias)

    def _projections(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(f1(LN(X))) of eq. (1), before the split into U, V, Q, K."""
        return F.silu(self.f1(self.input_norm(x)))

    def _split(self, projected: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """U, V, Q, K of eq. (1), views of ``projected``."""
        h = self.num_heads
        sizes = [h * self.linear_dim, h * self.linear_dim, h * self.attention_dim, h * self.attention_dim]
        return torch.split(projected, sizes, dim=-1)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (N, H * d_qk) keys and (N, H * d_v) values of (N, d) tokens, as ``forward`` returns
        them, without the attention: what a history cache needs of the stack's last layer."""
        _, v, _, k = self._split(self._projections(x))
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        layout: AttentionLayout,
        cached: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Eqs. (1)-(3) on (N, d) jagged values placed by ``layout``, after the ``cached`` history's
        keys and values (None without a cache).

        Returns:
            (N, d) outputs, and the tokens' own (keys, values), (N, H * d_qk) and (N, H * d_v).
        """
        h = self.num_heads
        if self.training and torch.is_grad_enabled() and x.shape[0] >= self.recompute_min_tokens:
            # Backward recomputes eq. (1) (one d x 4d product) rather than keep f1's 4d-wide output
            # for SiLU's backward and the norm's output for f1's.
            projected = checkpoint(self._projections, x, use_reentrant=False, preserve_rng_state=False)
        else:
            projected = self._projections(x)
        u, v, q, k = self._split(projected)  # eq. (1)
        u = u.contiguous()  # held until backward: on its own, not as a view that keeps all four alive
        cached_keys, cached_values = cached if cached is not None else (None, None)

        queries, keys, values = layout.queries(q), layout.keys(k, cached_keys), layout.keys(v, cached_values)
        weights_dropout = self.attention_dropout if self.training else 0.0
        if self.attention == "blocked" and weights_dropout == 0.0:
            attended = blocked_hstu_attention(
                queries.view(*queries.shape[:2], h, self.attention_dim),
                keys.view(*keys.shape[:2], h, self.attention_dim),
                values.view(*values.shape[:2], h, self.linear_dim),
                layout, self.bias.position_weights, self.bias.time_weights,
                scale_length=self.max_length, softmax=self.softmax,
            )  # (B, Tq, H, d_v)
        else:
            attended = hstu_attention(
                _split_heads(queries, h),
                _split_heads(keys, h),
                _split_heads(values, h),
                layout.mask.unsqueeze(1),
                self.bias(layout.relative, layout.buckets),
                scale_length=self.max_length,
                softmax=self.softmax,
                dropout=weights_dropout,
            ).transpose(1, 2)  # (B, Tq, H, d_v)
        attended = attended.reshape(layout.batch, layout.query_length, h * self.linear_dim)
        attended = to_jagged(attended, layout.query_index)  # (N, H * d_v)
        y = x + self.f2(dropout(self.attention_norm(attended) * u, self.dropout, self.training))  # eq. (3)
        return y, (k, v)

    def forward_candidates(
        self,
        x: torch.Tensor,
        layout: CandidateLayout,
        history_keys: torch.Tensor,
        history_values: torch.Tensor,
        columns: slice,
    ) -> torch.Tensor:
        """Eqs. (1)-(3) for (B, b, d) padded candidate tokens (``columns`` of ``layout``'s padding),
        each seeing its user's cached history, (B, H, n, width) keys and values, and itself only.
        Inference only (no dropout)."""
        h = self.num_heads
        u, v, q, k = self._split(self._projections(x))  # eq. (1)
        history_bias, own_bias = layout.biases(self.bias, columns)
        attended = candidate_attention(
            _split_heads(q, h), _split_heads(k, h), _split_heads(v, h), history_keys, history_values,
            layout.history_mask, history_bias, own_bias, self.max_length, self.softmax,
        )  # (B, H, b, d_v)
        attended = attended.transpose(1, 2).reshape(x.shape[0], x.shape[1], h * self.linear_dim)
        return x + self.f2(self.attention_norm(attended) * u)  # eq. (3)


class HSTUStack(nn.Module):
    """Causal stack of HSTU layers over jagged sequences, with the layout computed once.

    Args (Options):
        embedding_dim, num_layers, num_heads, attention_dim, linear_dim (0: embedding_dim),
        dropout, attention_dropout, max_length, num_buckets, position_bias, softmax, attention:
        as in ``HSTULayer``.
    """

    @dataclass
    class Options:
        embedding_dim: int = 64
        num_layers: int = 2
        num_heads: int = 1
        attention_dim: int = 0
        linear_dim: int = 0
        dropout: float = 0.2
        attention_dropout: float = 0.0
        max_length: int = 200
        num_buckets: int = 128
        position_bias: bool = True
        softmax: bool = False
        attention: str = "blocked"

    def __init__(self, options: Options) -> None:
        super().__init__()
        self.options = options
        d = options.embedding_dim
        self.layers = nn.ModuleList(
            HSTULayer(
                d,
                options.num_heads,
                options.attention_dim or d,
                options.linear_dim or d,
                options.dropout,
                options.max_length,
                options.num_buckets,
                options.position_bias,
                options.softmax,
                options.attention_dropout,
                options.attention,
            )
            for _ in range(options.num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        num_candidates: torch.Tensor | None = None,
        cache: HistoryCache | None = None,
        return_cache: bool = False,
        outputs: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor | None, HistoryCache]:
        """Run the stack on tokens appended to an optional cached history.

        Args:
            x: (N, d) input vectors, sequences concatenated (oldest first).
            lengths: (B,) tokens per sequence (with the history, at most max_length positions).
            timestamps: (N,) event times in seconds (keys' times), or None for no time bias.
            query_timestamps: (N,) the time each token queries at (default: its own time).
            num_candidates: (B,) how many of each sequence's last tokens are candidates, which
                see the history and themselves only (see ``AttentionLayout``); None: none.
            cache: the histories these tokens follow, from ``return_cache=True``; None: none.
            return_cache: also return the cache of history + these tokens (no candidates).
            outputs: False (with ``return_cache``): the cache alone, None for the outputs; the
                last layer then computes its keys and values only, not its attention, which
                nothing in a cache depends on (about half the work of a two-layer stack).

        Returns:
            (N, d) outputs (and the ``HistoryCache``).
        """
        if return_cache and num_candidates is not None and bool((num_candidates > 0).any()):
            raise ValueError("candidates are not cached: call with return_cache=False")
        if not outputs and not return_cache:
            raise ValueError("outputs=False returns the cache alone: call with return_cache=True")
        layout = AttentionLayout(
            lengths,
            self.options.max_length,
            timestamps,
            query_timestamps,
            self.options.num_buckets,
            num_candidates,
            None if cache is None else cache.lengths,
            None if cache is None else cache.timestamps,
        )
        keys_values = []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            cached = None if cache is None else cache.keys_values[index]
            if outputs or index < last:
                x, (k, v) = layer(x, layout, cached)
            else:
                k, v = layer.keys_values(x)
            if return_cache:
                cached_keys, cached_values = (None, None) if cached is None else cached
                keys_values.append((layout.appended(k, cached_keys), layout.appended(v, cached_values)))
        if not return_cache:
            return x
        times = timestamps
        if timestamps is not None and cache is not None:
            if cache.timestamps is not None:
                times = layout.appended(timestamps, cache.timestamps)
            elif int(cache.lengths.sum()) == 0:  # an empty history has every timestamp it needs
                times = layout.appended(timestamps, timestamps[:0])
            else:  # a history without times: the cache cannot have them either
                times = None
        return x if outputs else None, HistoryCache(keys_values, layout.total_lengths, times)

    @torch.no_grad()
    def cache_history(
        self,
        history: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> HistoryCache:
        """Run the users' histories once and keep every layer's keys and values (M-FALCON's first step).

        Args:
            history: (n, d) the stack's inputs for the histories, oldest first, users concatenated.
            timestamps: (n,) event times in seconds, or None (no time bias).
            query_timestamps: (n,) the time each history position queries at (default its own);
                give what the full model would use for history + [candidate].
            lengths: (B,) events per user (default: one user, all n).
        """
        self._check_eval()
        n = history.shape[0]
        lengths = torch.tensor([n], device=history.device) if lengths is None else lengths
        if int(lengths.sum()) != n:
            raise ValueError(f"history lengths {lengths.tolist()} do not add up to its {n} events")
        if lengths.numel() and int(lengths.max()) + 1 > self.options.max_length:
            raise ValueError(f"a history of {int(lengths.max())} events plus a candidate is longer than max_length "
                             f"{self.options.max_length}")
        return self(history, lengths, timestamps, query_timestamps, return_cache=True, outputs=False)[1]

    @torch.no_grad()
    def score_candidates(
        self,
        cache: HistoryCache,
        candidates: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        micro_batch: int = 128,
        num_candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The stack's output for each candidate as if appended alone to its user's cached history.

        M-FALCON's second step, in the attention of ``candidate_attention``: a candidate sees the
        history and itself, never another candidate, so the candidates of all users go through each
        layer together, one (B, H, b, n) product against the padded histories per micro-batch of
        ``micro_batch`` candidates per user; ``micro_batch`` bounds that memory and does not change
        the results.

        Args:
            cache: from ``cache_history`` (B users).
            candidates: (m, d) the stack's inputs for the candidates, users concatenated in the
                cache's order.
            timestamps: (m,) each candidate's own time (its key's time), e.g. the request time;
                needed when the history has timestamps and the stack a time bias.
            query_timestamps: (m,) the time each candidate queries at (default its own).
            micro_batch: candidates per micro-batch and user, b.
            num_candidates: (B,) candidates per user (default: a one-user cache, all m).

        Returns:
            (m, d) outputs, row i for candidate i.
        """
        self._check_eval()
        users, m = cache.lengths.numel(), candidates.shape[0]
        if num_candidates is None:
            if users != 1:
                raise ValueError(f"score_candidates: a cache of {users} histories needs num_candidates per user")
            num_candidates = torch.tensor([m], device=candidates.device)
        if num_candidates.numel() != users or int(num_candidates.sum()) != m:
            raise ValueError(f"num_candidates {num_candidates.tolist()} must give each of the {users} users' "
                             f"candidates, {m} in all")
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        layout = CandidateLayout(cache, num_candidates, self.options.max_length, self.options.num_buckets,
                                 timestamps, query_timestamps)
        histories = [(layout.history(keys, layer.num_heads), layout.history(values, layer.num_heads))
                     for layer, (keys, values) in zip(self.layers, cache.keys_values, strict=True)]
        padded = layout.candidates(candidates)  # (B, m, d)
        for start in range(0, layout.candidate_length, micro_batch):
            columns = slice(start, start + micro_batch)
            x = padded[:, columns]
            for layer, (keys, values) in zip(self.layers, histories):
                x = layer.forward_candidates(x, layout, keys, values, columns)
            padded[:, columns] = x
        return layout.jagged(padded)

    def _check_eval(self) -> None:
        if self.training:
            raise ValueError("M-FALCON scores with a stack in eval mode (dropout would make scores random): call .eval()")
