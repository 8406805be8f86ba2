"""Task kinds, one registry: what a run trains on and how it is judged (ctr, sequential, ranking).

A task kind owns everything that differs between kinds of run, so the training loop never asks
which kind it runs:

* its **inputs**: the columns it reads (resolved from the dataset once, then written into the
  run's config), the vocabularies it fits on the training split, and the record of both that a
  checkpoint keeps, so a run is rebuilt later with no dataset at hand (``Task.from_record``);
* its **datasets** for each split;
* its **default loss** (a model's own ``loss`` wins, see ``terarec.models.protocols.HasLoss``);
* its **evaluation** and the validation metric that picks the best epoch by default
  (``train.monitor`` overrides it).

Kinds are registered by name in ``TASKS``, like models in ``terarec.models.MODELS``.

Example:
    >>> sorted(TASKS)
    ['ctr', 'ranking', 'sequential']
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from terarec.config import ConfigError, ExperimentConfig
from terarec.data import schema
from terarec.data.batches import CTRBatch, make_loader, process_slice
from terarec.data.ctr_dataset import CTRDataset, ctr_batch_from_table
from terarec.data.sequence_dataset import SequenceDataset
from terarec.data.errors import DataError
from terarec.data.ranking import RankingDataset
from terarec.data.schema import DatasetMeta
from terarec.data.vocabularies import vocabulary_ids
from terarec.eval.arrays import Gather
from terarec.eval.evaluate import evaluate_ctr, evaluate_ranking, evaluate_ranking_tasks
from terarec.features.hashing import hash_array
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.models import check_model_options, model_class
from terarec.models.inputs import ModelInputs
from terarec.models.protocols import HasLoss, MultiTask
from terarec.train.sequence_stream import SequenceStream, check_streaming, stream_columns
from terarec.train.setup import (
    ctr_clusters,
    ctr_row_counts,
    ctr_vocabularies,
    feature_spec,
    managed_vocabularies,
    managed_vocabulary,
    sequence_clusters,
    sequence_spec,
)

# Metrics where lower is better; every other monitored metric is maximised.
LOWER_IS_BETTER = ("logloss", "rmse", "loss")


def build_model(config: ExperimentConfig, inputs: ModelInputs) -> nn.Module:
    """The config's model, built for ``inputs``."""
    options = check_model_options(config)
    return model_class(config.model["name"])(options, inputs)


