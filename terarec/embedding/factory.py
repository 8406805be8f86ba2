"""Builds a model's pooled embedding layer from the run's EmbeddingConfig.

``adam`` keeps the tables as ordinary parameters of the dense optimizer (``PooledEmbeddings``);
``rowwise_adagrad`` / ``sgd`` (or a non-fp32 dtype) use the engine, whose optimizer runs
inside backward (``FusedPooledEmbeddings``). Models call ``pooled_embeddings`` and never
name a table class, so the choice is the config's.
"""

from __future__ import annotations

from torch import nn

from terarec.embedding.collection import PooledEmbeddings
from terarec.embedding.engine import EmbeddingEngineConfig, FusedPooledEmbeddings
from terarec.models.inputs import ModelInputs


def pooled_embeddings(inputs: ModelInputs, embedding_dim: int) -> nn.Module:
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
