"""Synthetic CTR rows whose click depends on interactions of order 2 to 4, with a known floor.

Built for scaling studies: the label is drawn from a fixed random *teacher* with a long,
power-law tail of feature interactions, so a bigger interaction model keeps finding more of
them, and the teacher's own probability is stored so the Bayes-optimal LogLoss (the floor no
model can beat) is known.

Generative story
----------------

* ``num_fields`` categorical fields ``f00 .. f{F-1}``; field f has ``V_f`` values, ``V_f``
  log-uniform in ``[min_cardinality, max_cardinality]``, each value equally likely and drawn
  independently per row and field.
* first order: ``w_f[v] ~ N(0, first_order_scale^2 / F)``.
* interactions: ``num_terms`` terms t = 1..T. Term t has an order ``o_t`` drawn from ``orders``
  with probabilities ``order_weights``, a set ``S_t`` of ``o_t`` distinct fields, and for each
  field of ``S_t`` a table ``g_{t,f} = (term_mean + z) / sqrt(1 + term_mean^2)`` over its
  values, ``z`` standardised to mean 0 and variance 1 over the values (so ``g`` has second
  moment 1). With ``term_mean = 0`` term t is a *pure* order-``o_t`` interaction, no main
  effects and no lower-order part: like a parity, gradient training barely finds it. With
  ``term_mean > 0`` it also holds every lower-order sub-product (a "staircase"), as real
  interactions do, and a model that learns the low orders first can climb to the high ones;
  the top order keeps a share ``(1 + term_mean^2)^(-o_t)`` of the term's second moment.
  Coefficients fall as a power law, ``|c_t| ∝ t^(-decay)``, with random signs, scaled so the
  interaction part of the logit has root mean square ``interaction_scale``.
* ``logit = bias + sum_f w_f[x_f] + sum_t c_t prod_{f in S_t} g_{t,f}[x_f]``;
  ``click ~ Bernoulli(sigmoid(logit))``. The column ``true_ctr`` holds ``sigmoid(logit)``;
  it is not declared as a feature (models never see it), and ``bayes_logloss`` scores it
  against the labels: the LogLoss of the Bayes-optimal predictor.

Determinism: the teacher comes from ``SeedSequence(seed, spawn_key=(0,))``, chunk k of rows
from ``spawn_key=(1, k)``, so any chunk can be made alone. Rows are generated column-wise in
numpy, one vectorised gather per (term, field): about a second per million rows.

Example:
    >>> data = load_synthetic_ctr("-", num_rows=1_000, seed=1)
    >>> data.kind, sum(chunk.num_rows for chunk in data.chunks)
    ('ctr', 1000)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from terarec.data.sampling import seeded_rng
from terarec.data.sources.base import SourceData

LABEL = "click"
TRUE_CTR = "true_ctr"
# Upper bounds that keep a mistyped number from asking for more memory or time than any run has.
_LIMITS = {"num_rows": 2**53, "num_fields": 4096, "min_cardinality": 2**24, "max_cardinality": 2**24,
           "num_terms": 2**20, "rows_per_chunk": 2**26}
_LIMIT_REASONS = {
    "num_rows": "rows are counted in float64 downstream",
    "num_fields": "one column per field",
    "min_cardinality": "the teacher holds a table per field in memory",
    "max_cardinality": "the teacher holds a table per field in memory",
    "num_terms": "the teacher holds every term in memory",
    "rows_per_chunk": "a chunk is generated in memory, about 100 bytes a row",
}
_TEACHER, _ROWS = 0, 1


@dataclass
class SyntheticCTRConfig:
    """Size and teacher of the synthetic CTR data (see the module docstring for the model).

    Args:
        num_rows: rows generated (before the split).
        num_fields: F, categorical fields.
        min_cardinality: smallest number of values of a field.
        max_cardinality: largest number of values of a field.
        num_terms: T, interaction terms of the teacher.
        orders: the interaction orders terms are drawn from.
        order_weights: probability of each order (normalised).
        term_mean: mean of every term's per-field tables before normalising (0: pure
            interactions; larger: more of each term in its lower-order parts).
        decay: power-law exponent of the term coefficients, ``c_t ∝ t^(-decay)``.
        interaction_scale: standard deviation of the interaction part of the logit.
        first_order_scale: standard deviation of the first-order part of the logit.
        bias: the logit's constant (about -1.1 gives a click rate near 30%).
        seed: master seed (non-negative).
        rows_per_chunk: rows generated at a time (memory is about 100 bytes a row).
    """

    num_rows: int = 1_000_000
    num_fields: int = 16
    min_cardinality: int = 3
    max_cardinality: int = 12
    num_terms: int = 64
    orders: list[int] = field(default_factory=lambda: [2, 3, 4])
    order_weights: list[float] = field(default_factory=lambda: [0.4, 0.35, 0.25])
    term_mean: float = 0.6
    decay: float = 0.5
    interaction_scale: float = 2.5
    first_order_scale: float = 0.5
    bias: float = -1.1
    seed: int = 0
    rows_per_chunk: int = 250_000

    def validate(self) -> SyntheticCTRConfig:
        """Raise ValueError naming the first bad field; return self."""
        for name, most in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SyntheticCTRConfig.{name} must be a positive integer, got {value!r}")
            if value > most:
                raise ValueError(f"SyntheticCTRConfig.{name} must be at most {most:,} ({_LIMIT_REASONS[name]}), "
                                 f"got {value:,}")
        if self.min_cardinality < 2 or self.max_cardinality < self.min_cardinality:
            raise ValueError(f"SyntheticCTRConfig: need 2 <= min_cardinality <= max_cardinality, got "
                             f"{self.min_cardinality} and {self.max_cardinality}")
        if not self.orders or len(self.orders) != len(self.order_weights):
            raise ValueError(f"SyntheticCTRConfig.orders {self.orders} and order_weights {self.order_weights} "
                             "must be non-empty and of the same length")
        if min(self.orders) < 2 or max(self.orders) > self.num_fields:
            raise ValueError(f"SyntheticCTRConfig.orders must lie in [2, num_fields={self.num_fields}], "
                             f"got {self.orders}")
        if min(self.order_weights) < 0 or sum(self.order_weights) <= 0:
            raise ValueError(f"SyntheticCTRConfig.order_weights must be >= 0 with a positive sum, "
                             f"got {self.order_weights}")
        for name in ("term_mean", "decay", "interaction_scale", "first_order_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"SyntheticCTRConfig.{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SyntheticCTRConfig.seed must be a non-negative integer, got {self.seed!r}")
        return self

    @property
    def field_names(self) -> list[str]:
        return [f"f{index:02d}" for index in range(self.num_fields)]


class Teacher:
    """The fixed random function that turns a row's field values into its click logit.

    Args:
        config: the data config; the teacher depends on every field but ``num_rows`` and
            ``rows_per_chunk``.

    Example:
        >>> teacher = Teacher(SyntheticCTRConfig(num_fields=4, num_terms=8, orders=[2], order_weights=[1.0]))
        >>> teacher.logits(np.zeros((4, 3), dtype=np.int64)).shape
        (3,)
    """

    def __init__(self, config: SyntheticCTRConfig) -> None:
        rng = seeded_rng(config.seed, _TEACHER)
        num_fields = config.num_fields
        low, high = math.log(config.min_cardinality), math.log(config.max_cardinality + 1)
        self.cardinalities = np.minimum(np.exp(rng.uniform(low, high, num_fields)).astype(np.int64),
                                        config.max_cardinality)
        self.bias = float(config.bias)
        self.first_order = [rng.normal(0.0, config.first_order_scale / math.sqrt(num_fields), size).astype(np.float32)
                            for size in self.cardinalities]
        weights = np.asarray(config.order_weights, dtype=np.float64)
        self.term_orders = rng.choice(np.asarray(config.orders), size=config.num_terms, p=weights / weights.sum())
        self.term_fields = [np.sort(rng.choice(num_fields, size=order, replace=False)) for order in self.term_orders]
        self.term_tables: list[list[np.ndarray]] = []
        for fields in self.term_fields:
            tables = []
            for f in fields:
                table = rng.standard_normal(self.cardinalities[f])
                table = (table - table.mean()) / max(table.std(), 1e-6)
                tables.append(((config.term_mean + table) / math.sqrt(1 + config.term_mean**2)).astype(np.float32))
            self.term_tables.append(tables)
        coefficients = np.arange(1, config.num_terms + 1, dtype=np.float64) ** (-float(config.decay))
        coefficients *= rng.choice([-1.0, 1.0], size=config.num_terms)  # terms' means do not pile up in one direction
        self.coefficients = (coefficients * config.interaction_scale / np.sqrt(np.sum(coefficients**2))).astype(np.float32)

    def logits(self, values: np.ndarray) -> np.ndarray:
        """Logits of rows given as a (num_fields, num_rows) array of value indices. (num_rows,)"""
        logits = np.full(values.shape[1], self.bias, dtype=np.float32)
        for f, table in enumerate(self.first_order):
            logits += table[values[f]]
        for coefficient, fields, tables in zip(self.coefficients, self.term_fields, self.term_tables):
            product = tables[0][values[fields[0]]] * coefficient
            for f, table in zip(fields[1:], tables[1:]):
                product *= table[values[f]]
            logits += product
        return logits


def _chunk(config: SyntheticCTRConfig, teacher: Teacher, index: int, num_rows: int) -> pa.Table:
    rng = seeded_rng(config.seed, _ROWS, index)
    values = np.stack([rng.integers(0, size, num_rows) for size in teacher.cardinalities])  # (F, rows)
    probability = 1.0 / (1.0 + np.exp(-teacher.logits(values).astype(np.float64)))
    clicks = (rng.random(num_rows) < probability).astype(np.float32)
    columns = {name: pa.array(values[f]) for f, name in enumerate(config.field_names)}
    columns[LABEL] = pa.array(clicks)
    columns[TRUE_CTR] = pa.array(probability.astype(np.float32))
    return pa.table(columns)


def _chunks(config: SyntheticCTRConfig, teacher: Teacher) -> Iterator[pa.Table]:
    for index, start in enumerate(range(0, config.num_rows, config.rows_per_chunk)):
        yield _chunk(config, teacher, index, min(config.rows_per_chunk, config.num_rows - start))


def synthetic_ctr_config(path: str | Path | None = None, **options: Any) -> SyntheticCTRConfig:
    """A SyntheticCTRConfig from an optional YAML file of its fields, then ``options``.

    ``path`` may be None, ``""`` or ``"-"`` for the defaults. An unknown field is an error
    naming it and the nearest valid one.
    """
    from terarec.config import ConfigError, from_dict, read_yaml_mapping

    from_file = path not in (None, "", "-")
    data = read_yaml_mapping(path, "synthetic-ctr config") if from_file else {}
    data.update(options)
    try:
        return from_dict(SyntheticCTRConfig, data, "synthetic-ctr").validate()
    except ValueError as error:
        if from_file:  # name the file the values came from
            raise ConfigError(f"{path}: {error}") from error
        raise


def load_synthetic_ctr(path: str | Path | None = "-", on_bad_line: str = "error", **options: Any) -> SourceData:
    """The synthetic CTR rows as a ``ctr`` SourceData; chunks are generated as they are consumed.

    Args:
        path: a YAML file of SyntheticCTRConfig fields, or ``"-"`` for the defaults.
        on_bad_line: accepted for the source interface; generated rows are never malformed.
        **options: SyntheticCTRConfig fields, overriding the file (e.g. ``num_rows=200000``).

    Example:
        ``terarec data prepare synthetic-ctr configs/scaling/data.yaml --out data/scaling``
    """
    config = synthetic_ctr_config(path, **options)
    teacher = Teacher(config)
    return SourceData(
        name="synthetic-ctr",
        source="synthetic-ctr",
        kind="ctr",
        chunks=_chunks(config, teacher),
        sparse=config.field_names,
        labels=[LABEL],
    )


def bayes_logloss(folder: str | Path, split: str = "test") -> float | None:
    """LogLoss of the teacher's own probabilities (``true_ctr``) on one split of a prepared
    dataset: the floor no model can beat on those labels. None when the data has no such column."""
    from terarec.data import schema
    from terarec.data.schema import DatasetMeta

    folder = Path(folder)
    meta = DatasetMeta.load(folder)
    if TRUE_CTR not in meta.columns or not meta.labels:
        return None
    label = meta.labels[0]
    total, count = 0.0, 0
    for part in meta.parts:
        table = pq.read_table(folder / part, columns=[label, TRUE_CTR, schema.SPLIT])
        table = table.filter(pc.equal(table.column(schema.SPLIT), schema.SPLIT_CODES[split]))
        labels = table.column(label).to_numpy().astype(np.float64)
        probability = np.clip(table.column(TRUE_CTR).to_numpy().astype(np.float64), 1e-7, 1 - 1e-7)
        total += float(-np.sum(labels * np.log(probability) + (1 - labels) * np.log1p(-probability)))
        count += labels.size
    return total / count if count else None
