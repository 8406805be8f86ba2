"""Builds a model's pooled embedding layer from the run's EmbeddingConfig.

``adam`` keeps the tables as ordinary parameters of the dense optimizer (``PooledEmbeddings``);
``rowwise_adagrad`` / ``sgd`` (or a non-fp32 dtype) use the engine, whose optimizer runs
inside backward (``FusedPooledEmbeddings``); ``embedding.dims`` / ``bands`` / ``residual``
size the tables per feature (``SizedPooledEmbeddings``). Models call ``pooled_embeddings`` (or
``sequence_embeddings``) and never name a table class, so the choice is the config's.

Under ``torch.distributed`` (``terarec train --nproc N``, docs/distributed.md) the tables are a
TorchRec ``EmbeddingBagCollection`` (``PooledEmbeddings``) whose parameters carry their fused
optimizer (``apply_optimizer_in_backward``): TorchRec's planner shards it, and the sharded kernel
runs the same FBGEMM row-wise Adagrad / SGD the engine runs in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

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
    if torch.distributed.is_initialized():
        return shardable_pooled_embeddings(inputs, embedding_dim)
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


def check_shardable(config: EmbeddingConfig) -> None:
    """Raise ValueError naming the ``embedding.`` field that sharded tables (``--nproc > 1``) cannot
    take; the launcher calls it before starting any process."""
    if config.sized:
        raise ValueError(
            "embedding.dims / bands / residual: sized tables are not supported with sharded tables (--nproc > 1) "
            "yet: train them in one process, or drop those keys"
        )
    if config.optimizer not in ("rowwise_adagrad", "sgd") or config.weight_dtype != "fp32":
        raise ValueError(
            f"embedding.optimizer={config.optimizer}, weight_dtype={config.weight_dtype}: sharded tables "
            "(--nproc > 1) train with a fused optimizer on fp32 rows; set embedding.optimizer=rowwise_adagrad "
            "(or sgd) and embedding.weight_dtype=fp32 (FBGEMM's CPU kernels have no Adam)"
        )
    if config.vocabulary == "managed":
        raise ValueError(
            "embedding.vocabulary=managed is not supported with sharded tables (--nproc > 1) yet: "
            "train it in one process (--nproc 1), or use embedding.vocabulary=exact"
        )
    if config.regularization:
        raise ValueError(
            f"embedding.regularization={config.regularization}: sharded tables (--nproc > 1) have no weight decay "
            "(FBGEMM's CPU kernels ignore it); set embedding.regularization=0"
        )


def shardable_pooled_embeddings(inputs: TableInputs, embedding_dim: int) -> PooledEmbeddings:
    """The tables as a TorchRec collection for ``DistributedModelParallel`` to shard, each parameter
    tagged with the fused optimizer its sharded kernel runs (``embedding.optimizer``).

    With ``world`` processes a table's gradient is the mean of the processes' gradients (TorchRec
    divides by ``world`` in the all-to-all backward, ``torchrec.distributed.comm_ops``'s gradient
    division, on by default), as DDP's is for the dense part: with each process's loss weighed by
    its share of the global batch (``terarec.train.distributed.loss_shares``), the one-process
    gradient, so both optimizers keep their one-process learning rate.
    """
    config = inputs.embedding
    check_shardable(config)
    embeddings = PooledEmbeddings(inputs.vocabularies, embedding_dim)
    learning_rate = config.learning_rate or inputs.learning_rate
    if config.optimizer == "rowwise_adagrad":
        apply_optimizer_in_backward(RowWiseAdagrad, embeddings.tables.parameters(), {"lr": learning_rate, "eps": 1e-8})
    else:
        apply_optimizer_in_backward(torch.optim.SGD, embeddings.tables.parameters(), {"lr": learning_rate})
    return embeddings


def engine_state_dict(state: dict[str, torch.Tensor], config: EmbeddingConfig) -> dict[str, torch.Tensor]:
    """A model state dict with ``shardable_pooled_embeddings`` tables (``<m>.tables.embedding_bags.t_<f>.weight``)
    in the layout the same model has in one process (``<m>.tables.<f>.weight``, ``FusedPooledEmbeddings``),
    with a zero optimizer state (``<m>.tables.<f>.momentum``): weights to evaluate or serve, not to resume.

    Example:
        >>> state = {"sparse_arch.tables.embedding_bags.t_item.weight": torch.ones(3, 4)}
        >>> sorted(engine_state_dict(state, EmbeddingConfig(optimizer="rowwise_adagrad")))
        ['sparse_arch.tables.item.momentum', 'sparse_arch.tables.item.weight']
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, found, tail = key.partition(".tables.embedding_bags.t_")
        if not found or not tail.endswith(".weight"):
            converted[key] = value
            continue
        table = f"{head}.tables.{tail.removesuffix('.weight')}"
        converted[f"{table}.weight"] = value
        if config.optimizer == "rowwise_adagrad":
            converted[f"{table}.momentum"] = torch.zeros(value.shape[0])
    return converted
