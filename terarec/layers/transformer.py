"""A Transformer encoder over jagged sequences, for SASRec (causal) and BERT4Rec (bidirectional).

Each block is ``x + Dropout(MHA(LN(x)))`` then ``x + Dropout(FFN(LN(x)))`` (pre-norm, as the
SASRec reference code normalises the queries before attention); a final LayerNorm closes the
stack. Softmax attention is ``torch.nn.functional.scaled_dot_product_attention``. Norms,
projections and the feed-forward run on the flat values; attention alone pads, on the right,
to the batch's longest sequence (causal: a real query never sees a pad; bidirectional: pad
keys are masked).

Example:
    >>> encoder = TransformerEncoder(16, num_layers=2, num_heads=2, dropout=0.1, causal=True)
    >>> out = encoder(torch.randn(5, 16), torch.tensor([3, 2]))  # (5, 16)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terarec.layers.jagged import padded_index, padding_mask, to_jagged, to_padded


class TransformerBlock(nn.Module):
    """Pre-norm multi-head self-attention and feed-forward, both residual, on jagged values.

    Args:
        embedding_dim: d.
        num_heads: attention heads (d must divide by it).
        dropout: on attention weights, after attention and inside / after the feed-forward.
        hidden_dim: feed-forward width (SASRec: d; BERT4Rec: 4 d).
        activation: ``relu`` (SASRec) or ``gelu`` (BERT4Rec).
    """

    def __init__(self, embedding_dim: int, num_heads: int, dropout: float, hidden_dim: int, activation: str = "relu") -> None:
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f"embedding_dim {embedding_dim} must be divisible by num_heads {num_heads}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.num_heads, self.dropout = num_heads, dropout
        self.attention_norm = nn.LayerNorm(embedding_dim)
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.out = nn.Linear(embedding_dim, embedding_dim)
        self.ffn_norm = nn.LayerNorm(embedding_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim),
            nn.ReLU() if activation == "relu" else nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, x: torch.Tensor, index: torch.Tensor, shape: tuple[int, int], mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        batch, length = shape
        d = x.shape[-1]
        qkv = to_padded(self.qkv(self.attention_norm(x)), index, batch, length)  # (B, T, 3d)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal and mask is None
        )  # (B, H, T, d / H)
        attended = to_jagged(attended.transpose(1, 2).reshape(batch, length, d), index)
        x = x + F.dropout(self.out(attended), self.dropout, self.training)
        return x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)


class TransformerEncoder(nn.Module):
    """Stack of ``TransformerBlock``s and a final LayerNorm over jagged sequences.

    Args:
        embedding_dim: d.
        num_layers: blocks.
        num_heads: attention heads.
        dropout: see TransformerBlock.
        causal: position i sees positions <= i (SASRec); else every real position (BERT4Rec).
        hidden_dim: feed-forward width (0: d).
        activation: ``relu`` or ``gelu``.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
        causal: bool,
        hidden_dim: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.causal = causal
        self.blocks = nn.ModuleList(
            TransformerBlock(embedding_dim, num_heads, dropout, hidden_dim or embedding_dim, activation)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, d) jagged inputs, (B,) lengths -> (N, d) outputs."""
        batch = lengths.numel()
        length = int(lengths.max()) if batch else 0
        index = padded_index(lengths, length)
        # Right padding: under the causal mask real queries never see pads, so no key mask.
        mask = None if self.causal else padding_mask(lengths, length)[:, None, None, :]
        for block in self.blocks:
            x = block(x, index, (batch, length), mask, self.causal)
        return self.final_norm(x)
