"""Memory planner for embedding tables: bytes per row and per table, and the hosts a plan needs.

``terarec plan CONFIG`` reads a plan like this one (every key but ``name``, ``rows`` and
``dim`` has the default shown in TablePlan / MemoryPlan):

.. code-block:: yaml

    host_memory_gb: 24      # GiB of memory per host
    headroom: 0.8           # share of it the tables may use
    tables:
      - name: item
        rows: 100_000_000
        dim: 16
        dtype: fp16         # fp32 | fp16 | bf16 | int8 (inference)
        optimizer: rowwise_adagrad
      - name: user_x_item_category
        rows: 2_000_000_000
        dim: 8
        hash_overhead: 0    # exact vocabulary: no id -> row hash map
        features: 2         # bags per example that look it up (sharding plan's traffic only)
        pooling_factor: 1   # ids per bag (likewise)

The bytes of one row are the sum of:

- weights: ``dim x bytes(dtype)``: fp32 4, fp16 2, bf16 2, int8 1 plus 4 bytes per row for
  the scale and bias. FBGEMM's table-batched int8 rows (what TorchRec's quantised
  embedding bags run on) store them as two fp16 values, ``DEFAULT_SCALE_BIAS_SIZE_IN_BYTES
  = 4``; the older Caffe2 fused 8-bit row-wise format stores two fp32 values (8 bytes). On
  GPU FBGEMM also rounds each int8 row up to a multiple of 16 bytes; the planner does not
  (on CPU rows are not padded).
- id: the raw 64-bit id a managed vocabulary keeps per row, so that it can evict the row and
  save the mapping with a checkpoint (8 bytes; an exact vocabulary's sorted id array costs
  the same).
- optimizer state, always fp32 whatever the weight dtype: ``rowwise_adagrad`` one value per
  row (4 bytes), ``adagrad`` one per weight (``dim x 4``), ``adam`` two per weight
  (``2 x dim x 4``), ``sgd`` and ``none`` nothing.
- hash map: the id -> row map of a managed vocabulary, in bytes per row (``hash_overhead``).
  The default, 32 bytes, assumes open addressing at load factor 0.5 with 8-byte key and
  8-byte (int64) row slots: ``(8 + 8) / 0.5``. A map whose capacity is rounded up to a power
  of two can cost up to twice that; set ``hash_overhead`` to what your map really spends.
- metadata: per-row counters a managed vocabulary keeps for eviction (``metadata_bytes``,
  e.g. 4 for an int32 count, 8 for an int64 last-seen time); 0 by default.

So a 16-dim row with its id is 16 x 4 + 8 = 72 B in fp32 and 16 x 2 + 8 = 40 B in fp16, and
1 TB (1e12 B) holds 1e12 / 72 = 13.9 billion rows in fp32 and 1e12 / 40 = 25 billion in fp16.

``terarec plan CONFIG --hosts H`` adds how the tables shard over a cluster (see
``terarec.embedding.sharding_plan``).

Not counted: the Python and torch runtime of the process, the dense model, activations,
and the allocator's slack; ``headroom`` is there for them.

Example:
    >>> bytes_per_row(16, "fp32"), bytes_per_row(16, "fp16")
    (72, 40)
    >>> f"{rows_per_bytes(1e12, 16, 'fp32'):.3g}"
    '1.39e+10'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.table import Table

from terarec.config import ConfigError, from_dict, read_yaml_mapping

Dtype = Literal["fp32", "fp16", "bf16", "int8"]
Optimizer = Literal["rowwise_adagrad", "adagrad", "adam", "sgd", "none"]

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
# FBGEMM TBE int8 rows: fp16 scale + fp16 bias (fbgemm_gpu.tbe.config.DEFAULT_SCALE_BIAS_SIZE_IN_BYTES).
INT8_SCALE_BIAS_BYTES = 4
ID_BYTES = 8
OPTIMIZER_STATE_BYTES = 4  # optimizer state is fp32 whatever the weight dtype
# fp32 values of optimizer state per weight; rowwise_adagrad keeps one per row instead.
_STATE_PER_WEIGHT = {"adagrad": 1, "adam": 2, "sgd": 0, "none": 0}
GIB = 2**30


def hash_bytes_per_row(key_bytes: int = 8, value_bytes: int = 8, load_factor: float = 0.5) -> float:
    """Bytes per stored id of an open-addressing id -> row map: one slot per ``1 / load_factor`` ids.

    Args:
        key_bytes: bytes of a key slot (a 64-bit raw id: 8).
        value_bytes: bytes of a value slot (an int64 row: 8; an int32 row: 4).
        load_factor: stored ids per slot, in (0, 1].

    Example:
        >>> hash_bytes_per_row(), hash_bytes_per_row(value_bytes=4)
        (32.0, 24.0)
    """
    if not 0 < load_factor <= 1:
        raise ValueError(f"load_factor: expected a number in (0, 1], got {load_factor}")
    return (key_bytes + value_bytes) / load_factor


HASH_BYTES_PER_ROW = hash_bytes_per_row()


@dataclass
class TablePlan:
    """One embedding table to plan for.

    Args:
        name: names the table in the report.
        rows: rows of the table (for a managed vocabulary: its capacity).
        dim: embedding dimension.
        dtype: weight dtype, ``fp32``, ``fp16``, ``bf16`` or ``int8`` (inference only: needs
            ``optimizer: none``).
        optimizer: ``rowwise_adagrad``, ``adagrad``, ``adam``, ``sgd`` or ``none``.
        id_bytes: bytes per row for the raw id the vocabulary keeps (0: no vocabulary).
        hash_overhead: bytes per row of the id -> row hash map (0: no map); the default
            assumes open addressing at load factor 0.5 with 8-byte keys and rows.
        metadata_bytes: bytes per row of eviction counters (LFU counts, LRU/TTL times).
        features: features (bags per example) that look this table up; only the sharding
            plan's traffic and step time read it (TorchRec: ``feature_names`` of the table).
        pooling_factor: mean ids per bag (TorchRec's ``pooling_factors`` constraint); only the
            sharding plan reads it.
        band_dims: a mixed-dimension table (``embedding.bands``): one width per band, most
            frequent first (``dim`` is then the model's width they are projected to).
        band_rows: rows of each band (default: ``rows`` split evenly); see ``sized_table_memory``.
        clusters: a Res-embedding table (``embedding.residual``) with this many centres.

    Example:
        >>> table_memory(TablePlan("item", rows=1000, dim=16, dtype="fp16", hash_overhead=0)).total
        44000
    """

    name: str
    rows: int
    dim: int
    dtype: Dtype = "fp32"
    optimizer: Optimizer = "rowwise_adagrad"
    id_bytes: int = ID_BYTES
    hash_overhead: float = HASH_BYTES_PER_ROW
    metadata_bytes: int = 0
    features: int = 1
    pooling_factor: float = 1.0
    band_dims: list[int] = field(default_factory=list)
    band_rows: list[int] = field(default_factory=list)
    clusters: int = 0

    def __post_init__(self) -> None:
        where = f"table '{self.name}'"
        if self.features < 1 or self.pooling_factor <= 0:
            raise ValueError(
                f"{where}: expected features >= 1 and pooling_factor > 0, "
                f"got {self.features} and {self.pooling_factor}"
            )
        if self.band_rows and (len(self.band_rows) != len(self.band_dims) or sum(self.band_rows) > self.rows):
            raise ValueError(f"{where}: band_rows needs one count per band_dims entry, summing to <= rows")
        if self.rows < 0:
            raise ValueError(f"{where}: rows must be >= 0, got {self.rows}")
        if self.dim < 1:
            raise ValueError(f"{where}: dim must be >= 1, got {self.dim}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"{where}: dtype must be one of {list(DTYPE_BYTES)}, got {self.dtype!r}")
        if self.optimizer not in _STATE_PER_WEIGHT and self.optimizer != "rowwise_adagrad":
            raise ValueError(
                f"{where}: optimizer must be one of {['rowwise_adagrad', *_STATE_PER_WEIGHT]}, "
                f"got {self.optimizer!r}"
            )
        if self.dtype == "int8" and self.optimizer != "none":
            raise ValueError(
                f"{where}: dtype int8 is for inference: expected optimizer none, got {self.optimizer}"
            )
        for key in ("id_bytes", "hash_overhead", "metadata_bytes"):
            if getattr(self, key) < 0:
                raise ValueError(f"{where}: {key} must be >= 0, got {getattr(self, key)}")


@dataclass
class MemoryPlan:
    """The tables of one model and the hosts they should fit on.

    Args:
        tables: see TablePlan.
        host_memory_gb: memory of one host in GiB (2**30 bytes, as ``free -g`` reports it).
        headroom: share of a host's memory the tables may take; the rest is for the runtime,
            the dense model, activations and allocator slack.

    Example:
        >>> plan = from_dict(MemoryPlan, {"tables": [{"name": "item", "rows": 10, "dim": 4}]})
        >>> plan.host_memory_gb, plan.headroom
        (24.0, 0.8)
    """

    tables: list[TablePlan] = field(default_factory=list)
    host_memory_gb: float = 24.0
    headroom: float = 0.8

    def __post_init__(self) -> None:
        if self.host_memory_gb <= 0:
            raise ValueError(f"host_memory_gb must be > 0, got {self.host_memory_gb}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")
        names = [table.name for table in self.tables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tables: names must be unique, repeated: {duplicates}")


def load_plan(path: str | Path) -> MemoryPlan:
    """Read a MemoryPlan from a YAML file; errors name the file and the key."""
    path = Path(path)
    data = read_yaml_mapping(path, "plan")
    try:
        return from_dict(MemoryPlan, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


# ----------------------------------------------------------------------------- per row


def weight_bytes_per_row(dim: int, dtype: str) -> int:
    """Bytes of one row's weights, int8's fp16 scale and bias included."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: expected one of {list(DTYPE_BYTES)}, got {dtype!r}")
    return dim * DTYPE_BYTES[dtype] + (INT8_SCALE_BIAS_BYTES if dtype == "int8" else 0)


def optimizer_bytes_per_row(dim: int, optimizer: str | None) -> int:
    """Bytes of one row's fp32 optimizer state (``None`` counts as no optimizer)."""
    if optimizer is None or optimizer == "none":
        return 0
    if optimizer == "rowwise_adagrad":
        return OPTIMIZER_STATE_BYTES
    if optimizer not in _STATE_PER_WEIGHT:
        valid = ["rowwise_adagrad", *_STATE_PER_WEIGHT]
        raise ValueError(f"optimizer: expected one of {valid}, got {optimizer!r}")
    return _STATE_PER_WEIGHT[optimizer] * dim * OPTIMIZER_STATE_BYTES


def bytes_per_row(
    dim: int,
    dtype: str = "fp32",
    include_id: bool = True,
    optimizer: str | None = None,
    hash_overhead: bool | float = False,
) -> float:
    """Bytes one row costs: weights, plus its 8-byte id, optimizer state and hash-map share if asked.

    Args:
        dim: embedding dimension.
        dtype: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        include_id: count the 8-byte raw id a vocabulary keeps per row.
        optimizer: count this optimizer's state (None: no state).
        hash_overhead: False: no id -> row map; True: the default map (32 B per row);
            a number: that many bytes per row.

    Example:
        >>> bytes_per_row(16, "fp32"), bytes_per_row(16, "fp16", optimizer="rowwise_adagrad")
        (72, 44)
    """
    if isinstance(hash_overhead, bool):
        hash_overhead = HASH_BYTES_PER_ROW if hash_overhead else 0
    total = weight_bytes_per_row(dim, dtype) + (ID_BYTES if include_id else 0)
    total += optimizer_bytes_per_row(dim, optimizer)
    return total + hash_overhead if hash_overhead else total


def rows_per_bytes(
    memory_bytes: float,
    dim: int,
    dtype: str = "fp32",
    include_id: bool = True,
    optimizer: str | None = None,
    hash_overhead: bool | float = False,
) -> int:
    """How many whole rows fit in ``memory_bytes`` (the other arguments as in bytes_per_row).

    Example:
        >>> rows_per_bytes(1e12, 16, "fp16")
        25000000000
    """
    return math.floor(memory_bytes / bytes_per_row(dim, dtype, include_id, optimizer, hash_overhead))


# ----------------------------------------------------------------------------- per table and plan


@dataclass(frozen=True)
class TableMemory:
    """Bytes of one table (or of a whole plan), by what holds them."""

    weights: int
    ids: int
    optimizer: int
    hash_map: int
    metadata: int

    @property
    def total(self) -> int:
        return self.weights + self.ids + self.optimizer + self.hash_map + self.metadata

    def __add__(self, other: TableMemory) -> TableMemory:
        return TableMemory(
            self.weights + other.weights,
            self.ids + other.ids,
            self.optimizer + other.optimizer,
            self.hash_map + other.hash_map,
            self.metadata + other.metadata,
        )


def sized_table_memory(table: TablePlan) -> TableMemory:
    """Bytes of a mixed-dimension (``band_dims``) or Res-embedding (``clusters``) table, by part.

    Bands (Ginart et al. 2019): band i holds band_rows[i] rows of width band_dims[i] (the last band
    may be a shared tail of fewer rows) and, unless that width is ``dim``, an fp32 projection
    dim x band_dims[i]; a 4-byte popularity rank per row finds a row's band. Res-embedding (Zhou et
    al. 2019): ``rows`` residual rows and clusters + 1 centres of width ``dim``, and an 8-byte
    cluster per row. Ids, hash map and metadata are per id, as in ``table_memory``.

    Example:
        >>> sized_table_memory(TablePlan("item", rows=1000, dim=16, band_dims=[16, 4], band_rows=[100, 900],
        ...                                hash_overhead=0)).weights
        25056
    """
    rows = table.rows
    if table.band_dims:
        band_rows = table.band_rows or [rows // len(table.band_dims) + (i < rows % len(table.band_dims))
                                        for i in range(len(table.band_dims))]
        widths = list(zip(band_rows, table.band_dims))
        projections = sum(table.dim * width * 4 for _, width in widths if width != table.dim)
        weights = sum(n * weight_bytes_per_row(width, table.dtype) for n, width in widths) + projections + rows * 4
        optimizer = sum(n * optimizer_bytes_per_row(width, table.optimizer) for n, width in widths)
    else:
        centres = table.clusters + 1
        weights = (rows + centres) * weight_bytes_per_row(table.dim, table.dtype) + rows * 8
        optimizer = (rows + centres) * optimizer_bytes_per_row(table.dim, table.optimizer)
    return TableMemory(weights=weights, ids=rows * table.id_bytes, optimizer=optimizer,
                       hash_map=math.ceil(rows * table.hash_overhead), metadata=rows * table.metadata_bytes)


def table_memory(table: TablePlan) -> TableMemory:
    """Bytes of one table by part: weights, ids, optimizer state, hash map, eviction metadata."""
    if table.band_dims or table.clusters:
        return sized_table_memory(table)
    return TableMemory(
        weights=table.rows * weight_bytes_per_row(table.dim, table.dtype),
        ids=table.rows * table.id_bytes,
        optimizer=table.rows * optimizer_bytes_per_row(table.dim, table.optimizer),
        hash_map=math.ceil(table.rows * table.hash_overhead),
        metadata=table.rows * table.metadata_bytes,
    )


def plan_memory(plan: MemoryPlan) -> TableMemory:
    """Bytes of all the plan's tables, by part."""
    total = TableMemory(0, 0, 0, 0, 0)
    for table in plan.tables:
        total = total + table_memory(table)
    return total


def hosts_needed(
    plan: MemoryPlan | int,
    host_memory_gb: float | None = None,
    headroom: float | None = None,
) -> int:
    """Hosts of ``host_memory_gb`` GiB needed: ceil(total / (host memory x headroom)), at least 1.

    Args:
        plan: a MemoryPlan, or a total in bytes.
        host_memory_gb: GiB per host (default: the plan's, or 24 for a byte count).
        headroom: share of each host the tables may use (default: the plan's, or 0.8).

    Example:
        >>> hosts_needed(40 * GIB, host_memory_gb=24, headroom=0.8)
        3
    """
    if isinstance(plan, MemoryPlan):
        total = plan_memory(plan).total
        host_memory_gb = plan.host_memory_gb if host_memory_gb is None else host_memory_gb
        headroom = plan.headroom if headroom is None else headroom
    else:
        total = int(plan)
    host_memory_gb = 24.0 if host_memory_gb is None else host_memory_gb
    headroom = 0.8 if headroom is None else headroom
    if host_memory_gb <= 0 or not 0 < headroom <= 1:
        raise ValueError(
            f"expected host_memory_gb > 0 and headroom in (0, 1], got {host_memory_gb} and {headroom}"
        )
    # Whole bytes, rounded down, so that float error never lets a plan squeeze onto one host too few.
    usable = math.floor(host_memory_gb * GIB * headroom)
    return max(1, -(-total // usable))


# ----------------------------------------------------------------------------- report

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def format_bytes(num_bytes: float) -> str:
    """Bytes in binary units (KiB = 1024 B, GiB = 2**30 B, TiB = 2**40 B), three significant digits.

    Example:
        >>> format_bytes(72), format_bytes(8e8), format_bytes(3.2e9), format_bytes(2**40)
        ('72 B', '763 MiB', '2.98 GiB', '1.00 TiB')
    """
    value = float(num_bytes)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in _UNITS[1:]:
        value /= 1024
        if abs(value) < 1024 or unit == _UNITS[-1]:
            decimals = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{decimals}f} {unit}"
    raise AssertionError("unreachable")


def format_count(count: int) -> str:
    """A count in decimal units, three significant digits: 100M, 2.2B, 13.9B.

    Example:
        >>> format_count(999), format_count(100_000_000), format_count(13_888_888_888)
        ('999', '100M', '13.9B')
    """
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


REPORT_COLUMNS = [
    "table", "rows", "dim", "dtype", "optimizer",
    "weights", "ids", "optim", "hash map", "metadata", "total", "B/row",
]  # fmt: skip


def report_rows(plan: MemoryPlan) -> list[list[str]]:
    """The plan as rows of strings under REPORT_COLUMNS: one per table, then ``total``, then ``hosts``.

    The ``hosts`` row gives the number of hosts of ``plan.host_memory_gb`` GiB in the ``total``
    column.
    """

    def cells(memory: TableMemory, rows: int) -> list[str]:
        parts = [memory.weights, memory.ids, memory.optimizer, memory.hash_map, memory.metadata, memory.total]
        per_row = f"{memory.total / rows:.4g}" if rows else "-"
        return [format_bytes(part) for part in parts] + [per_row]

    lines = []
    for table in plan.tables:
        head = [table.name, format_count(table.rows), str(table.dim), table.dtype, table.optimizer]
        lines.append(head + cells(table_memory(table), table.rows))
    total_rows = sum(table.rows for table in plan.tables)
    lines.append(["total", format_count(total_rows), "", "", ""] + cells(plan_memory(plan), total_rows))
    lines.append(["hosts"] + [""] * (len(REPORT_COLUMNS) - 3) + [str(hosts_needed(plan)), ""])
    return lines


def report_table(plan: MemoryPlan, title: str = "embedding memory plan") -> Table:
    """The report as a rich Table (``rich.print(report_table(plan))``); no metadata column when all 0."""
    usable = format_bytes(math.floor(plan.host_memory_gb * GIB * plan.headroom))
    caption = f"hosts of {plan.host_memory_gb:g} GiB, {plan.headroom:.0%} usable ({usable} each)"
    table = Table(title=title, caption=caption)
    keep = [
        i for i, column in enumerate(REPORT_COLUMNS)
        if column != "metadata" or any(t.metadata_bytes for t in plan.tables)
    ]  # fmt: skip
    rows = report_rows(plan)
    for i in keep:
        column = REPORT_COLUMNS[i]
        # On a narrow terminal only the names shrink (with an ellipsis); figures are kept whole.
        shrinks = column in ("table", "optimizer")
        width = max(len(column), *(len(row[i]) for row in rows))
        table.add_column(
            column,
            justify="left" if column in ("table", "dtype", "optimizer") else "right",
            no_wrap=True,
            min_width=5 if shrinks else width,
        )
    for number, row in enumerate(rows):
        if number == len(rows) - 2:
            table.add_section()
        table.add_row(*(row[i] for i in keep))
    return table
