"""Blocked HSTU attention for CPU: eq. (2) of the HSTU paper tile by tile, forward and backward.

The same op as ``terarec.layers.hstu.hstu_attention`` (the readable reference, which builds the
full (B, H, T, T) weights and (B, T, T) bias), computed in tiles of queries and keys so that
no T x T tensor ever exists:

* rows are sorted by length (longest first, ``AttentionLayout`` does it), and a query tile
  takes only the rows that still have queries there: no work on padding past a sequence's end;
* a key tile that lies wholly after a query tile (causal) is skipped; only tiles that cross
  the diagonal, or hold candidates (M-FALCON), build a mask;
* the relative bias of a tile is gathered from the position and time-bucket tables with
  indexes computed for that tile from positions and timestamps; a small call (at most
  ``BUCKET_CACHE_ELEMENTS`` query-key pairs, 16 MiB of int32) keeps its tiles' time buckets in
  its layout for every layer, forward and backward, a large one recomputes them per tile;
* backward recomputes each tile's logits instead of storing the weights (as FlashAttention
  does), and scatters the bias gradient into the two tables.

Pointwise mode accumulates over key tiles; softmax mode takes the whole causal key range of a
query tile at once (its rows are then complete, so no running maximum is needed).

``blocked_hstu_attention`` runs the tiles above as torch ops (one Python step per tile) only
where the C++ kernel does not apply: the pointwise, plain causal case (training; inference
without a cache) on CPU in float32 / float64 runs ``terarec.layers.hstu_kernel``'s fused kernel
instead, the same tiling with the tile loop, the bias, SiLU and mask in C++ (its time buckets
exactly these, through ``bucket_starts``). Softmax mode, cached histories and candidates
(M-FALCON), other devices and dtypes, and ``TERAREC_HSTU_KERNEL=torch`` take the torch tiles.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from terarec.layers import hstu_kernel
from terarec.layers.hstu_kernel import KEY_TILE, QUERY_TILE, FusedHSTUAttention, kernel

if TYPE_CHECKING:
    from terarec.layers.hstu import AttentionLayout

TIME_BUCKET_WIDTH = 0.301  # ln-seconds per time bucket, as in the paper's reference code
BUCKET_CACHE_ELEMENTS = 1 << 22  # calls with at most this many query x key pairs keep their time buckets
TILE_ELEMENTS = 1 << 18  # logits per tile (rows x heads x queries x keys): a few tiles stay in L2 cache


def time_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Log-scale bucket of each time gap in seconds: ``floor(ln(max(|gap|, 1)) / 0.301)``, capped.

    Gaps of 0 and 1 s share bucket 0; the last bucket, ``num_buckets - 1``, holds every longer gap.
    """
    # |float32(gap)| == float32(|gap|): converting first halves the bytes of the passes after it.
    seconds = gaps.to(torch.float32).abs_().clamp_(min=1)
    return seconds.log_().div_(TIME_BUCKET_WIDTH).long().clamp_(max=num_buckets - 1)


@cache
def bucket_starts(num_buckets: int) -> torch.Tensor:
    """(num_buckets + 1,) int64: the smallest |gap| in seconds of each ``time_buckets`` bucket, then
    the int64 maximum (for buckets no gap reaches, too). Found by bisection on ``time_buckets``
    itself (monotone in |gap|), so that the C++ kernel reproduces its buckets exactly."""
    top = torch.iinfo(torch.int64).max
    low = torch.zeros(num_buckets, dtype=torch.int64)
    high = torch.full((num_buckets,), 1 << 62, dtype=torch.int64)
    wanted = torch.arange(num_buckets)
    reachable = time_buckets(high, num_buckets) >= wanted
    for _ in range(63):  # invariant: bucket(high) >= wanted where reachable, bucket(low) < wanted or low == 0
        middle = low + (high - low) // 2
        reached = time_buckets(middle, num_buckets) >= wanted
        high = torch.where(reached, middle, high)
        low = torch.where(reached, low, middle)
    starts = torch.where(wanted == 0, 0, high)
    starts = torch.where(reachable, starts, top)
    return torch.cat([starts, torch.tensor([top])])


