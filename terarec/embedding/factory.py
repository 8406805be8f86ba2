"""Builds a model's pooled embedding layer from the run's EmbeddingConfig.

``adam`` keeps the tables as ordinary parameters of the dense optimizer (``PooledEmbeddings``);
``rowwise_adagrad`` / ``sgd`` (or a non-fp32 dtype) use the engine, whose optimizer runs
inside backward (``FusedPooledEmbeddings``); ``embedding.dims`` / ``bands`` / ``residual``
size the tables per feature (``SizedPooledEmbeddings``). Models call ``pooled_embeddings`` (or
``sequence_embeddings``) and never name a table class, so the choice is the config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from terarec.config import EmbeddingConfig
from terarec.embedding.collection import PooledEmbeddings, SequenceEmbeddings
from terarec.embedding.engine import EmbeddingEngineConfig, FusedPooledEmbeddings
from terarec.embedding.residual import ResSequenceEmbeddings
from terarec.embedding.sized import SizedPooledEmbeddings


class TableInputs(Protocol):
    """What the tables are built from: the part of a model's inputs this layer reads
    (``terarec.models.inputs.ModelInputs`` has it; declared here so embedding never imports models)."""

    vocabularies: Mapping[str, Any]  # feature name -> exact or managed vocabulary
    embedding: EmbeddingConfig
    learning_rate: float
    row_counts: Mapping[str, Any]  # feature -> training lookups per row (embedding.bands)
    clusters: Mapping[str, Any]  # feature -> interest cluster per row (embedding.residual)


def pooled_embeddings(inputs: TableInputs, embedding_dim: int) -> nn.Module:
    """One sum-pooled table per sparse feature of ``inputs``, stored, sized and trained as configured.

    With ``embedding.dims`` / ``bands`` / ``residual`` the tables are sized per feature
    (``SizedPooledEmbeddings``); its whole tables of each width are built as below. Banded and
    Res-embedding tables are TorchRec tables trained by the dense optimizer whatever
    ``embedding.optimizer`` says (the engine's kernels take one width per table group).
    """
    config = inputs.embedding
    if config.sized:
        vocabularies = dict(inputs.vocabularies)
        return SizedPooledEmbeddings(vocabularies, embedding_dim, config, _known(inputs.row_counts, vocabularies),
                                     _known(inputs.clusters, vocabularies),
                                     lambda group, width: _whole_tables(inputs, group, width))
    return _whole_tables(inputs, dict(inputs.vocabularies), embedding_dim)


def sequence_embeddings(inputs: TableInputs, embedding_dim: int) -> nn.Module:
    """The item table of a sequence model: ``SequenceEmbeddings``, or its Res-embedding twin when
    ``embedding.residual.features`` names ``item_id`` (penalty over the whole table: sequence models
    score the full ``weight``)."""
    vocabulary = inputs.vocabularies["item_id"]
    options = inputs.embedding.residual
    if "item_id" in options.features:
        return ResSequenceEmbeddings(vocabulary, inputs.clusters["item_id"], embedding_dim, residual_l2=options.l2,
                                     num_clusters=options.num_clusters, penalty_scope="table",
                                     recluster_every=options.recluster_every)
    return SequenceEmbeddings(vocabulary, embedding_dim)


def _known(per_feature: Mapping[str, Any], vocabularies: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in per_feature.items() if name in vocabularies}


def _whole_tables(inputs: TableInputs, vocabularies: dict[str, Any], embedding_dim: int) -> nn.Module:
    """One ``embedding_dim``-wide table per feature of ``vocabularies``: dense-Adam tables or the fused engine."""
    config = inputs.embedding
    if config.optimizer == "adam" and config.weight_dtype == "fp32":
        if config.vocabulary == "managed":
            raise ValueError(
                "embedding.vocabulary=managed needs a sparse optimizer that can reset reassigned rows: "
                "set embedding.optimizer to rowwise_adagrad or sgd"
            )
        return PooledEmbeddings(vocabularies, embedding_dim)
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
    return FusedPooledEmbeddings(vocabularies, embedding_dim, engine)
