"""Builds what a run needs from its config: datasets, vocabularies, model, loaders."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from terarec.config import ExperimentConfig, check_model_options
from terarec.data import schema
from terarec.data.batches import CTRDataset, FeatureSpec, SequenceDataset, SequenceSpec, ctr_batch_from_table
from terarec.data.errors import DataError
from terarec.data.schema import DatasetMeta
from terarec.features.crosses import crosses_from_config
from terarec.features.hashing import hash_array
from terarec.features.vocabulary import ExactVocabulary, sorted_union
from terarec.models import model_class
from terarec.models.inputs import ModelInputs
from terarec.runtime import configure_threads


def seed_everything(seed: int) -> None:
    """Fix Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int) -> int:
    """Use ``threads`` threads (0 = the CPUs this process may use: affinity and cgroup quota)."""
    return configure_threads(threads)


def feature_spec(config: ExperimentConfig, meta: DatasetMeta) -> FeatureSpec:
    """The CTR columns a run uses: the config's lists, else the dataset's (first label only)."""
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
    seen: dict[str, np.ndarray] = {name: np.empty(0, np.int64) for name in spec.sparse_keys}
    key_spec = FeatureSpec(sparse=spec.sparse, crosses=spec.crosses)
    for part in meta.parts:
        file = pq.ParquetFile(folder / part)
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=key_spec.input_columns + [schema.SPLIT])
            table = table.filter(pc.equal(table.column(schema.SPLIT), schema.SPLIT_CODES["train"]))
            features = ctr_batch_from_table(table, key_spec).sparse_features
            for name in spec.sparse_keys:
                seen[name] = sorted_union(seen[name], features[name].values().numpy())
    return {name: ExactVocabulary(ids) for name, ids in seen.items()}


def managed_vocabularies(
    config: ExperimentConfig,
    folder: Path,
    meta: DatasetMeta,
    spec: FeatureSpec,
    saved: dict[str, torch.Tensor] | None = None,
) -> dict[str, nn.Module]:
    """Bounded managed vocabularies of raw 64-bit ids, one per sparse key.

    Capacity: ``embedding.capacity``, or 1.25 x the key's distinct training ids (one counting
    pass); a checkpoint's saved capacities (``saved``) win, so its state loads into them.
    """
    from terarec.embedding.vocabulary import ManagedVocabulary

    options = config.embedding
    if saved is not None:
        capacities = {name: int(saved[name][0]) for name in spec.sparse_keys}
    elif options.capacity > 0:
        capacities = {name: options.capacity for name in spec.sparse_keys}
    else:
        exact = ctr_vocabularies(folder, meta, spec)
        capacities = {name: max(16, math.ceil(1.25 * (vocab.num_rows - 1))) for name, vocab in exact.items()}
    return {
        name: ManagedVocabulary(
            capacities[name],
            min_count=options.min_count,
            evict=options.eviction,
            ttl_seconds=options.ttl_days * 86400 if options.eviction == "ttl" else None,
            seed=config.train.seed,
        )
        for name in spec.sparse_keys
    }


def vocabulary_record(vocabularies: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps to rebuild the vocabularies: exact ids, or a managed table's capacity
    (its mapping itself is in the model's state dict)."""
    return {
        name: vocab.ids if isinstance(vocab, ExactVocabulary) else torch.tensor([vocab.capacity])
        for name, vocab in vocabularies.items()
    }


def item_catalogue(folder: Path, meta: DatasetMeta) -> ExactVocabulary:
    """The item vocabulary of a sequential task: every item of the dataset (the full catalogue)."""
    ids = np.empty(0, np.int64)
    for part in meta.parts:
        column = pq.read_table(folder / part, columns=[schema.ITEM_ID]).column(0)
        ids = sorted_union(ids, hash_array(pc.unique(column), schema.ITEM_ID))
    return ExactVocabulary(ids)


@dataclass
class Task:
    """A run's data and model: datasets for each split and the model built for them."""

    config: ExperimentConfig
    meta: DatasetMeta
    inputs: ModelInputs
    model: nn.Module

    def dataset(self, split: str, shuffle: bool = False):
        cfg = self.config
        batch_size = cfg.data.batch_size if split == "train" else cfg.data.eval_batch_size
        if cfg.task == "ctr":
            spec = feature_spec(cfg, self.meta)
            return CTRDataset(cfg.data.path, split, spec, batch_size=batch_size, shuffle=shuffle, seed=cfg.train.seed)
        return SequenceDataset(
            cfg.data.path, split, sequence_spec(cfg), batch_size=batch_size, shuffle=shuffle, seed=cfg.train.seed
        )


def build_model(config: ExperimentConfig, inputs: ModelInputs) -> nn.Module:
    options = check_model_options(config)
    return model_class(config.model["name"])(options, inputs)


def build_task(config: ExperimentConfig, vocabulary_ids: dict[str, torch.Tensor] | None = None) -> Task:
    """Build the task; ``vocabulary_ids`` (from a checkpoint) replaces fitting vocabularies."""
    folder = Path(config.data.path)
    meta = DatasetMeta.load(folder)
    if config.task == "ctr":
        if meta.kind != "ctr" and meta.kind != "events":
            raise DataError(f"unknown dataset kind {meta.kind!r}", path=folder)
        spec = feature_spec(config, meta)
        spec.check(meta)
        if not spec.labels:
            raise DataError("a CTR task needs at least one label column", path=folder)
        if config.embedding.vocabulary == "managed":
            vocabularies = managed_vocabularies(config, folder, meta, spec, vocabulary_ids)
        elif vocabulary_ids is None:
            vocabularies = ctr_vocabularies(folder, meta, spec)
        else:
            vocabularies = {name: ExactVocabulary(vocabulary_ids[name].numpy()) for name in spec.sparse_keys}
        inputs = ModelInputs(vocabularies=vocabularies, num_dense=len(spec.dense), labels=spec.labels,
                             embedding=config.embedding, learning_rate=config.train.learning_rate)
    else:
        sequence_spec(config).check(meta)
        if vocabulary_ids is None:
            catalogue = item_catalogue(folder, meta)
        else:
            catalogue = ExactVocabulary(vocabulary_ids[schema.ITEM_ID].numpy())
        inputs = ModelInputs(vocabularies={schema.ITEM_ID: catalogue}, embedding=config.embedding,
                             learning_rate=config.train.learning_rate)
    return Task(config=config, meta=meta, inputs=inputs, model=build_model(config, inputs))