class Task(ABC):
    """A run's task: its config (columns resolved), model inputs, model and input record.

    Build one with ``build_task`` (fits on the data) or ``Task.from_record`` (from a checkpoint).
    """

    kind: ClassVar[str]

    def __init__(self, config: ExperimentConfig, inputs: ModelInputs, record: dict[str, Any]) -> None:
        self.config = config
        self.inputs = inputs
        self.record = record
        self.model = build_model(config, inputs)
        # A distributed run (terarec.train.distributed) sets both: evaluation batches stepped in
        # lockstep over the processes, and the all-gather that joins their predictions.
        self.eval_batches: Callable[[Iterable], Iterable] = lambda batches: batches
        self.gather: Gather | None = None

    # ---- inputs

    @classmethod
    def fit_inputs(cls, config: ExperimentConfig) -> tuple[ExperimentConfig, dict[str, Any]]:
        """Read the dataset once: the config with its columns resolved, and the input record
        (vocabulary ids and whatever else rebuilds the inputs), all tensors, numbers and lists."""
        folder = Path(config.data.path)
        return cls.fit(config, folder, DatasetMeta.load(folder))

    @classmethod
    @abstractmethod
    def fit(cls, config: ExperimentConfig, folder: Path, meta: DatasetMeta) -> tuple[ExperimentConfig, dict[str, Any]]:
        """``fit_inputs`` on the dataset at ``folder`` described by ``meta``."""

    @classmethod
    @abstractmethod
    def inputs_from_record(cls, config: ExperimentConfig, record: dict[str, Any]) -> ModelInputs:
        """The model inputs a record describes; reads no data."""

    @classmethod
    def from_record(cls, config: ExperimentConfig, record: dict[str, Any]) -> "Task":
        return cls(config, cls.inputs_from_record(config, record), record)

    # ---- data, loss, evaluation

    @property
    def folder(self) -> Path:
        return Path(self.config.data.path)

    def global_batch_size(self, split: str) -> int:
        """Rows (or users) per batch of all processes together: the config's batch size of ``split``."""
        return self.config.data.batch_size if split == "train" else self.config.data.eval_batch_size

    def batch_size(self, split: str) -> int:
        """Rows (or users) per batch of this process: the config's batch sizes are global, shared
        by the processes of a distributed run."""
        return max(1, self.global_batch_size(split) // process_slice()[1])

    @abstractmethod
    def dataset(self, split: str, shuffle: bool = False) -> IterableDataset:
        """Batches of one split."""

    def loader(self, split: str, shuffle: bool = False):
        return make_loader(self.dataset(split, shuffle), self.config.data.num_workers)

    def check(self) -> None:
        """Refuse, before any training, data the task cannot evaluate (a clear error)."""

    def loss(self, batch: Any) -> torch.Tensor:
        """The training loss of a batch: the model's own ``loss`` when it has one."""
        if isinstance(self.model, HasLoss):
            return self.model.loss(batch)
        return self.default_loss(batch)

    def default_loss(self, batch: Any) -> torch.Tensor:
        raise TypeError(f"model '{self.config.model['name']}' has no loss(batch) for a {self.kind} task")

    @abstractmethod
    def evaluate(self, split: str, progress: bool = False) -> dict[str, float]:
        """Metrics of the model on one split."""

    # ---- streaming (terarec.stream): chunks of rows instead of a prepared dataset

    @classmethod
    def streaming_record(cls, config: ExperimentConfig) -> dict[str, Any]:
        """The input record of a streaming run, from its config alone (no data is read up front)."""
        raise _not_streamed(cls.kind)

    @classmethod
    def stream_columns(cls, config: ExperimentConfig) -> list[str]:
        """The columns a streaming run reads from each chunk."""
        raise _not_streamed(cls.kind)

    def stream_evaluate(self, table: pa.Table) -> dict[str, float]:
        """Progressive validation: metrics of the model on a chunk's rows, before it is trained on them."""
        raise _not_streamed(self.kind)

    def stream_batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[tuple[int, Any]]:
        """(latest event time, training batch) over a chunk's rows, shuffled by ``rng`` (None: in order)."""
        raise _not_streamed(self.kind)

    def before_stream_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> Any:
        """The batch a streaming step trains on (a task may admit ids or mask targets first)."""
        return batch

    def after_stream_chunk(self, table: pa.Table) -> dict[str, int]:
        """Carry what the task remembers across chunks past this one (trained on or not); returns counts
        for the chunk's log row (none: an empty dict)."""
        return {}

    def stream_state(self) -> dict[str, Any]:
        """What a streaming run's commit keeps of the task beyond the model (tensors, numbers, dicts of them)."""
        return {}

    def load_stream_state(self, state: dict[str, Any]) -> None:
        """Restore ``stream_state``'s answer."""

    @abstractmethod
    def default_monitor(self) -> str:
        """The validation metric that picks the best epoch when ``train.monitor`` is empty."""

    def monitor(self) -> tuple[str, bool]:
        """(metric name, higher is better) of ``train.monitor`` or the task's default."""
        name = self.config.train.monitor or self.default_monitor()
        name = name.removeprefix("valid.")
        return name, not any(word in name for word in LOWER_IS_BETTER)


def _not_streamed(kind: str) -> ConfigError:
    """The error of a streaming hook that a task kind does not implement."""
    return ConfigError(f"task: terarec stream trains ctr and sequential tasks; '{kind}' is not streamed yet")


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays.items()}


