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
pads, to the batch's longest sequence. For M-FALCON style inference, ``hstu_attention`` takes
explicit queries, keys, values and mask (candidates can attend to a cached history), and
``HSTUStack`` can return each layer's keys and values.

Example:
    >>> stack = HSTUStack(HSTUStack.Options(embedding_dim=16, max_length=20))
    >>> out = stack(torch.randn(5, 16), torch.tensor([3, 2]), torch.arange(5), torch.arange(5))  # (5, 16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terarec.layers.jagged import padded_index, to_jagged, to_padded

TIME_BUCKET_WIDTH = 0.301  # ln-seconds per time bucket, as in the paper's reference code


def time_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Log-scale bucket of each time gap in seconds: ``floor(ln(max(|gap|, 1)) / 0.301)``, capped.

    Gaps of 0 and 1 s share bucket 0; the last bucket, ``num_buckets - 1``, holds every longer gap.
    """
    seconds = gaps.abs().clamp(min=1).to(torch.float32)
    return (torch.log(seconds) / TIME_BUCKET_WIDTH).long().clamp(max=num_buckets - 1)


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

    def forward(self, length: int, buckets: torch.Tensor | None) -> torch.Tensor | None:
        """(B or 1, 1, T, T) bias for a padded length T, given (B, T, T) time buckets or None."""
        bias = None
        if self.position_weights is not None:
            index = torch.arange(length, device=self.position_weights.device)
            relative = (index.unsqueeze(1) - index.unsqueeze(0) + self.max_length - 1).clamp(0, 2 * self.max_length - 2)
            bias = self.position_weights[relative].unsqueeze(0)  # (1, T, T)
        if self.time_weights is not None and buckets is not None:
            time_bias = self.time_weights[buckets]  # (B, T, T)
            bias = time_bias if bias is None else bias + time_bias
        return None if bias is None else bias.unsqueeze(1)


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
    """

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
    ) -> None:
        super().__init__()
        self.num_heads, self.attention_dim, self.linear_dim = num_heads, attention_dim, linear_dim
        self.max_length, self.softmax = max_length, softmax
        self.dropout, self.attention_dropout = dropout, attention_dropout
        self.input_norm = nn.LayerNorm(embedding_dim)
        self.f1 = nn.Linear(embedding_dim, num_heads * (2 * linear_dim + 2 * attention_dim))
        self.attention_norm = nn.LayerNorm(num_heads * linear_dim)
        self.f2 = nn.Linear(num_heads * linear_dim, embedding_dim)
        self.bias = RelativeBias(max_length, num_buckets, position_bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. (1): U, V, Q, K of (N, d) values, each (N, H * width)."""
        h = self.num_heads
        sizes = [h * self.linear_dim, h * self.linear_dim, h * self.attention_dim, h * self.attention_dim]
        return torch.split(F.silu(self.f1(self.input_norm(x))), sizes, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        shape: tuple[int, int],
        mask: torch.Tensor,
        buckets: torch.Tensor | None,
        return_kv: bool = False,
    ):
        """Eqs. (1)-(3) on (N, d) jagged values; ``index`` / ``shape`` / ``mask`` describe the padding."""
        batch, length = shape
        u, v, q, k = self.project(x)

        def heads(t: torch.Tensor, width: int) -> torch.Tensor:  # (N, H*w) -> (B, H, T, w)
            return to_padded(t, index, batch, length).view(batch, length, self.num_heads, width).transpose(1, 2)

        attended = hstu_attention(
            heads(q, self.attention_dim),
            heads(k, self.attention_dim),
            heads(v, self.linear_dim),
            mask,
            self.bias(length, buckets),
            scale_length=self.max_length,
            softmax=self.softmax,
            dropout=self.attention_dropout if self.training else 0.0,
        )  # (B, H, T, d_v)
        attended = to_jagged(attended.transpose(1, 2).reshape(batch, length, -1), index)  # (N, H*d_v)
        y = self.output(x, attended, u)
        return (y, (k, v)) if return_kv else y

    def output(self, x: torch.Tensor, attended: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Eq. (3): Y = X + f2(Dropout(LN(A V) * U)), on (N, d) values (also M-FALCON's candidates)."""
        return x + self.f2(F.dropout(self.attention_norm(attended) * u, self.dropout, self.training))


class HSTUStack(nn.Module):
    """Causal stack of HSTU layers over jagged sequences, with the time buckets computed once.

    Args (Options):
        embedding_dim, num_layers, num_heads, attention_dim, linear_dim (0: embedding_dim),
        dropout, attention_dropout, max_length, num_buckets, position_bias, softmax: as in
        ``HSTULayer``.
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
            )
            for _ in range(options.num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        return_kv: bool = False,
    ):
        """Run the stack.

        Args:
            x: (N, d) input vectors, sequences concatenated (oldest first).
            lengths: (B,) sequence lengths (each <= max_length).
            timestamps: (N,) event times in seconds (keys' times), or None for no time bias.
            query_timestamps: (N,) the time each position queries at (default: its own time).
            return_kv: also return each layer's (keys, values), jagged (N, H * width).

        Returns:
            (N, d) outputs (and the list of per-layer (K, V)).
        """
        batch = lengths.numel()
        length = int(lengths.max()) if batch else 0
        if length > self.options.max_length:
            raise ValueError(f"a sequence of {length} events is longer than max_length {self.options.max_length}")
        index = padded_index(lengths, length)
        mask = causal_mask(length, x.device)
        buckets = None
        if timestamps is not None and self.options.num_buckets > 0:
            query_timestamps = timestamps if query_timestamps is None else query_timestamps
            keys = to_padded(timestamps, index, batch, length)
            queries = to_padded(query_timestamps, index, batch, length)
            buckets = time_buckets(queries.unsqueeze(2) - keys.unsqueeze(1), self.options.num_buckets)
        cache = []
        for layer in self.layers:
            if return_kv:
                x, kv = layer(x, index, (batch, length), mask, buckets, return_kv=True)
                cache.append(kv)
            else:
                x = layer(x, index, (batch, length), mask, buckets)
        return (x, cache) if return_kv else x

