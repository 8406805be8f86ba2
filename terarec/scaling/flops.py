"""FLOPs per example of a CTR model's dense part, from torch's FLOP counter.

What is counted: the matrix products of one forward pass (``mm``, ``addmm``, ``bmm``,
``matmul`` and the convolutions), 2 FLOPs per multiply-add, as
``torch.utils.flop_counter.FlopCounterMode`` counts them. Elementwise work (activations,
LayerNorm, residual sums, bias adds) is not counted; it is small beside the products.

What is excluded: the embedding lookup. FLOPs here are the *dense* part's, the part a
scaling study grows; the pooled lookup (``sparse_arch``) is a gather whose cost is memory
traffic, not arithmetic, and it is the same for every model of a sweep. Anything the counter
attributes to a module named ``sparse_arch`` is subtracted.

Training costs about 3x the forward: the backward computes the gradients of both the
activations and the weights, each about one forward's worth of products (``TRAIN_FACTOR``).

Example:
    >>> from terarec.layers.mlp import MLP
    >>> forward_flops(MLP(8, [16], out_features=1), torch.zeros(4, 8))  # per example
    288.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FACTOR = 3.0
SPARSE_MODULE = "sparse_arch"


def _batch_size(inputs: tuple[Any, ...]) -> int:
    first = inputs[0]
    return len(first) if hasattr(first, "__len__") else int(first.shape[0])


@torch.no_grad()
def forward_flops(model: nn.Module, *inputs: Any) -> float:
    """Forward FLOPs per example of ``model(*inputs)``, the ``sparse_arch`` lookup excluded.

    Args:
        model: any module; its ``sparse_arch`` child (if any) is not counted.
        inputs: one batch; the first input's length (or first dimension) is the batch size.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    for name, counts in counter.get_flop_counts().items():
        # Names are module paths like "Wukong.sparse_arch"; count only the outermost match.
        parts = name.split(".")
        if parts[-1] == SPARSE_MODULE and SPARSE_MODULE not in parts[:-1]:
            total -= sum(counts.values())
    return float(total) / _batch_size(inputs)


def dense_parameters(model: nn.Module) -> int:
    """Parameters of the model outside its embedding tables (``sparse_arch``)."""
    sparse = getattr(model, SPARSE_MODULE, None)
    skip = {id(p) for p in sparse.parameters()} if isinstance(sparse, nn.Module) else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


@dataclass
class ModelCost:
    """What one model size costs per example.

    Args:
        forward_flops: dense forward FLOPs per example.
        dense_parameters: parameters outside the embedding tables.
    """

    forward_flops: float
    dense_parameters: int

    @property
    def train_flops(self) -> float:
        """Training FLOPs per example, ~3x the forward."""
        return TRAIN_FACTOR * self.forward_flops

    @property
    def gflops(self) -> float:
        """Forward GFLOPs per example."""
        return self.forward_flops / 1e9


def ctr_model_cost(config, batch_size: int = 8) -> ModelCost:
    """Cost of ``config``'s CTR model, built on stand-in vocabularies (no pass over the data).

    The dense part's FLOPs do not depend on vocabulary sizes or on how tables are stored, so
    every sparse key gets a two-row plain table and the batch holds unknown ids; only the
    dataset's column roles are read.

    Args:
        config: an ExperimentConfig with ``task: ctr``.
        batch_size: rows of the stand-in batch.
    """
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from terarec.config import EmbeddingConfig
    from terarec.data.batches import CTRBatch
    from terarec.data.schema import DatasetMeta
    from terarec.embedding.exact_vocabulary import ExactVocabulary
    from terarec.models.inputs import ModelInputs
    from terarec.train.setup import feature_spec
    from terarec.train.tasks import build_model

    if config.task != "ctr":
        raise ValueError(f"ctr_model_cost: expected a ctr task, got {config.task!r}")
    spec = feature_spec(config, DatasetMeta.load(config.data.path))
    keys = spec.sparse_keys
    inputs = ModelInputs(
        vocabularies={key: ExactVocabulary(np.array([1], dtype=np.int64)) for key in keys},
        num_dense=len(spec.dense), labels=spec.labels, embedding=EmbeddingConfig(),
        learning_rate=config.train.learning_rate,
    )
    model = build_model(config, inputs)
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.zeros(batch_size * len(keys), dtype=torch.int64),
        lengths=torch.ones(batch_size * len(keys), dtype=torch.int64),
    )
    batch = CTRBatch(sparse, torch.zeros(batch_size, len(spec.dense)), torch.zeros(batch_size, len(spec.labels)),
                     torch.full((batch_size,), -1, dtype=torch.int64))
    return ModelCost(forward_flops(model, batch), dense_parameters(model))