def _sizing_inputs(record: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The row counts and clusters a record keeps (``embedding.bands`` / ``embedding.residual``)."""
    return {part: {name: tensor.numpy() for name, tensor in record.get(part, {}).items()}
            for part in ("row_counts", "clusters")}


def _check_sized_features(config: ExperimentConfig, features: list[str]) -> None:
    """Every feature the ``embedding:`` sizing names is one of the run's."""
    options = config.embedding
    named = {"embedding.dims": list(options.dims), "embedding.bands.widths": list(options.bands.widths),
             "embedding.bands.features": options.bands.features, "embedding.residual.features": options.residual.features}
    for field_name, names in named.items():
        unknown = [name for name in names if name not in features]
        if unknown:
            raise ConfigError(f"{field_name}: {unknown} are not sparse features of this run (it has: {features})")


def _check_split(split: str) -> None:
    if split not in schema.SPLIT_CODES:
        raise ValueError(f"split must be one of {list(schema.SPLIT_CODES)}, got {split!r}")


class CTRTask(Task):
    """One row per impression, binary labels; AUC / LogLoss / gAUC per label."""

    kind = "ctr"

    @classmethod
    def fit(cls, config: ExperimentConfig, folder: Path, meta: DatasetMeta) -> tuple[ExperimentConfig, dict[str, Any]]:
        if meta.kind not in ("ctr", "events"):
            raise DataError(f"unknown dataset kind {meta.kind!r}", path=folder)
        spec = feature_spec(config, meta)
        spec.check(meta)
        if not spec.labels:
            raise DataError("a CTR task needs at least one label column", path=folder)
        config = copy.deepcopy(config)
        config.data.sparse, config.data.dense, config.data.labels = list(spec.sparse), list(spec.dense), list(spec.labels)
        _check_sized_features(config, spec.sparse_keys)
        if config.embedding.vocabulary == "managed":
            if config.embedding.bands.num_bands > 1 or config.embedding.bands.widths or config.embedding.residual.features:
                raise ConfigError("embedding.bands / embedding.residual: frequency bands and clusters are fitted per "
                                  "row of an exact vocabulary; with embedding.vocabulary=managed use embedding.dims")
            vocabularies = managed_vocabularies(config, folder, meta, spec)
            ids = {name: torch.tensor([vocab.capacity]) for name, vocab in vocabularies.items()}
            return config, {"vocabularies": ids}
        exact = ctr_vocabularies(folder, meta, spec)
        record: dict[str, Any] = {"vocabularies": {name: vocab.ids for name, vocab in exact.items()}}
        banded = [name for name, vocab in exact.items() if config.embedding.bands.banded(name, vocab.num_rows)]
        if banded:
            record["row_counts"] = _tensors(ctr_row_counts(folder, meta, spec, exact, banded))
        if config.embedding.residual.features:
            record["clusters"] = _tensors(ctr_clusters(config, folder, meta, spec, exact))
        return config, record

    @classmethod
    def inputs_from_record(cls, config: ExperimentConfig, record: dict[str, Any]) -> ModelInputs:
        spec = feature_spec(config, None)
        saved = record["vocabularies"]
        missing = [name for name in spec.sparse_keys if name not in saved]
        if missing:
            raise ValueError(f"the checkpoint has no vocabulary for {missing} (has {sorted(saved)})")
        if config.embedding.vocabulary == "managed":
            vocabularies = managed_vocabularies(config, None, None, spec, saved)
        else:
            vocabularies = {name: ExactVocabulary(saved[name].numpy()) for name in spec.sparse_keys}
        return ModelInputs(vocabularies=vocabularies, num_dense=len(spec.dense), labels=spec.labels,
                           embedding=config.embedding, learning_rate=config.train.learning_rate,
                           **_sizing_inputs(record))

    def dataset(self, split: str, shuffle: bool = False) -> CTRDataset:
        return CTRDataset(self.folder, split, feature_spec(self.config, None), batch_size=self.batch_size(split),
                          shuffle=shuffle, seed=self.config.train.seed)

    def default_loss(self, batch: Any) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.model(batch), batch.labels)

    def evaluate(self, split: str, progress: bool = False) -> dict[str, float]:
        _check_split(split)
        return evaluate_ctr(self.model, self.eval_batches(self.loader(split)), self.inputs.labels, progress=progress,
                            gather=self.gather)

    @classmethod
    def streaming_record(cls, config: ExperimentConfig) -> dict[str, Any]:
        """Managed vocabularies of ``embedding.capacity`` rows for each sparse key: ids are admitted as
        they stream in, so no pass over the data comes first."""
        if config.embedding.vocabulary != "managed" or config.embedding.capacity <= 0:
            raise ConfigError("embedding: a streaming ctr run needs vocabulary: managed and a capacity > 0 "
                              f"(got vocabulary: {config.embedding.vocabulary}, capacity: {config.embedding.capacity})")
        missing = [name for name in ("sparse", "labels") if not getattr(config.data, name)]
        if missing:
            raise ConfigError(f"data.{missing[0]}: a streaming run lists its columns (there is no dataset.yaml "
                              "to read them from)")
        if config.data.dense is None:
            config.data.dense = []
        spec = feature_spec(config, None)
        return {"vocabularies": {name: torch.tensor([config.embedding.capacity]) for name in spec.sparse_keys}}

    @classmethod
    def stream_columns(cls, config: ExperimentConfig) -> list[str]:
        return list(dict.fromkeys([*config.data.sparse, *(config.data.dense or []), *config.data.labels,
                                   config.stream.time_column]))

    def batch_from_table(self, table: pa.Table) -> CTRBatch:
        """One batch of a chunk's rows."""
        return ctr_batch_from_table(table, feature_spec(self.config, None))

    def stream_evaluate(self, table: pa.Table) -> dict[str, float]:
        size = self.config.data.eval_batch_size
        batches = (self.batch_from_table(table.slice(start, size)) for start in range(0, table.num_rows, size))
        return evaluate_ctr(self.model, batches, self.inputs.labels)

    def stream_batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[tuple[int, CTRBatch]]:
        order = None if rng is None else rng.permutation(table.num_rows)
        size, time_column = self.config.data.batch_size, self.config.stream.time_column
        for start in range(0, table.num_rows, size):
            rows = table.slice(start, size) if order is None else table.take(order[start:start + size])
            yield int(pc.max(rows.column(time_column)).as_py()), self.batch_from_table(rows)

    def default_monitor(self) -> str:
        return "auc" if len(self.inputs.labels) == 1 else "mean_auc"


