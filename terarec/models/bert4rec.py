"""BERT4Rec: sequential recommendation with bidirectional Transformers (Sun et al., CIKM 2019).

Read beside the paper (section 3):

* embedding (3.5): h^0_i = v_i + p_i, item plus learned position; positions are counted
  from the sequence's end here, so the [mask] appended at evaluation always sits at 0;
* Transformer layers (3.3, 3.4): multi-head softmax self-attention over *all* positions (no
  causal mask; pad keys masked), GELU position-wise feed-forward of width 4d, residual,
  LayerNorm and dropout;
* output (3.6): P(v) = softmax(GELU(h^L_t W^P + b^P) E^T + b^O), the item table E shared
  with the input (here with a LayerNorm after the GELU, as BERT's head, and no b^O);
* cloze objective (3.6): each training item is replaced by [mask] with probability rho
  (``mask_probability``), and the model predicts the masked items from both sides; a
  sequence with no item masked gets its last one masked. As the paper adds "samples that
  only mask the last item" to match the task, a share ``last_item_probability`` of the
  sequences has only its last item masked. At evaluation the history gets a [mask] appended
  and its output ranks the catalogue.

The softmax runs over the whole catalogue by default (``num_negatives: 0``, as in the paper);
the shared ``terarec.layers.retrieval`` head can sample negatives instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terarec.data.batches import SequenceBatch
from terarec.embedding.factory import sequence_embeddings
from terarec.layers.jagged import last_index, positions_from_end
from terarec.layers.retrieval import RetrievalLoss, SampledSoftmax
from terarec.layers.transformer import TransformerEncoder
from terarec.models.inputs import ModelInputs


class BERT4Rec(nn.Module):
    """Bidirectional Transformer trained with the cloze objective.

    Args (Config):
        embedding_dim: d.
        num_layers: Transformer layers (L).
        num_heads: attention heads (h).
        max_length: longest history; the position table has max_length + 1 rows (the [mask]).
        dropout: on embeddings, attention and feed-forward.
        mask_probability: rho, the share of training items replaced by [mask].
        last_item_probability: share of training sequences with only the last item masked.
        num_negatives, in_batch, temperature, l2_norm, per_position: the softmax head
            (defaults: full catalogue, raw dot products).
    """

    task = "sequential"
    trainable = True

    @dataclass
    class Config(RetrievalLoss):
        embedding_dim: int = 64
        num_layers: int = 2
        num_heads: int = 2
        max_length: int = 200
        dropout: float = 0.2
        mask_probability: float = 0.2
        last_item_probability: float = 0.1
        num_negatives: int = 0
        temperature: float = 1.0
        l2_norm: bool = False

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        if not 0 < config.mask_probability <= 1:
            raise ValueError(f"bert4rec: mask_probability must be in (0, 1], got {config.mask_probability}")
        self.config = config
        d = config.embedding_dim
        self.items = sequence_embeddings(inputs, d)
        self.mask_embedding = nn.Parameter(torch.empty(d).normal_(std=0.02))
        self.positions = nn.Embedding(config.max_length + 1, d)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_norm = nn.LayerNorm(d)
        self.encoder = TransformerEncoder(
            d, config.num_layers, config.num_heads, config.dropout, causal=False, hidden_dim=4 * d, activation="gelu"
        )
        self.output = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        self.head = SampledSoftmax.from_options(config)

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.rows(ids)

    def encode(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, d) outputs h^L of jagged input embeddings (with [mask] rows in place)."""
        if int(lengths.max()) > self.config.max_length + 1:
            raise ValueError(f"bert4rec: a sequence is longer than max_length + 1 = {self.config.max_length + 1}")
        x = self.input_norm(embeddings + self.positions(positions_from_end(lengths)))
        return self.output(self.encoder(F.dropout(x, self.config.dropout, self.training), lengths))

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        lengths = batch.lengths
        embeddings = self.items(batch.item_ids).values()
        sequence = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
        masked = torch.rand(embeddings.shape[0]) < self.config.mask_probability
        last_only = torch.rand(lengths.numel()) < self.config.last_item_probability
        masked &= ~last_only[sequence]
        none_masked = torch.zeros(lengths.numel(), dtype=torch.long).index_add_(0, sequence, masked.long()) == 0
        masked[last_index(lengths)[none_masked & (lengths > 0)]] = True
        embeddings = torch.where(masked.unsqueeze(1), self.mask_embedding, embeddings)
        outputs = self.encode(embeddings, lengths)[masked]
        targets = self.items.rows(batch.item_ids.values()[masked])
        return self.head.loss(outputs, targets, self.items.weight)

    def user_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        """The output at a [mask] appended to each history: (B, d)."""
        lengths = batch.lengths
        embeddings = self.items(batch.item_ids).values()
        with_mask = lengths + 1
        sequence = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
        inputs = self.mask_embedding.expand(int(with_mask.sum()), -1).clone()
        inputs[torch.arange(embeddings.shape[0]) + sequence] = embeddings  # histories, shifted past earlier masks
        return self.encode(inputs, with_mask)[last_index(with_mask)]

    def score_catalogue(self, batch: SequenceBatch) -> torch.Tensor:
        return self.head.score_catalogue(self.user_vectors(batch), self.items.weight)
