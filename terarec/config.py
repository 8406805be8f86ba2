"""Typed experiment configs: dataclasses loaded from YAML, with dotted command-line overrides.

An unknown key, in the YAML or in an override, is an error naming the key and the nearest
valid one; a value of the wrong type is an error naming the field and the type expected.

This module is the bottom layer: it imports nothing of terarec. Checks that need the model
registry or the cross specs are in ``terarec.train.experiment.load_config``.

Example:
    >>> cfg = parse_config(None, ["train.epochs=3", "data.batch_size=64"])
    >>> cfg.train.epochs, cfg.data.batch_size
    (3, 64)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config that does not fit its dataclasses; the message names the key."""


@dataclass
class DataConfig:
    """Where batches come from.

    Args:
        path: a prepared dataset folder (``terarec data synth`` / ``terarec data prepare``).
        batch_size: training batch size (rows for CTR, users for sequences).
        eval_batch_size: evaluation batch size.
        num_workers: DataLoader worker processes (0 = build batches in the main process).
        sparse: categorical columns to use (default: all the dataset declares).
        dense: dense columns to use (default: all the dataset declares).
        labels: label columns (default: the dataset's first label).
        dense_transform: ``none`` or ``log1p``.
        max_length: sequence tasks: history length kept.
        keep_if: sequence tasks: only events where this column is > 0 form histories.
        actions: sequence tasks: action columns carried per event.
        bucket_window: sequence tasks: shuffled training users are sorted by history length
            within windows of this many batches and cut into batches of about equal event
            counts, so a batch pads to a length near its own; batch_size is then the
            average number of users per batch (0, the default: no bucketing; 32 made a
            Beauty HSTU epoch 1.56x faster, see BENCHMARKS.md, and is not yet the default because
            its quality is measured on one seed only).
        crosses: CTR tasks: declared feature crosses, each a mapping with ``name``, ``kind``,
            ``columns`` (and ``buckets``, ...) as in ``terarec.features.crosses.CrossSpec``.
        user_column: CTR tasks: the column naming the user, for gAUC.
    """

    path: str = "data/synthetic"
    batch_size: int = 1024
    eval_batch_size: int = 4096
    num_workers: int = 0
    sparse: list[str] | None = None
    dense: list[str] | None = None
    labels: list[str] | None = None
    dense_transform: str = "none"
    max_length: int = 50
    keep_if: str | None = None
    actions: list[str] = field(default_factory=list)
    bucket_window: int = 0
    crosses: list[dict[str, Any]] = field(default_factory=list)  # checked in train.experiment, built where used
    user_column: str = "user_id"

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.bucket_window < 0:
            raise ConfigError(f"data.bucket_window: expected an integer >= 0, got {self.bucket_window}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers: expected an integer >= 0, got {self.num_workers}")


