"""HSTU for next-item retrieval (Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter
Sequential Transducers for Generative Recommendations", ICML 2024, arXiv 2402.17152).

Read beside the paper (section 3 and the public-data setting of section 4.1.1):

* input (sec. 2.1 / reference code): x_i = sqrt(d) * e(item_i) [+ W_a a_i, the event's
  actions] + p_i (learned absolute positions), then dropout;
* a stack of HSTU layers, eqs. (1)-(3), in ``terarec.layers.hstu``: pointwise SiLU attention
  divided by n (no softmax) under a causal mask, with a relative bias rab^{p,t} over
  positions and log-bucketed time gaps; ``softmax: true`` swaps in softmax attention;
* retrieval (sec. 4.1.1): the output at position i is the user vector u_i that predicts item
  i+1; u and the item embeddings are L2-normalised and compared by dot product over a
  temperature; sampled softmax with uniform negatives (or in-batch ones) during training,
  the full catalogue at evaluation (``terarec.layers.retrieval``).

Time bias: the query at position i measures gaps from the time of the event it predicts
(``query_time: next``, the reference code's choice: the request time is known when serving;
at evaluation it is the batch's ``target_timestamps``); ``query_time: own`` uses position i's
own time instead. Timestamps are seconds (MovieLens); data without a clock (the Amazon
files) carries positions, so the time bias then sees index gaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from terarec.data.batches import SequenceBatch
from terarec.embedding.factory import sequence_embeddings
from terarec.layers.dropout import dropout
from terarec.layers.hstu import HSTUStack
from terarec.layers.jagged import last_index, positions
from terarec.layers.retrieval import NextItemRetrieval, RetrievalLoss, SampledSoftmax
from terarec.models.inputs import ModelInputs


class HSTU(NextItemRetrieval, nn.Module):
    """Hierarchical Sequential Transduction Units over a user's jagged history.

    Args (Config):
        embedding_dim: d, item embedding and model width.
        num_layers: HSTU layers.
        num_heads: attention heads.
        attention_dim: per-head width of Q and K (0: d).
        linear_dim: per-head width of U and V (0: d).
        max_length: longest input sequence; n in eq. (2) and the position tables' size.
        dropout: on the input and before f2 in each layer.
        attention_dropout: on the pointwise attention weights.
        num_time_buckets: log-scale time-gap buckets of the bias (0: no time bias).
        position_bias: relative position part of the bias.
        query_time: ``next`` (time of the predicted event) or ``own``; see the module docstring.
        softmax: softmax attention instead of pointwise SiLU (for comparison).
        num_actions: width of the batches' ``actions`` (0: items only).
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
        attention_dim: int = 0
        linear_dim: int = 0
        max_length: int = 200
        dropout: float = 0.2
        attention_dropout: float = 0.0
        num_time_buckets: int = 128
        position_bias: bool = True
        query_time: Literal["next", "own"] = "next"
        softmax: bool = False
        num_actions: int = 0

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        d = config.embedding_dim
        self.items = sequence_embeddings(inputs, d)
        self.positions = nn.Embedding(config.max_length, d)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.actions = nn.Linear(config.num_actions, d, bias=False) if config.num_actions else None
        self.stack = HSTUStack(
            HSTUStack.Options(
                embedding_dim=d,
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                attention_dim=config.attention_dim,
                linear_dim=config.linear_dim,
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
                max_length=config.max_length,
                num_buckets=config.num_time_buckets,
                position_bias=config.position_bias,
                softmax=config.softmax,
            )
        )
        self.head = SampledSoftmax.from_options(config)

    def encode(self, batch: SequenceBatch, keep: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        """(N', d) outputs for the kept values of the batch (None: all), in sequences of ``lengths``."""
        return self.stack(*self._stack_inputs(batch, keep, lengths))

    def user_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, d) the output at each history's last position (``NextItemRetrieval.user_vectors``).

        In eval mode without autograd, M-FALCON's two steps compute it (``HSTUStack.cache_history``
        of every position but the last, then ``score_candidates`` of the last): a causal stack's
        last position sees the others as a candidate sees its history, so the outputs are the same
        up to float rounding, and the last layer's attention runs for one query per history
        instead of all of them (serving: 12-14% less CPU for the user vectors of 200-event
        histories, BENCHMARKS.md)."""
        if self.training or torch.is_grad_enabled():
            return super().user_vectors(batch)
        x, lengths, timestamps, query_times = self._stack_inputs(batch, None, batch.lengths)
        last = last_index(lengths)
        earlier = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        earlier[last] = False
        cache = self.stack.cache_history(x[earlier], timestamps[earlier], query_times[earlier], lengths=lengths - 1)
        return self.stack.score_candidates(cache, x[last], timestamps[last], query_times[last], micro_batch=1,
                                           num_candidates=torch.ones_like(lengths))

    def _stack_inputs(
        self, batch: SequenceBatch, keep: torch.Tensor | None, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stack's inputs (x, lengths, timestamps, query times) for the kept values of the batch."""
        embeddings = self.items(batch.item_ids).values()  # (N, d)
        if self.actions is not None:
            if batch.actions.shape[1] != self.config.num_actions:
                raise ValueError(f"hstu: num_actions is {self.config.num_actions}, batches carry {batch.actions.shape[1]}")
            embeddings = embeddings + self.actions(batch.actions)
        timestamps = batch.timestamps
        # The time each position queries at: the next event's (its target's), or its own.
        if self.config.query_time == "next":
            query_times = torch.roll(timestamps, -1)
            final = batch.target_timestamps if batch.target_timestamps is not None else timestamps[last_index(batch.lengths)]
            query_times[last_index(batch.lengths)] = final
        else:
            query_times = timestamps
        if keep is not None:
            embeddings, timestamps, query_times = embeddings[keep], timestamps[keep], query_times[keep]
        x = embeddings * math.sqrt(self.config.embedding_dim) + self.positions(positions(lengths))
        x = dropout(x, self.config.dropout, self.training)
        return x, lengths, timestamps, query_times
