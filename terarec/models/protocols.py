"""What a model (or one of its modules) may offer the trainer beyond ``forward``, as Protocols.

The trainer and the tasks ask ``isinstance(model, HasLoss)`` rather than probing attribute
names one by one, so what a model can do is written in one place and checked by type
checkers. Every protocol is ``runtime_checkable``: a model offers a hook by defining the
method, with no base class to inherit.

Example:
    >>> import torch
    >>> class Counts(torch.nn.Module):
    ...     def fit_statistics(self, batches): pass
    >>> isinstance(Counts(), FitsStatistics), isinstance(Counts(), HasLoss)
    (True, False)
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import torch


@runtime_checkable
class HasLoss(Protocol):
    """A model that computes its own training loss from a batch (sequence models, DIEN's
    auxiliary loss, HSTU ranking's multi-task loss); others are trained by the task's default."""

    def loss(self, batch: Any) -> torch.Tensor: ...


@runtime_checkable
class CountsLossTerms(Protocol):
    """A model whose loss is a mean over something other than the batch's examples (a sequence
    model's predicted positions): a distributed run weighs each process's mean by its count, so
    N processes average the global batch as one process does. Others count ``len(batch)``."""

    def loss_terms(self, batch: Any) -> int: ...


@runtime_checkable
class DrawsNegatives(Protocol):
    """A module that samples negatives; the trainer seeds its draws each step from the run's
    seed and the global step, identically on every process."""

    def seed_negatives(self, seed: int, step: int) -> None: ...


@runtime_checkable
class FitsStatistics(Protocol):
    """A model without trainable parameters: it is fitted by one pass over the training batches."""

    def fit_statistics(self, batches: Iterable[Any]) -> None: ...


@runtime_checkable
class ScoresCatalogue(Protocol):
    """A retrieval model: scores every catalogue row for each user of a batch."""

    def score_catalogue(self, batch: Any) -> torch.Tensor: ...

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ScoresCandidates(Protocol):
    """A ranking model that scores many candidates of one user over a cached history (M-FALCON)."""

    def score_candidates(self, history: Any, item_ids: torch.Tensor, **options: Any) -> torch.Tensor: ...


@runtime_checkable
class MultiTask(Protocol):
    """A ranking model with one output per task: ``is_regression[i]`` says whether output i is a
    regression (log1p value) or a binary logit."""

    is_regression: torch.Tensor


@runtime_checkable
class FusedTables(Protocol):
    """A module whose tables are updated inside backward by their own sparse optimizer (the
    embedding engine): their weights are not ``nn.Parameter``s, and the trainer moves their
    learning rate with the dense one."""

    def fused_parameters(self) -> list[torch.Tensor]: ...

    def set_learning_rate(self, learning_rate: float) -> None: ...


@runtime_checkable
class RegularizedTables(Protocol):
    """A module whose table weights the trainer's ``embedding.regularization`` penalises."""

    def table_weights(self) -> list[torch.Tensor]: ...


@runtime_checkable
class PenalisedTables(Protocol):
    """A table with its own penalty added to the training loss each step (Res-embedding's
    lambda * ||r||^2 over the residual rows, ``terarec.embedding.residual.ResEmbedding``)."""

    def regularization(self) -> torch.Tensor: ...


@runtime_checkable
class SendsSparseGradients(Protocol):
    """A model whose tables can receive row-sparse gradients from their lookups: a table-sized
    dense gradient per lookup (a zero fill, a scatter and a sum of them each step) becomes the rows
    looked up. ``send_sparse_gradients()`` switches the lookups over and returns the tables; the
    trainer keeps their ``.grad`` dense (zeroed in place each step, the sparse rows added into it),
    so Adam sees the same gradient as before."""

    def send_sparse_gradients(self) -> list[torch.nn.Parameter]: ...


@runtime_checkable
class EndsEpochs(Protocol):
    """A module with work to do after each training epoch (1-based ``epoch``), such as
    re-clustering Res-embedding's items on a schedule."""

    def end_epoch(self, epoch: int) -> None: ...


def fused_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every table trained inside backward, over all the model's modules."""
    return [tensor for module in model.modules() if isinstance(module, FusedTables)
            for tensor in module.fused_parameters()]


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters, the fused tables included."""
    return sum(p.numel() for p in model.parameters()) + sum(t.numel() for t in fused_tensors(model))