@dataclass
class TrainConfig:
    """How to train.

    Args:
        epochs: passes over the training split.
        learning_rate: Adam learning rate.
        weight_decay: L2 on dense parameters.
        seed: fixes initialisation, shuffling and sampling.
        threads: torch intra-op threads (0 = the CPUs this process may use: affinity, cgroup quota).
        patience: stop after this many epochs without a better validation metric (0 = never).
        max_steps_per_epoch: cap on steps per epoch (0 = no cap), for smoke runs.
        checkpoint: write the best model to the run folder.
        warmup_steps: the learning rate of every optimizer (dense and sparse) rises linearly
            from learning_rate / warmup_steps to learning_rate over the first steps (0 = none).
        log_every: write the running train loss to ``steps.csv`` every this many steps.
        plateau_decay: multiply every learning rate by this after an epoch that does not
            improve the validation metric (FuxiCTR's reduce-on-plateau uses 0.1; 1 = off).
        monitor: the validation metric that picks the best epoch, e.g. ``valid.auc`` or
            ``valid.ndcg@10`` (empty = the task's default: AUC, mean AUC or NDCG at the first K);
            LogLoss-, RMSE- and loss-like metrics are minimised, every other one maximised.
        checkpoint_every: also save the resumable state every this many steps (0 = only at the
            end of each epoch); ``terarec train --resume RUN`` continues from the latest.
    """

    epochs: int = 3
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 0
    patience: int = 2
    max_steps_per_epoch: int = 0
    checkpoint: bool = True
    warmup_steps: int = 0
    log_every: int = 50
    plateau_decay: float = 1.0
    monitor: str = ""
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        for name in ("epochs", "warmup_steps", "max_steps_per_epoch", "patience", "threads", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected an integer >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ConfigError(f"train.log_every: expected an integer >= 1, got {self.log_every}")
        if not 0 < self.plateau_decay <= 1:
            raise ConfigError(f"train.plateau_decay: expected a factor in (0, 1], got {self.plateau_decay}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate: expected > 0, got {self.learning_rate}")


@dataclass
class BandsConfig:
    """Frequency-banded mixed dimensions (Ginart et al. 2019): frequent rows wide, rare rows narrow.

    A banded feature's rows are sorted by training count and cut into ``num_bands`` bands
    (``split``: ``mass``, equal shares of the lookups, or ``rows``, equal row counts); band i
    gets width d_i = d * (p_i / p_max) ** alpha (p_i: the mean share of lookups of one of its
    rows), rounded to a multiple of 4 in [d_min, d], and one projection P_i (d x d_i) to the
    model's width d (``terarec.embedding.mixed_dim``).

    Args:
        num_bands: bands per banded feature (0 = no banding).
        alpha: Ginart's temperature in [0, 1]; 0 gives every band the full width.
        d_min: narrowest band width.
        split: ``mass`` or ``rows``.
        features: the features to band (empty = every feature with at least ``min_rows`` rows).
        min_rows: with ``features`` empty, smaller tables stay whole (a projection would cost more
            than it saves).
        widths: feature -> one width per band, most frequent band first: replaces the alpha rule
            for that feature (what ``terarec search-embeddings`` writes).
        tail_rows: rows of the rarest band: 0 = one per id; k > 0 = its ids share k rows (rank
            modulo k; 1 = one shared row, the rare ids' common vector).
    """

    num_bands: int = 0
    alpha: float = 0.5
    d_min: int = 4
    split: Literal["mass", "rows"] = "mass"
    features: list[str] = field(default_factory=list)
    min_rows: int = 100
    widths: dict[str, list[int]] = field(default_factory=dict)
    tail_rows: int = 0

    def __post_init__(self) -> None:
        if self.num_bands < 0:
            raise ConfigError(f"embedding.bands.num_bands: expected an integer >= 0, got {self.num_bands}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"embedding.bands.alpha: expected a number in [0, 1], got {self.alpha}")
        if self.d_min < 1:
            raise ConfigError(f"embedding.bands.d_min: expected an integer >= 1, got {self.d_min}")
        if self.tail_rows < 0:
            raise ConfigError(f"embedding.bands.tail_rows: expected an integer >= 0, got {self.tail_rows}")
        for name, widths in self.widths.items():
            if not widths or any(width < 1 for width in widths):
                raise ConfigError(f"embedding.bands.widths.{name}: expected a non-empty list of widths >= 1, "
                                  f"got {widths}")

    def banded(self, name: str, num_rows: int) -> bool:
        """Whether feature ``name`` (a table of ``num_rows`` rows) is cut into bands."""
        if name in self.widths:
            return True
        if self.num_bands < 2:
            return False
        return name in self.features if self.features else num_rows >= self.min_rows


@dataclass
class ResidualConfig:
    """Res-embedding (Zhou et al. 2019) for item-like features: e_i = C[cluster_i] + r_i, loss + l2 * ||r||^2.

    Clusters come from item co-occurrence in the training users' histories (within ``window``
    positions; spectral clustering, ``terarec.embedding.residual``).

    Args:
        features: the item-like features (CTR keys, ``item_id`` for sequence models); empty = off.
        num_clusters: interest clusters (centres).
        l2: lambda on the residuals (of the rows each batch looks up).
        window: co-occurrence window in a history.
        recluster_every: 0 = clusters fixed; n > 0 = every n epochs the items are re-clustered by
            k-means on their current embeddings (each embedding kept: new centres are the cluster
            means, residuals the rest).
    """

    features: list[str] = field(default_factory=list)
    num_clusters: int = 64
    l2: float = 1e-4
    window: int = 5
    recluster_every: int = 0

    def __post_init__(self) -> None:
        for name in ("num_clusters", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"embedding.residual.{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.l2 < 0:
            raise ConfigError(f"embedding.residual.l2: expected a number >= 0, got {self.l2}")
        if self.recluster_every < 0:
            raise ConfigError(f"embedding.residual.recluster_every: expected an integer >= 0, "
                              f"got {self.recluster_every}")


@dataclass
class EmbeddingConfig:
    """How sparse ids become table rows, and how the tables are trained.

    Args:
        vocabulary: ``exact`` (every id seen in training gets a row; unknown ids share the
            counted default row 0) or ``managed`` (a bounded table per feature with admission
            and eviction, see ``terarec.embedding.vocabulary.ManagedVocabulary``).
        capacity: managed: rows per feature (0 = 1.25 x the feature's distinct training ids).
        min_count: managed: times an id must be seen before it gets a row.
        eviction: managed: ``lfu``, ``lru`` or ``ttl``.
        ttl_days: managed, ttl eviction: rows unseen for this long (event time) are freed.
        optimizer: ``adam`` (tables trained with the dense Adam) or ``rowwise_adagrad`` /
            ``sgd`` (fused into the backward pass by the embedding engine).
        learning_rate: the sparse optimizer's learning rate (0 = train.learning_rate).
        weight_dtype: ``fp32``, ``fp16`` or ``bf16`` table storage (engine only).
        regularization: L2 coefficient lambda on the tables. ``adam``: lambda/2 * ||W||^2 over
            every row of every table is added to the loss each step (FuxiCTR's
            ``embedding_regularizer``; it costs a pass over the tables, so it is for small
            tables); engine optimizers: weight decay lambda * w on the rows a batch touches.
        sharding_types: distributed runs (``--nproc``): the TorchRec sharding types the planner
            may give every table: ``table_wise``, ``column_wise``, ``table_column_wise`` (CPU and
            GPU), ``row_wise`` (GPU), ``data_parallel``; empty (the default) is the planner's choice.
        column_shard_dim: distributed runs: the width of a column-wise shard (TorchRec's
            ``min_partition``; 0 = TorchRec's default, 128 columns, so narrower tables stay whole).
        dims: feature -> width of its table when it differs from the model's d; the table is
            projected to d by a learned d x width matrix (Ginart et al.'s projection, one block).
        bands: frequency-banded mixed dimensions, see BandsConfig.
        residual: Res-embedding for item-like features, see ResidualConfig.
    """

    vocabulary: Literal["exact", "managed"] = "exact"
    capacity: int = 0
    min_count: int = 1
    eviction: Literal["lfu", "lru", "ttl"] = "lfu"
    ttl_days: float = 30.0
    optimizer: Literal["adam", "rowwise_adagrad", "sgd"] = "adam"
    learning_rate: float = 0.0
    weight_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    regularization: float = 0.0
    sharding_types: list[str] = field(default_factory=list)
    column_shard_dim: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    bands: BandsConfig = field(default_factory=BandsConfig)
    residual: ResidualConfig = field(default_factory=ResidualConfig)

    def __post_init__(self) -> None:
        for name, width in self.dims.items():
            if width < 1:
                raise ConfigError(f"embedding.dims.{name}: expected a width >= 1, got {width}")
        for name in sorted(set(self.dims) & set(self.bands.widths)):
            raise ConfigError(f"embedding.dims.{name}: the feature also has embedding.bands.widths; give one")
        for name in self.residual.features:
            if name in self.dims or name in self.bands.widths or name in self.bands.features:
                raise ConfigError(f"embedding.residual.features: '{name}' is also sized by embedding.dims or "
                                  "embedding.bands; a Res-embedding table is one width d")

    @property
    def sized(self) -> bool:
        """Whether any table differs from one d-wide table per feature."""
        return bool(self.dims or self.bands.num_bands > 1 or self.bands.widths or self.residual.features)


EvalProtocol = Literal["exclude_history", "allow_repeats", "sampled"]


@dataclass
class EvalConfig:
    """How to evaluate.

    Args:
        ks: cut-offs for HR@K and NDCG@K (sequence tasks).
        protocol: sequence tasks: the candidates a target is ranked against
            (``terarec.eval.protocols``, docs/data.md): ``exclude_history`` (every item of the
            user's full history removed; a repeated target counts as a miss), ``allow_repeats``
            (nothing removed) or ``sampled`` (``num_sampled`` unseen negatives, for comparison
            with older papers only).
        num_sampled: ``sampled``: negatives per target, drawn with ``train.seed``.
        exclude_history: replaced by ``protocol``; kept so that configs written before it still
            load: ``true`` is the ``exclude_history`` protocol, ``false`` is an error pointing
            to ``protocol: allow_repeats``.
    """

    ks: list[int] = field(default_factory=lambda: [10, 50, 200])
    protocol: EvalProtocol = "exclude_history"
    num_sampled: int = 100
    exclude_history: bool | None = None

    def __post_init__(self) -> None:
        if self.exclude_history is False:
            raise ConfigError("eval.exclude_history: false is now 'eval.protocol: allow_repeats' "
                              "(exclude_history was replaced by eval.protocol)")
        if self.exclude_history and self.protocol != "exclude_history":
            raise ConfigError(f"eval.exclude_history: true contradicts eval.protocol: {self.protocol}; "
                              "drop exclude_history (replaced by eval.protocol)")
        if self.num_sampled < 1:
            raise ConfigError(f"eval.num_sampled: expected an integer >= 1, got {self.num_sampled}")
        self.exclude_history = None  # said by protocol from here on; resolved configs leave it unset


@dataclass
class StreamConfig:
    """How ``terarec stream`` consumes time-ordered chunks (``data.path``: a folder of Parquet
    partitions, applied in name order; see ``terarec.stream``).

    Args:
        time_column: the event-time column (seconds); each batch's latest time is the managed
            vocabularies' clock, so TTL eviction runs in event time.
        follow: keep waiting for new partitions once the folder is consumed.
        poll_seconds: follow: how often the folder is listed again.
        idle_seconds: follow: stop after this long without a new partition (0 = never).
        max_chunks: stop after this many chunks (0 = when the source has no more).
        train_chunks: train on the first this many chunks only and only evaluate the rest (0 =
            train on all): the "frozen" baseline.
        delta_every: write an embedding delta every this many chunks (0 = none); the run
            exports its base bundle before the first chunk.
        shuffle: shuffle each chunk's rows before training (seeded by ``train.seed`` and the
            chunk's position; evaluation reads them in order); sequential: the users' order.
        history_ttl_days: sequential: a user's stored history is dropped after this many days
            (event time) without a positive event (0 = ``embedding.ttl_days``).
    """

    time_column: str = "timestamp"
    follow: bool = False
    poll_seconds: float = 5.0
    idle_seconds: float = 0.0
    max_chunks: int = 0
    train_chunks: int = 0
    delta_every: int = 1
    shuffle: bool = True
    history_ttl_days: float = 0.0


@dataclass
class ExperimentConfig:
    """One experiment: data, model, training and evaluation.

    Args:
        name: names the run folder.
        task: ``ctr`` (one row per impression, binary labels), ``sequential`` (next item) or
            ``ranking`` (impressions over interleaved item / action series); see
            ``terarec.train.tasks``.
        data: see DataConfig.
        model: ``name`` (a key of ``terarec.models.MODELS``) plus that model's own options,
            checked against its Config dataclass.
        train: see TrainConfig.
        eval: see EvalConfig.
        embedding: see EmbeddingConfig.
        stream: see StreamConfig (``terarec stream`` only).
        run_dir: parent folder of run folders.
    """

    name: str = "experiment"
    task: Literal["ctr", "sequential", "ranking"] = "ctr"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "embedding_mlp"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    run_dir: str = "runs"


def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, inner = typing.get_args(annotation) or (str, Any)
        return {k: _convert(v, inner, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 1e-3, with no dot, as a string; take it as the number it is.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_nearest(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where or 'config'}: {error}") from error


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override '{override}' is not of the form key.path=value")
        key, raw = override.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first {seen[key]})", key_node.start_mark
                )
            seen[key] = f"on line {key_node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """A YAML file's top-level mapping; a missing, binary, empty or invalid file, or one that
    is not a mapping, is a ConfigError naming the file (an empty file would otherwise run every
    default silently; write ``{}`` to mean that)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"{path}: expected a {what} YAML file, got a folder")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a YAML text file (byte {error.start} is not UTF-8; a binary file?)") from error
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        raise ConfigError(f"{path}: the {what} file is empty; write its settings (or {{}} for every default)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def parse_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """An ExperimentConfig from YAML (or defaults when ``path`` is None) plus overrides, its keys and
    types checked; the model's options and the crosses are checked one layer up
    (``terarec.train.experiment.load_config``)."""
    data = read_yaml_mapping(path, "config") if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(ExperimentConfig, data)


def to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML (what a run folder keeps)."""
    return yaml.safe_dump(asdict(config), sort_keys=False)