class SequentialTask(Task):
    """Next-item retrieval over user histories; HR / NDCG / MRR over the full catalogue."""

    kind = "sequential"
    _stream: SequenceStream | None = None

    @classmethod
    def fit(cls, config: ExperimentConfig, folder: Path, meta: DatasetMeta) -> tuple[ExperimentConfig, dict[str, Any]]:
        sequence_spec(config).check(meta)
        # The catalogue is every item of the dataset; its raw ids are kept so answers name real items.
        raw_ids = vocabulary_ids(folder, [schema.ITEM_ID], split=None, meta=meta, ids_of=lambda table: {
            schema.ITEM_ID: table.column(schema.ITEM_ID).to_numpy().astype(np.int64)})[schema.ITEM_ID]
        hashed = hash_array(pa.array(raw_ids), schema.ITEM_ID)
        order = np.argsort(hashed, kind="stable")  # the catalogue's row r + 1 holds hashed[order[r]]
        record = {"item_id": torch.from_numpy(hashed[order]), "item_raw_ids": torch.from_numpy(raw_ids[order])}
        _check_sized_features(config, [schema.ITEM_ID])
        if config.embedding.dims or config.embedding.bands.num_bands > 1 or config.embedding.bands.widths:
            raise ConfigError("embedding.dims / embedding.bands: sequence models keep one d-wide item table "
                              "(scored against the user vector); use embedding.residual")
        if config.embedding.residual.features:
            catalogue = ExactVocabulary(record["item_id"].numpy())
            record["clusters"] = _tensors({schema.ITEM_ID: sequence_clusters(config, folder, meta, catalogue)})
        return config, record

    @classmethod
    def inputs_from_record(cls, config: ExperimentConfig, record: dict[str, Any]) -> ModelInputs:
        if config.embedding.vocabulary == "managed":  # a streaming run's: its capacity
            capacity = int(record["vocabularies"][schema.ITEM_ID][0])
            return ModelInputs(vocabularies={schema.ITEM_ID: managed_vocabulary(config, capacity)},
                               embedding=config.embedding, learning_rate=config.train.learning_rate)
        if schema.ITEM_ID not in record:
            raise ValueError("the checkpoint has no item catalogue ('item_id' vocabulary)")
        catalogue = ExactVocabulary(record[schema.ITEM_ID].numpy())
        return ModelInputs(vocabularies={schema.ITEM_ID: catalogue}, embedding=config.embedding,
                           learning_rate=config.train.learning_rate, **_sizing_inputs(record))

    @property
    def stream(self) -> SequenceStream:
        """The stream-side state and steps (``terarec.train.sequence_stream``), made on first use."""
        if self._stream is None:
            self._stream = SequenceStream(self.config, self.model, self.inputs.vocabularies[schema.ITEM_ID])
        return self._stream

    @classmethod
    def streaming_record(cls, config: ExperimentConfig) -> dict[str, Any]:
        """A managed item vocabulary of ``embedding.capacity`` rows: items are admitted as they stream in."""
        check_streaming(config)
        return {"vocabularies": {schema.ITEM_ID: torch.tensor([config.embedding.capacity])}}

    @classmethod
    def stream_columns(cls, config: ExperimentConfig) -> list[str]:
        return stream_columns(config)

    def stream_evaluate(self, table: pa.Table) -> dict[str, float]:
        return self.stream.evaluate(table)

    def stream_batches(self, table: pa.Table, rng: np.random.Generator | None) -> Iterator[tuple[int, Any]]:
        return self.stream.batches(table, rng)

    def before_stream_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> Any:
        return self.stream.before_step(batch, optimizer)

    def after_stream_chunk(self, table: pa.Table) -> dict[str, int]:
        return self.stream.after_chunk(table)

    def stream_state(self) -> dict[str, Any]:
        return {"histories": self.stream.histories.state_dict()}

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self.stream.histories.load_state_dict(state["histories"])

    def dataset(self, split: str, shuffle: bool = False) -> SequenceDataset:
        # The global batch: each process takes its slice of every batch one process would train on.
        return SequenceDataset(self.folder, split, sequence_spec(self.config), batch_size=self.global_batch_size(split),
                               shuffle=shuffle, seed=self.config.train.seed,
                               bucket_window=self.config.data.bucket_window if split == "train" else 0)

    def evaluate(self, split: str, progress: bool = False) -> dict[str, float]:
        _check_split(split)
        if split == "train":
            raise ValueError("a sequential task is evaluated on the next item after a history: valid or test "
                             "(the train split has no held-out targets)")
        dataset = self.dataset(split)
        evaluated, without_history = self._target_users(dataset)
        options = self.config.eval
        metrics = evaluate_ranking(self.model, self.eval_batches(make_loader(dataset, self.config.data.num_workers)),
                                   options.ks, options.protocol, options.num_sampled, self.config.train.seed,
                                   progress=progress, gather=self.gather)
        # Users first seen in this split have no history to rank from: counted and left out.
        metrics["users_without_history"] = without_history
        return metrics

    def check(self) -> None:
        for split in ("valid", "test"):
            self._target_users(self.dataset(split))

    def _target_users(self, dataset: SequenceDataset) -> tuple[int, int]:
        evaluated, without_history = dataset.target_users()
        if evaluated == 0:
            split = dataset.split
            raise DataError(f"the {split} split has no user with an event before their {split} target "
                            f"({without_history} users have only {split} events), so there is nothing to rank "
                            "from; use a split that keeps each user's earlier events in train (leave_one_out), "
                            "or a time split whose users appear before the cut-off", path=self.folder)
        return evaluated, without_history

    def default_monitor(self) -> str:
        return f"ndcg@{self.config.eval.ks[0]}"


