"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Read beside the paper (section III):

* embedding (III-B): E_i = M_{s_i} (item) + P_i (learned position), here with the reference
  code's sqrt(d) scale on M and dropout;
* self-attention block (III-C, D): S = SA(E) = softmax(Q K^T / sqrt(d)) V with Q = E W^Q,
  K = E W^K, V = E W^V under a causal mask (query i sees keys j <= i), then a point-wise
  two-layer feed-forward F_i = ReLU(S_i W1 + b1) W2 + b2; each sub-layer wrapped as
  g(x) = x + Dropout(g(LayerNorm(x))) (III-E), stacked b times; multi-head is an option;
* prediction (III-F): r_{i,t} = F_t^(b) . M_i, the shared item embedding as output layer.

The loss is the one HSTU trains with (``terarec.layers.retrieval``: sampled softmax with
uniform negatives, L2-normalised vectors over a temperature), in place of the paper's binary
cross-entropy with one negative, so both models compare under the same objective (as in the
HSTU paper's SASRec baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terarec.data.batches import SequenceBatch
from terarec.embedding.factory import sequence_embeddings
from terarec.layers.jagged import positions
from terarec.layers.retrieval import NextItemRetrieval, RetrievalLoss, SampledSoftmax
from terarec.layers.transformer import TransformerEncoder
from terarec.models.inputs import ModelInputs


class SASRec(NextItemRetrieval, nn.Module):
    """Causal Transformer over a user's jagged history.

    Args (Config):
        embedding_dim: d.
        num_layers: self-attention blocks (b).
        num_heads: attention heads.
        max_length: longest input sequence (the position table's size).
        dropout: on embeddings, attention and feed-forward.
        num_negatives, in_batch, temperature, l2_norm, per_position: the retrieval loss
            (``terarec.layers.retrieval.RetrievalLoss``).
    """

    task = "sequential"
    trainable = True

    @dataclass
    class Config(RetrievalLoss):
        embedding_dim: int = 64
        num_layers: int = 2
        num_heads: int = 1
        max_length: int = 200
        dropout: float = 0.2

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        d = config.embedding_dim
        self.items = sequence_embeddings(inputs, d)
        self.positions = nn.Embedding(config.max_length, d)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.encoder = TransformerEncoder(d, config.num_layers, config.num_heads, config.dropout, causal=True)
        self.head = SampledSoftmax.from_options(config)

    def encode(self, batch: SequenceBatch, keep: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        """(N', d) outputs F^(b) for the kept values of the batch (None: all)."""
        if int(lengths.max()) > self.config.max_length:
            raise ValueError(f"sasrec: a sequence is longer than max_length {self.config.max_length}")
        embeddings = self.items(batch.item_ids).values()
        if keep is not None:
            embeddings = embeddings[keep]
        x = embeddings * math.sqrt(self.config.embedding_dim) + self.positions(positions(lengths))
        return self.encoder(F.dropout(x, self.config.dropout, self.training), lengths)
