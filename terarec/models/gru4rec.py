"""GRU4Rec: session-based recommendation with recurrent neural networks (Hidasi et al., ICLR 2016).

Read beside the paper (section 3): the history's items, embedded, feed a GRU,
h_t = (1 - z_t) h_{t-1} + z_t h^_t with z_t = sigmoid(W_z x_t + U_z h_{t-1}),
r_t = sigmoid(W_r x_t + U_r h_{t-1}), h^_t = tanh(W x_t + U (r_t . h_{t-1})) (eqs. 1-4), and
the hidden state at every step scores the next item. Sequences are packed
(``pack_padded_sequence``), so padding costs nothing in the recurrence.

Training uses the same retrieval loss as HSTU and SASRec (sampled softmax, uniform
negatives, ``terarec.layers.retrieval``) instead of the paper's TOP1 / BPR ranking losses over
session-parallel mini-batches; the output layer is the item embedding table itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from terarec.data.batches import SequenceBatch
from terarec.embedding.factory import sequence_embeddings
from terarec.layers.jagged import (
    padded_index,
    to_jagged,
    to_padded,
)
from terarec.layers.retrieval import NextItemRetrieval, RetrievalLoss, SampledSoftmax
from terarec.models.inputs import ModelInputs


class GRU4Rec(NextItemRetrieval, nn.Module):
    """A GRU over a user's jagged history; the state after item t is the user vector for t + 1.

    Args (Config):
        embedding_dim: d, item embedding width.
        hidden_dim: GRU state width (0: d); projected back to d when different.
        num_layers: stacked GRU layers.
        dropout: on the embeddings and on the GRU output.
        num_negatives, in_batch, temperature, l2_norm, per_position: the retrieval loss.
    """

    task = "sequential"
    trainable = True

    @dataclass
    class Config(RetrievalLoss):
        embedding_dim: int = 64
        hidden_dim: int = 0
        num_layers: int = 1
        dropout: float = 0.2

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        d = config.embedding_dim
        hidden = config.hidden_dim or d
        self.items = sequence_embeddings(inputs, d)
        self.gru = nn.GRU(d, hidden, num_layers=config.num_layers, batch_first=True)
        self.output = nn.Linear(hidden, d) if hidden != d else nn.Identity()
        self.head = SampledSoftmax.from_options(config)

    def encode(self, batch: SequenceBatch, keep: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        """(N', d) GRU states for the kept values of the batch (None: all)."""
        embeddings = self.items(batch.item_ids).values()
        if keep is not None:
            embeddings = embeddings[keep]
        embeddings = F.dropout(embeddings, self.config.dropout, self.training)
        batch_size, length = lengths.numel(), int(lengths.max())
        index = padded_index(lengths, length)
        packed = pack_padded_sequence(
            to_padded(embeddings, index, batch_size, length), lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
        )
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=length)
        return self.output(F.dropout(to_jagged(states, index), self.config.dropout, self.training))