class RankingTask(Task):
    """Multi-task ranking of impressions over each user's interleaved item / action series (HSTU
    ranking): per-task AUC against the impression's labels, RMSE for regression tasks.

    ``data.actions`` are the per-event action columns in the order of the model's tasks;
    ``data.labels`` (default: the actions) the columns each task's output is judged against
    (e.g. a binary ``long_watch`` for a watch-time regression); ``data.max_length`` the events
    per training window. The model's ``item_features`` / ``user_features`` options name the
    categorical columns it reads; the dataset needs ``hist_*`` columns for valid / test
    (``terarec data synth --ranking-history N``, or ``terarec.data.ranking.add_ranking_history``).
    """

    kind = "ranking"

    @staticmethod
    def _feature_columns(config: ExperimentConfig) -> tuple[list[str], list[str]]:
        options = check_model_options(config)
        return list(getattr(options, "item_features", [])), list(getattr(options, "user_features", []))

    @classmethod
    def fit(cls, config: ExperimentConfig, folder: Path, meta: DatasetMeta) -> tuple[ExperimentConfig, dict[str, Any]]:
        if not config.data.actions:
            raise ConfigError("data.actions: a ranking task needs the action columns its tasks predict")
        if config.embedding.sized:
            raise ConfigError("embedding.dims / bands / residual: the ranking task's tables are one width d "
                              "(size them in CTR and sequential runs)")
        config = copy.deepcopy(config)
        if not config.data.labels:
            config.data.labels = list(config.data.actions)
        if len(config.data.labels) != len(config.data.actions):
            raise ConfigError(f"data.labels: expected one label column per action {config.data.actions}, "
                              f"got {config.data.labels}")
        item_features, user_features = cls._feature_columns(config)
        ids = vocabulary_ids(folder, [schema.ITEM_ID, *item_features, *user_features], meta=meta)
        return config, {"vocabularies": {name: torch.from_numpy(values) for name, values in ids.items()}}

    @classmethod
    def inputs_from_record(cls, config: ExperimentConfig, record: dict[str, Any]) -> ModelInputs:
        vocabularies = {name: ExactVocabulary(ids.numpy()) for name, ids in record["vocabularies"].items()}
        return ModelInputs(vocabularies=vocabularies, labels=list(config.data.labels or []),
                           embedding=config.embedding, learning_rate=config.train.learning_rate)

    def dataset(self, split: str, shuffle: bool = False) -> RankingDataset:
        item_features, user_features = self._feature_columns(self.config)
        labels = self.config.data.labels if split != "train" else ()
        return RankingDataset(self.folder, split, self.config.data.actions, item_features, user_features,
                              max_events=self.config.data.max_length, batch_size=self.batch_size(split),
                              shuffle=shuffle, seed=self.config.train.seed, labels=labels)

    def evaluate(self, split: str, progress: bool = False) -> dict[str, float]:
        _check_split(split)
        if split == "train":
            raise ValueError("a ranking task is evaluated on the impressions of valid or test "
                             "(training series have no candidates)")
        if not isinstance(self.model, MultiTask):
            raise TypeError(f"model '{self.config.model['name']}' is not a multi-task ranking model")
        regression = [bool(flag) for flag in self.model.is_regression]
        return evaluate_ranking_tasks(self.model, self.loader(split), self.config.data.labels, regression,
                                      progress=progress)

    def default_monitor(self) -> str:
        return "mean_auc"


TASKS: dict[str, type[Task]] = {cls.kind: cls for cls in (CTRTask, SequentialTask, RankingTask)}


def task_class(kind: str) -> type[Task]:
    if kind not in TASKS:
        raise ConfigError(f"unknown task '{kind}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[kind]


def build_task(config: ExperimentConfig) -> Task:
    """Fit the task's inputs on the config's dataset and build its model."""
    cls = task_class(config.task)
    resolved, record = cls.fit_inputs(config)
    return cls.from_record(resolved, record)
