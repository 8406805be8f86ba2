"""Builds a model's pooled embedding layer from the run's EmbeddingConfig.

``adam`` keeps the tables as ordinary parameters of the dense optimizer (``PooledEmbeddings``);
``rowwise_adagrad`` / ``sgd`` (or a non-fp32 dtype) use the engine, whose optimizer runs
inside backward (``FusedPooledEmbeddings``). Models call ``pooled_embeddings`` and never
name a table class, so the choice is the config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from terarec.config import EmbeddingConfig
from terarec.embedding.collection import PooledEmbeddings
from terarec.embedding.engine import EmbeddingEngineConfig, FusedPooledEmbeddings


class TableInputs(Protocol):
    """What the tables are built from: the part of a model's inputs this layer reads
    (``terarec.models.inputs.ModelInputs`` has it; declared here so embedding never imports models)."""

    vocabularies: Mapping[str, Any]  # feature name -> exact or managed vocabulary
    embedding: EmbeddingConfig
    learning_rate: float


def pooled_embeddings(inputs: TableInputs, embedding_dim: int) -> nn.Module:
    """One sum-pooled table per sparse feature of ``inputs``, stored and trained as configured."""
    config = inputs.embedding
    if config.optimizer == "adam" and config.weight_dtype == "fp32":
        if config.vocabulary == "managed":
            raise ValueError(
                "embedding.vocabulary=managed needs a sparse optimizer that can reset reassigned rows: "
                "set embedding.optimizer to rowwise_adagrad or sgd"
            )
        return PooledEmbeddings(inputs.vocabularies, embedding_dim)
    if embedding_dim % 4:
        raise ValueError(
            f"embedding_dim {embedding_dim}: the fused engine (FBGEMM) needs a multiple of 4; "
            "use embedding.optimizer=adam for other widths"
        )
    engine = EmbeddingEngineConfig(
        optimizer=config.optimizer,
        learning_rate=config.learning_rate or inputs.learning_rate,
        weight_dtype=config.weight_dtype,
        weight_decay=config.regularization,
    )
    return FusedPooledEmbeddings(inputs.vocabularies, embedding_dim, engine)
