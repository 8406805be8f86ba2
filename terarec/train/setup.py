"""What a run sets up before its task: seeds, threads, column specs and vocabularies."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from terarec.config import ExperimentConfig
from terarec.data.ctr_dataset import FeatureSpec, ctr_batch_from_table
from terarec.data.sequence_dataset import SequenceSpec
from terarec.data.schema import DatasetMeta
from terarec.data import schema
from terarec.data.vocabularies import split_tables, user_histories, vocabulary_ids
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.mixed_dim import row_counts
from terarec.embedding.residual import cooccurrence_clusters
from terarec.features.hashing import hash_array
from terarec.features.crosses import crosses_from_config
from terarec.runtime import configure_threads


def seed_everything(seed: int) -> None:
    """Fix Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int) -> int:
    """Use ``threads`` threads (0 = the CPUs this process may use: affinity and cgroup quota)."""
    return configure_threads(threads)


def feature_spec(config: ExperimentConfig, meta: DatasetMeta | None) -> FeatureSpec:
    """The CTR columns a run uses: the config's lists, else the dataset's (first label only).

    ``meta`` may be None once a run has resolved its columns into its config."""
    if meta is None and None in (config.data.sparse, config.data.dense, config.data.labels):
        raise ValueError("feature_spec: the config's sparse / dense / labels must be resolved without a dataset")
    labels = config.data.labels if config.data.labels is not None else meta.labels[:1]
    return FeatureSpec(
        sparse=list(config.data.sparse if config.data.sparse is not None else meta.sparse),
        dense=list(config.data.dense if config.data.dense is not None else meta.dense),
        labels=list(labels),
        dense_transform=config.data.dense_transform,
        crosses=crosses_from_config(config.data.crosses, "data.crosses"),
        user_column=config.data.user_column,
    )


def sequence_spec(config: ExperimentConfig) -> SequenceSpec:
    return SequenceSpec(
        max_length=config.data.max_length, keep_if=config.data.keep_if, actions=list(config.data.actions)
    )


def ctr_vocabularies(folder: Path, meta: DatasetMeta, spec: FeatureSpec) -> dict[str, ExactVocabulary]:
    """Exact vocabularies of every sparse feature over the training split (one streaming pass)."""
    key_spec = FeatureSpec(sparse=spec.sparse, crosses=spec.crosses)

    def ids_of(table):
        features = ctr_batch_from_table(table, key_spec).sparse_features
        return {name: features[name].values().numpy() for name in spec.sparse_keys}

    ids = vocabulary_ids(folder, spec.sparse_keys, columns=key_spec.input_columns, ids_of=ids_of, meta=meta)
    return {key: ExactVocabulary(values) for key, values in ids.items()}


def managed_vocabularies(
    config: ExperimentConfig,
    folder: Path | None,
    meta: DatasetMeta | None,
    spec: FeatureSpec,
    saved: dict[str, torch.Tensor] | None = None,
) -> dict[str, nn.Module]:
    """Bounded managed vocabularies of raw 64-bit ids, one per sparse key.

    Capacity: ``embedding.capacity``, or 1.25 x the key's distinct training ids (one counting
    pass); a checkpoint's saved capacities (``saved``) win, so its state loads into them.
    """
    options = config.embedding
    if saved is not None:
        capacities = {name: int(saved[name][0]) for name in spec.sparse_keys}
    elif options.capacity > 0:
        capacities = {name: options.capacity for name in spec.sparse_keys}
    else:
        exact = ctr_vocabularies(folder, meta, spec)
        capacities = {name: max(16, math.ceil(1.25 * (vocab.num_rows - 1))) for name, vocab in exact.items()}
    return {name: managed_vocabulary(config, capacities[name]) for name in spec.sparse_keys}


def managed_vocabulary(config: ExperimentConfig, capacity: int) -> nn.Module:
    """One bounded managed vocabulary of ``capacity`` rows, admitting and evicting as ``embedding:`` says."""
    from terarec.embedding.vocabulary import ManagedVocabulary

    options = config.embedding
    return ManagedVocabulary(
        capacity,
        min_count=options.min_count,
        evict=options.eviction,
        ttl_seconds=options.ttl_days * 86400 if options.eviction == "ttl" else None,
        seed=config.train.seed,
    )


# ----------------------------------------------------------------------------- table sizing inputs


def ctr_row_counts(
    folder: Path, meta: DatasetMeta, spec: FeatureSpec, vocabularies: dict[str, ExactVocabulary], keys: list[str]
) -> dict[str, np.ndarray]:
    """Training lookups per table row of each of ``keys`` (what frequency bands are cut from)."""
    key_spec = FeatureSpec(sparse=spec.sparse, crosses=spec.crosses)
    counts = {key: np.zeros(vocabularies[key].num_rows, dtype=np.int64) for key in keys}
    for table in split_tables(folder, key_spec.input_columns, "train", meta):
        features = ctr_batch_from_table(table, key_spec).sparse_features
        for key in keys:
            counts[key] += row_counts(vocabularies[key], features[key].values().numpy())
    return counts


def ctr_clusters(
    config: ExperimentConfig, folder: Path, meta: DatasetMeta, spec: FeatureSpec,
    vocabularies: dict[str, ExactVocabulary],
) -> dict[str, np.ndarray]:
    """Interest cluster of every row of each ``embedding.residual.features`` key, from co-occurrence
    of its ids in each user's training rows (``data.user_column``), in row (time) order."""
    options = config.embedding.residual
    key_spec = FeatureSpec(sparse=spec.sparse, crosses=spec.crosses)
    clusters = {}
    for key in options.features:
        def ids_of(table, key=key):
            jagged = ctr_batch_from_table(table, key_spec).sparse_features[key]
            return jagged.values().numpy(), jagged.lengths().numpy()

        _, ids, lengths = user_histories(folder, key, config.data.user_column, ids_of,
                                         columns=key_spec.input_columns, meta=meta)
        rows = vocabularies[key](torch.from_numpy(ids)).numpy()
        clusters[key] = cooccurrence_clusters((rows, lengths), vocabularies[key].num_rows, options.num_clusters,
                                              options.window, config.train.seed)
    return clusters


def sequence_clusters(config: ExperimentConfig, folder: Path, meta: DatasetMeta,
                      catalogue: ExactVocabulary) -> np.ndarray:
    """Interest cluster of every catalogue row, from co-occurrence in the users' training histories."""
    options = config.embedding.residual
    _, ids, lengths = user_histories(
        folder, schema.ITEM_ID, schema.USER_ID,
        lambda table: (hash_array(table.column(schema.ITEM_ID), schema.ITEM_ID), np.ones(table.num_rows, np.int64)),
        columns=[schema.ITEM_ID], meta=meta)
    rows = catalogue(torch.from_numpy(ids)).numpy()
    return cooccurrence_clusters((rows, lengths), catalogue.num_rows, options.num_clusters, options.window,
                                 config.train.seed)
