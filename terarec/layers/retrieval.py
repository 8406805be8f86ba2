"""The next-item retrieval head: (optionally L2-normalised) dot products, temperature, sampled softmax.

A user vector u and an item vector e_j score ``s(u, j) = <u', e_j'> / tau`` where ``x' =
x / ||x||`` when ``l2_norm`` is on (the HSTU paper's setting, after Zhai et al. 2023
"Revisiting Neural Retrieval on Accelerators") and ``x' = x`` otherwise. Training maximises
the softmax probability of the true next item against

* the whole catalogue (``num_negatives = 0`` and no ``in_batch``), or
* ``num_negatives`` items drawn uniformly from the catalogue, one draw shared by every
  position of the batch (a (N, K) product instead of a (N, K, d) gather), or, with
  ``per_position``, a draw of its own for every position (the HSTU reference code's sampler:
  more distinct negatives per step, at the cost of an (N, K, d) gather, or, when the catalogue
  has fewer rows than the N K draws, of scoring every row once and picking), and / or
* the distinct target items of the batch (``in_batch``: popular items come up more often,
  which no logQ correction undoes here).

A negative equal to the position's own target is removed (its logit is -inf), so the
positive is never counted as a negative. Row 0 of an item table is the unknown-id row and is
never a candidate. Ranking by these scores does not depend on the temperature.

The trainer seeds the uniform draws from the run's seed and the global step
(``seed_negatives``): every process of a distributed run draws the same negatives for a step,
so N processes score the global batch against the same ``K`` negatives as one process does,
and a resumed run draws what an uninterrupted one drew.

Example:
    >>> head = SampledSoftmax(num_negatives=128, temperature=0.05)
    >>> loss = head.loss(torch.randn(10, 8), torch.randint(1, 50, (10,)), torch.randn(50, 8))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from terarec.embedding.collection import SequenceEmbeddings
from terarec.layers.jagged import last_index, next_item_split


@dataclass
class RetrievalLoss:
    """The loss options every next-item model's ``Config`` shares (``SampledSoftmax``'s arguments).

    Args:
        num_negatives: uniform negatives per batch (0 with ``in_batch`` false: full softmax).
        in_batch: add the batch's distinct targets as negatives.
        temperature: logits are (cosine or dot product) / temperature.
        l2_norm: L2-normalise user and item vectors.
        per_position: draw the uniform negatives for each position apart (False: one draw per batch).
    """

    num_negatives: int = 128
    in_batch: bool = False
    temperature: float = 0.05
    l2_norm: bool = True
    per_position: bool = False


def own_target_columns(rows: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (position, column) pairs where negative row ``rows[column]`` is position's own target
    ``targets[position]``: the nonzeros of ``rows == targets[:, None]``, found by sorting the M
    rows and searching the N targets (O((N + M) log M)) instead of an (N, M) comparison; with
    uniform negatives there are about N M / R of them. Rows may repeat."""
    sorted_rows, order = torch.sort(rows)
    first = torch.searchsorted(sorted_rows, targets)
    count = torch.searchsorted(sorted_rows, targets, right=True) - first  # (N,) matches per position
    position = torch.repeat_interleave(torch.arange(len(targets), device=rows.device), count)
    rank = torch.arange(len(position), device=rows.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
    return position, order[torch.repeat_interleave(first, count) + rank]


class SampledSoftmax(nn.Module):
    """Softmax over the true next item and negatives; scores the whole catalogue for evaluation.

    Args:
        num_negatives: uniform negatives per batch (0: the full catalogue, unless ``in_batch``).
        in_batch: add the batch's distinct target items as negatives.
        temperature: tau, dividing every logit.
        l2_norm: L2-normalise user and item vectors.
        per_position: each position draws its own ``num_negatives`` (False: one draw per batch).
        eps: floor of the norm in the normalisation.
    """

    def __init__(
        self,
        num_negatives: int = 128,
        in_batch: bool = False,
        temperature: float = 1.0,
        l2_norm: bool = False,
        per_position: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if per_position and num_negatives == 0:
            raise ValueError("per_position draws uniform negatives: set num_negatives > 0 with it")
        self.num_negatives = num_negatives
        self.in_batch = in_batch
        self.temperature = temperature
        self.l2_norm = l2_norm
        self.per_position = per_position
        self.eps = eps
        self.draws: torch.Generator | None = None  # None: torch's global generator
        self.sparse_gradients = False  # gathers of table rows send row-sparse gradients (``gather``)

    def seed_negatives(self, seed: int, step: int) -> None:
        """Draw this step's uniform negatives from a generator fixed by ``(seed, step)`` alone:
        the same rows on every process of a distributed run (and in one process)."""
        if self.draws is None:
            self.draws = torch.Generator()
        self.draws.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))

    @classmethod
    def from_options(cls, options: RetrievalLoss) -> SampledSoftmax:
        """The head a model's ``RetrievalLoss`` fields describe."""
        return cls(options.num_negatives, options.in_batch, options.temperature, options.l2_norm, options.per_position)

    def normalise(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1, eps=self.eps) if self.l2_norm else vectors

    def gather(self, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``table[rows]``; with ``sparse_gradients`` its backward sends ``table`` a row-sparse
        gradient (the same values, without a table-sized tensor of zeros around them)."""
        return F.embedding(rows, table, sparse=True) if self.sparse_gradients else table[rows]

    def logits(
        self, users: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits with the positive in column 0, and the negatives' table rows.

        Args:
            users: (N, d) user vectors, one per predicted position.
            targets: (N,) table rows of the true next items.
            table: (R, d) item table; row 0 is never sampled.
            generator: random source of the uniform negatives (None: the one ``seed_negatives``
                seeded, else torch's global generator).

        Returns:
            ``(logits (N, 1 + M), negative_rows)``, negative_rows (M,) shared by every position,
            or (N, M) with ``per_position``; masked negatives (a position's own target) hold -inf.
        """
        users = self.normalise(users)
        generator = generator if generator is not None else self.draws
        if not self.per_position:
            return self._shared_negative_logits(users, targets, table, generator)
        positives = self.normalise(self.gather(table, targets))
        shape = (len(targets), self.num_negatives)  # num_negatives > 0 with per_position, checked in __init__
        rows = torch.randint(1, table.shape[0], shape, generator=generator, device=table.device)
        if self.in_batch:
            rows = torch.cat([rows, torch.unique(targets).expand(len(targets), -1)], 1)
        if rows.numel() > table.shape[0]:  # fewer rows than draws: score every row once, then pick
            negatives = torch.gather(users @ self.normalise(table).T, 1, rows)
        else:
            negatives = torch.einsum("nd,nmd->nm", users, self.normalise(self.gather(table, rows)))  # (N, M)
        same = rows == targets.unsqueeze(1)
        columns = [(users * positives).sum(-1, keepdim=True), negatives.masked_fill_(same, -torch.inf)]
        return torch.cat(columns, 1).div_(self.temperature), rows

    def _shared_negative_logits(
        self, users: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logits`` with one set of negatives for every position. The positives' and the negatives'
        rows are gathered at once: each gather's backward writes a dense table-sized gradient, so one
        gather instead of two saves a table-sized zero fill and sum per step."""
        negative_rows = []
        if self.num_negatives > 0:
            sampled = torch.randint(1, table.shape[0], (self.num_negatives,), generator=generator, device=table.device)
            negative_rows.append(sampled)
        if self.in_batch:
            negative_rows.append(torch.unique(targets))
        if not negative_rows:  # the full catalogue; the positive stays in its own column
            negative_rows.append(torch.arange(1, table.shape[0], device=table.device))
        rows = torch.cat(negative_rows)
        gathered = self.normalise(self.gather(table, torch.cat([targets, rows])))
        positives, negatives = gathered[: len(targets)], gathered[len(targets) :]
        negative_logits = users @ negatives.T  # (N, M)
        with torch.no_grad():
            # Outside autograd, in place: a -inf logit's softmax probability is exactly 0 and the
            # cross-entropy's gradient there exactly 0, so no masking pass is needed in backward
            # (the product's backward needs its inputs only).
            position, column = own_target_columns(rows, targets)
            negative_logits[position, column] = -torch.inf
        columns = [(users * positives).sum(-1, keepdim=True), negative_logits]
        return torch.cat(columns, 1).div_(self.temperature), rows

    def loss(
        self, users: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean cross-entropy of the true next item (column 0) over the positions."""
        logits, _ = self.logits(users, targets, table, generator)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))

    def score_catalogue(self, users: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, R) scores of every table row; row 0 (unknown ids) is -inf."""
        scores = self.normalise(users) @ self.normalise(table).T
        scores[:, 0] = -torch.inf
        return scores


class NextItemRetrieval:
    """The next-item contract shared by the causal sequence encoders (HSTU, SASRec, GRU4Rec).

    A model mixing this in holds ``items`` (``SequenceEmbeddings``) and ``head``
    (``SampledSoftmax``) and defines ``encode(batch, keep, lengths) -> (N', d)``: the outputs
    of the values kept by the boolean ``keep`` (None: all), read as sequences of ``lengths``.
    Training: every position but each user's last predicts the next event (only those whose next
    event ``batch.target_mask`` marks, when it is set); scoring: the last position's output is the
    user vector.
    """

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.items.rows(ids)

    def send_sparse_gradients(self) -> list[nn.Parameter]:
        """Let the item table's lookups and the head's gather send the table row-sparse gradients
        (``SendsSparseGradients``); returns the table, or nothing when the table is not a plain
        parameter (Res-embedding's is computed)."""
        if not isinstance(self.items, SequenceEmbeddings):
            return []
        self.head.sparse_gradients = True
        return self.items.send_sparse_gradients()

    def loss(self, batch) -> torch.Tensor:
        is_input, is_target, lengths = next_item_split(batch.lengths)
        users = self.encode(batch, is_input, lengths)  # position i predicts event i + 1
        target_ids = batch.item_ids.values()[is_target]
        if batch.target_mask is not None:  # only some values are predicted (a stream's new events)
            predicted = batch.target_mask[is_target]
            users, target_ids = users[predicted], target_ids[predicted]
        return self.head.loss(users, self.items.rows(target_ids), self.items.weight)

    def loss_terms(self, batch) -> int:
        """Positions ``loss`` averages over: every event but each user's first (of those, the ones
        ``batch.target_mask`` marks, when it is set)."""
        if batch.target_mask is not None:
            return int(batch.target_mask[next_item_split(batch.lengths)[1]].sum())
        return int((batch.lengths - 1).clamp(min=0).sum())

    def user_vectors(self, batch) -> torch.Tensor:
        return self.encode(batch, None, batch.lengths)[last_index(batch.lengths)]  # (B, d)

    def score_catalogue(self, batch) -> torch.Tensor:
        return self.head.score_catalogue(self.user_vectors(batch), self.items.weight)