class _Tile:
    """One query tile x key tile: ``rows`` leading rows, queries [q0, q1), keys [k0, k1), and the
    indexes of its bias (positions, time buckets) and its mask, shared by forward and backward.

    Plain causal calls (``causal``) share one position pattern between all rows:
    ``PositionTiles`` reads it as a strided view of the table.
    """

    def __init__(self, layout: AttentionLayout, rows: int, q0: int, q1: int, k0: int, k1: int, num_buckets: int):
        self.layout, self.rows, self.q0, self.q1, self.k0, self.k1 = layout, rows, q0, q1, k0, k1
        device = layout.lengths.device
        queries = torch.arange(q0, q1, device=device)
        keys = torch.arange(k0, k1, device=device)
        self.causal = layout.causal_only
        if layout.causal_only:
            self.hidden = (keys > queries.unsqueeze(1)) if k1 > q0 + 1 else None  # (bq, bk) crosses the diagonal
        else:
            self.query_keys = layout.row_cached[:rows, None] + queries  # (r, bq): each query's own key index
            first = layout.row_first_candidate[:rows, None]
            key_is_candidate = (keys >= first) & (keys < layout.row_total[:rows, None])  # (r, bk)
            self.hidden = (keys > self.query_keys.unsqueeze(2)) | (
                key_is_candidate.unsqueeze(1) & (keys != self.query_keys.unsqueeze(2))
            )
        self.buckets = None
        if layout.query_times is not None and num_buckets > 0:
            cache = layout.tile_buckets
            key = (rows, q0, q1, k0, k1, num_buckets)
            if cache is not None and key in cache:
                self.buckets = cache[key]
            else:
                gaps = layout.query_times[:rows, q0:q1, None] - layout.key_times[:rows, None, k0:k1]
                self.buckets = time_buckets(gaps, num_buckets).int()  # (r, bq, bk)
                if cache is not None:
                    cache[key] = self.buckets

    def position_index(self) -> torch.Tensor:
        """(r, bq, bk) index into the position table (tiles with a cache or candidates)."""
        n, device = self.layout.max_length, self.layout.lengths.device
        keys = torch.arange(self.k0, self.k1, device=device)
        first = self.layout.row_first_candidate[: self.rows, None]
        relative = self.query_keys.clamp(max=first).unsqueeze(2) - keys.expand(self.rows, -1).clamp(max=first).unsqueeze(1)
        return (relative + n - 1).clamp(0, 2 * n - 2)

    def bias(self, positions: PositionTiles, time_weights: torch.Tensor | None) -> torch.Tensor | None:
        """(r or 1, 1, bq, bk) bias of the tile, broadcast over heads."""
        bias = positions.bias(self)
        if time_weights is not None and self.buckets is not None:
            time_bias = lookup(time_weights, self.buckets)
            bias = time_bias if bias is None else time_bias.add_(bias)
        if bias is not None and bias.dim() == 2:
            bias = bias.unsqueeze(0)
        return None if bias is None else bias.unsqueeze(1)

    def add_bias_grad(self, grad_logits: torch.Tensor, positions: PositionTiles, time_grad: torch.Tensor | None) -> None:
        """Scatter the tile's (r, H, bq, bk) logit gradient into the two tables' gradients."""
        per_row = grad_logits.sum(1)  # (r, bq, bk): the bias is shared by the heads
        positions.add_grad(self, per_row)
        if time_grad is not None and self.buckets is not None:
            time_grad.index_add_(0, self.buckets.reshape(-1), per_row.reshape(-1))

    def mask(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """``values`` (r, H, bq, bk) with ``fill`` where a query may not see a key (in place)."""
        if self.hidden is None:
            return values
        hidden = self.hidden.unsqueeze(0) if self.hidden.dim() == 2 else self.hidden
        return values.masked_fill_(hidden.unsqueeze(1), fill)


class PositionTiles:
    """The relative position bias of one call's tiles, and its gradient.

    In a plain causal tile the bias is Toeplitz, ``w[q0 - k0 + i - j + n - 1]``: it is read as a
    strided (Hankel) view of the zero-padded table with its columns flipped, and its gradient
    summed along the tile's diagonals through the same view, with no index tensors and nothing
    kept between tiles. Other tiles gather and scatter with the tile's index.
    """

    def __init__(self, weights: torch.Tensor | None, layout: AttentionLayout) -> None:
        self.weights, self.n = weights, layout.max_length
        self.pad = layout.query_length + layout.key_length  # >= any tile's bq + bk
        self.padded = None if weights is None else F.pad(weights, (self.pad, self.pad))
        self.padded_grad = None if weights is None else torch.zeros_like(self.padded)

    def _first(self, tile: _Tile) -> int:
        """Index in the padded table of the bias of the tile's query 0 and key bk - 1."""
        return tile.q0 - tile.k0 + self.n - 1 + self.pad - (tile.k1 - tile.k0 - 1)

    def bias(self, tile: _Tile) -> torch.Tensor | None:
        if self.weights is None:
            return None
        if not tile.causal:
            return lookup(self.weights, tile.position_index())
        shape = (tile.q1 - tile.q0, tile.k1 - tile.k0)
        return self.padded.as_strided(shape, (1, 1), self._first(tile)).flip(1)

    def add_grad(self, tile: _Tile, per_row: torch.Tensor) -> None:
        if self.weights is None:
            return
        if not tile.causal:
            index = tile.position_index().reshape(-1) + self.pad
            self.padded_grad.index_add_(0, index, per_row.reshape(-1))
            return
        bq, bk = per_row.shape[1:]
        width = bq + bk - 1
        skewed = per_row.new_zeros(bq * width)  # row i holds the tile's row i, flipped, from column i
        skewed.as_strided((bq, bk), (width + 1, 1)).copy_(per_row.sum(0).flip(1))
        first = self._first(tile)
        self.padded_grad[first : first + width] += skewed.view(bq, width).sum(0)

    def grad(self) -> torch.Tensor | None:
        return None if self.weights is None else self.padded_grad[self.pad : self.pad + self.weights.shape[0]]


def lookup(weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``weights[index]`` for a 1-D ``weights``; index_select on the flat index is ~3x faster on CPU."""
    return weights.index_select(0, index.reshape(-1)).view(index.shape)


def _tiles(layout: AttentionLayout, heads: int, softmax: bool, num_buckets: int, tile_elements: int):
    """The tiles of a call, query tile by query tile; a query tile's rows are those still long
    enough to have a query in it, its keys stop at the last key any of its queries may see."""
    lengths = layout.sorted_query_lengths
    if not lengths or lengths[0] == 0:
        return
    side = max(1, int(math.sqrt(tile_elements / (len(lengths) * heads))))
    query_tile = min(lengths[0], 1 << (side.bit_length() - 1))  # a power of two
    for q0 in range(0, lengths[0], query_tile):
        rows = sum(1 for length in lengths if length > q0)
        q1 = min(q0 + query_tile, lengths[0])
        key_end = min(layout.key_length, layout.max_row_cached + q1)
        if softmax:  # whole rows at once, tiles as long as the budget allows
            key_tile = key_end
        else:
            key_tile = max(query_tile, 1 << (max(1, tile_elements // (rows * heads * query_tile)).bit_length() - 1))
        for k0 in range(0, key_end, key_tile):
            yield _Tile(layout, rows, q0, q1, k0, min(k0 + key_tile, key_end), num_buckets)


def _heads(tokens: torch.Tensor, rows: slice, span: slice) -> torch.Tensor:
    """(r, H, b, w) view of the ``rows`` x ``span`` block of a token-major (B, T, H, w) tensor."""
    return tokens[rows, span].transpose(1, 2)


def _logits(queries: torch.Tensor, keys: torch.Tensor, bias: torch.Tensor | None, softmax: bool) -> torch.Tensor:
    """(r, H, bq, bk) Q K^T (/ sqrt(d_qk) in softmax mode) + bias."""
    logits = queries @ keys.transpose(-1, -2)
    if softmax:
        logits.mul_(1.0 / math.sqrt(queries.shape[-1]))
    return logits if bias is None else logits.add_(bias)


class BlockedHSTUAttention(torch.autograd.Function):
    """Tiled eq. (2) with a hand-written backward that recomputes each tile (see the module docstring).

    Inputs: padded, token-major (the layer's projections need no transposed copy), rows in the
    layout's (sorted) order: queries (B, Tq, H, d_qk), keys (B, Tk, H, d_qk), values (B, Tk, H,
    d_v); the bias tables (or None); the layout; n; softmax.
    Output: (B, Tq, H, d_v), zeros on queries past a row's length.
    """

    @staticmethod
    def forward(ctx, queries, keys, values, position_weights, time_weights, layout, scale_length, softmax,
                tile_elements=TILE_ELEMENTS):
        if queries.shape[1] != layout.query_length or keys.shape[1] != layout.key_length:
            raise ValueError(f"blocked_hstu_attention takes token-major (B, T, H, w) tensors: queries {tuple(queries.shape)} "
                             f"and keys {tuple(keys.shape)} do not hold the layout's {layout.query_length} queries "
                             f"and {layout.key_length} keys in dimension 1")
        queries, keys, values = queries.contiguous(), keys.contiguous(), values.contiguous()
        num_buckets = 0 if time_weights is None else time_weights.shape[0]
        out = queries.new_zeros(queries.shape[:3] + values.shape[3:])
        positions = PositionTiles(position_weights, layout)
        for tile in _tiles(layout, queries.shape[2], softmax, num_buckets, tile_elements):
            r, q, k = slice(0, tile.rows), slice(tile.q0, tile.q1), slice(tile.k0, tile.k1)
            logits = _logits(_heads(queries, r, q), _heads(keys, r, k), tile.bias(positions, time_weights), softmax)
            if softmax:
                weights = torch.softmax(tile.mask(logits, -math.inf), dim=-1)
            else:
                weights = tile.mask(F.silu(logits, inplace=True), 0.0)
            _heads(out, r, q).add_(weights @ _heads(values, r, k))
        if not softmax:
            out.div_(scale_length)
        ctx.save_for_backward(queries, keys, values, position_weights, time_weights)
        ctx.layout, ctx.scale_length, ctx.softmax, ctx.tile_elements = layout, scale_length, softmax, tile_elements
        return out

    @staticmethod
    def backward(ctx, grad_out):
        queries, keys, values, position_weights, time_weights = ctx.saved_tensors
        softmax, layout = ctx.softmax, ctx.layout
        grad_out = grad_out.contiguous() if softmax else grad_out / ctx.scale_length
        grad_q, grad_k, grad_v = torch.zeros_like(queries), torch.zeros_like(keys), torch.zeros_like(values)
        positions = PositionTiles(position_weights, layout)
        time_grad = None if time_weights is None else torch.zeros_like(time_weights)
        num_buckets = 0 if time_weights is None else time_weights.shape[0]
        scale = 1.0 / math.sqrt(queries.shape[-1])
        for tile in _tiles(layout, queries.shape[2], softmax, num_buckets, ctx.tile_elements):
            r, q, k = slice(0, tile.rows), slice(tile.q0, tile.q1), slice(tile.k0, tile.k1)
            tile_q, tile_k, tile_v = _heads(queries, r, q), _heads(keys, r, k), _heads(values, r, k)
            tile_grad_out = _heads(grad_out, r, q)
            logits = _logits(tile_q, tile_k, tile.bias(positions, time_weights), softmax)
            grad_weights = tile_grad_out @ tile_v.transpose(-1, -2)
            if softmax:
                weights = torch.softmax(tile.mask(logits, -math.inf), dim=-1)
                grad_logits = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            else:
                weights = tile.mask(F.silu(logits), 0.0)
                grad_logits = tile.mask(torch.ops.aten.silu_backward(grad_weights, logits), 0.0)
            _heads(grad_v, r, k).add_(weights.transpose(-1, -2) @ tile_grad_out)
            _heads(grad_q, r, q).add_(grad_logits @ tile_k)
            _heads(grad_k, r, k).add_(grad_logits.transpose(-1, -2) @ tile_q)
            tile.add_bias_grad(grad_logits, positions, time_grad)
        if softmax:
            grad_q.mul_(scale)
            grad_k.mul_(scale)
        return grad_q, grad_k, grad_v, positions.grad(), time_grad, None, None, None, None


def blocked_hstu_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    layout: AttentionLayout,
    position_weights: torch.Tensor | None,
    time_weights: torch.Tensor | None,
    scale_length: int,
    softmax: bool = False,
    tile_elements: int = TILE_ELEMENTS,
    kernel_tiles: tuple[int, int] = (QUERY_TILE, KEY_TILE),
) -> torch.Tensor:
    """Eq. (2) in tiles (see the module docstring): ``hstu_attention`` with the layout's mask and
    the bias of ``RelativeBias`` tables, without T x T tensors.

    Args:
        queries, keys, values: (B, Tq or Tk, H, width), padded as ``layout.queries`` / ``layout.keys``
            put them (token-major, unlike ``hstu_attention``).
        layout: the call's ``AttentionLayout``.
        position_weights: (2n - 1,) relative position table, or None.
        time_weights: (num_buckets,) time-bucket table, or None (no time bias).
        scale_length: n, the divisor of the pointwise weights.
        softmax: softmax(Q K^T / sqrt(d_qk) + rab) instead of the pointwise SiLU.
        tile_elements: logits per tile (rows x heads x queries x keys) of the torch tiles, a memory /
            speed trade.
        kernel_tiles: (queries, keys) per tile of the C++ kernel, which runs instead of the torch
            tiles where it applies: CPU, pointwise, plain causal layout (no cached history, no
            candidates), rows of at least ``KERNEL_MIN_LENGTH`` (64) tokens, float32 / float64,
            integer timestamps, and ``TERAREC_HSTU_KERNEL`` not "torch" (``terarec.layers.hstu_kernel``).

    Returns:
        (B, Tq, H, d_v).
    """
    fused = _fused_inputs(queries, keys, values, layout, position_weights, time_weights, softmax)
    if fused is not None:
        return FusedHSTUAttention.apply(*fused, scale_length, *kernel_tiles)
    return BlockedHSTUAttention.apply(
        queries, keys, values, position_weights, time_weights, layout, scale_length, softmax, tile_elements
    )


def _fused_inputs(queries, keys, values, layout, position_weights, time_weights, softmax) -> tuple | None:
    """``FusedHSTUAttention``'s inputs when the C++ kernel applies to this call (CPU, pointwise,
    plain causal layout, float32 / float64 throughout, integer timestamps) and is built; else None."""
    tensors = [t for t in (queries, keys, values, position_weights, time_weights) if t is not None]
    if softmax or not layout.causal_only or queries.shape[1] != keys.shape[1]:
        return None
    if layout.query_length < hstu_kernel.KERNEL_MIN_LENGTH:  # short rows: the torch tiles are as fast
        return None
    if any(t.device.type != "cpu" or t.dtype != queries.dtype for t in tensors):
        return None
    if queries.dtype not in (torch.float32, torch.float64):
        return None
    times = None
    if time_weights is not None and layout.query_times is not None:
        if layout.query_times.dtype != torch.int64 or layout.key_times.dtype != torch.int64:
            return None
        times = (layout.query_times.contiguous(), layout.key_times.contiguous(), bucket_starts(time_weights.shape[0]))
    if kernel() is None:
        return None
    return (queries.contiguous(), keys.contiguous(), values.contiguous(), position_weights, time_weights, times,
            layout.sorted_query_lengths, layout.max_length)
