"""Sharding plan for a cluster: table shards -> ranks, bytes per rank, all-to-all bytes, step time.

``terarec plan CONFIG --hosts H --nproc-per-host P`` prints it. It speaks TorchRec's notions:

- **Sharding types** (TorchRec's ``ShardingType`` values): ``table_wise`` puts a whole table
  on one rank; ``column_wise`` splits its columns into blocks, each on its own rank;
  ``row_wise`` splits its rows evenly over all ranks. TorchRec 1.8's CPU sharder refuses
  ``row_wise`` (it offers data_parallel, table_wise, column_wise, table_column_wise), so with
  ``device="cpu"`` the plan refuses it too; on GPU it is what a table larger than one rank
  takes.
- **Shard sizes** follow TorchRec's: a column block is the smallest divisor of ``dim`` that
  is a multiple of 4 and at least ``column_shard_dim`` (TorchRec's ``min_partition``; the
  whole ``dim`` when none is); row shards hold ``ceil(rows / W)`` rows, the last one the rest.
  Each column shard is its own fused table, so row-wise Adagrad's one fp32 value per row is
  kept by every column shard.
- **The vocabulary goes with the rows.** A managed vocabulary's ids, hash map and eviction
  metadata are per-row costs: table-wise on the table's rank, row-wise split like the rows,
  column-wise on the rank of the first column shard, which maps ids to rows once.
- **All-to-all per step**, for a per-rank batch of B examples, a table looked up by F
  features of L ids each, dim D and ``comm_bytes`` c per value (fp32 pooled embeddings, 4,
  TorchRec's default; 2 with fp16 / bf16 QComms):

  - input (the KJT's ids and lengths): each rank sends a shard's rank ``B F (8 L + 8)``
    bytes (int64 ids; terarec's KJT lengths are int64 too); a column-wise table's ids go to
    every column shard; row-wise, each rank sends every other ``B F (8 L / W + 8)``.
  - forward (pooled embeddings): table-wise and column-wise, a shard's rank sends each other
    rank ``B F D_shard c``; row-wise, a reduce-scatter of partial sums: every rank sends every
    other ``B F D c``.
  - backward (their gradients): the same bytes the other way (an all-gather row-wise); none
    for ``optimizer: none`` (inference).

- **Step time** = the slowest rank's embedding lookups and fused update + the slowest host's
  network transfer, with no overlap (an upper bound: TorchRec's train pipeline overlaps the
  input all-to-all with compute). Lookups are memory-bound: an id costs 3 reads/writes of its
  row's weights (forward read, fused backward read + write), 2 of its optimizer state and one
  probe of the hash map, each rounded up to 64-byte lines, at ``memory_gbps`` of random
  access per rank. Ids are taken as uniform over rows (hot ids would load one row shard
  more). Traffic between processes of one host (shared memory, NVLink) is counted in bytes
  but not timed; the dense model, activations and the dense all-reduce are not counted.

Example:
    >>> from terarec.embedding.planner import MemoryPlan, TablePlan
    >>> plan = MemoryPlan(tables=[TablePlan("item", rows=1000, dim=16, hash_overhead=0, id_bytes=0)])
    >>> sharded = plan_sharding(plan, world_size=2, sharding="column_wise", column_shard_dim=8)
    >>> [(shard.rank, shard.rows, shard.columns) for shard in sharded.shards]
    [(0, 1000, 8), (1, 1000, 8)]
    >>> [memory.total for memory in sharded.rank_memory]  # 1000 x (8 x 4 + 4)
    [36000, 36000]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rich.table import Table

from terarec.embedding.planner import (
    GIB,
    ID_BYTES,
    MemoryPlan,
    TableMemory,
    TablePlan,
    format_bytes,
    format_count,
    hosts_needed,
    optimizer_bytes_per_row,
    table_memory,
    weight_bytes_per_row,
)

Sharding = Literal["auto", "table_wise", "column_wise", "row_wise"]
Device = Literal["cpu", "gpu"]
SHARDING_TYPES = ("table_wise", "column_wise", "row_wise")  # TorchRec ShardingType values
LENGTH_BYTES = 8  # terarec's KJT lengths are int64
CACHE_LINE = 64
# Random access to rows, GB/s per rank. CPU: BENCHMARKS.md's gather ceiling on this 2-core
# machine (23.3M rows/s of 256 B = 6.0 GB/s). GPU: an assumption, not measured here: about
# 30% of an H100's 3.35 TB/s, for 64-byte random accesses.
MEMORY_GBPS = {"cpu": 6.0, "gpu": 1000.0}
_NO_MEMORY = TableMemory(0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Shard:
    """One table shard on one rank: rows [row_offset, +rows) x columns [column_offset, +columns)."""

    table: str
    sharding: str
    rank: int
    rows: int
    columns: int
    row_offset: int
    column_offset: int
    memory: TableMemory


@dataclass(frozen=True)
class StepTraffic:
    """All-to-all bytes of one training step, by phase (bytes that stay on a rank not counted).

    Attributes:
        input_bytes, forward_bytes, backward_bytes: bytes sent by all ranks together.
        rank_sent_max: the most bytes one rank sends (all phases).
        host_sent_max: the most bytes one host sends to other hosts.
        host_received_max: the most bytes one host receives from other hosts.
    """

    input_bytes: int
    forward_bytes: int
    backward_bytes: int
    rank_sent_max: int
    host_sent_max: int
    host_received_max: int

    @property
    def total(self) -> int:
        return self.input_bytes + self.forward_bytes + self.backward_bytes


@dataclass(frozen=True)
class ShardingPlan:
    """Where a MemoryPlan's tables go on ``hosts x nproc_per_host`` ranks, and what a step costs.

    Attributes:
        shards: every table shard with its rank and bytes.
        sharding: table name -> TorchRec sharding type chosen.
        rank_memory: bytes per rank, by part (weights, ids, optimizer, hash map, metadata).
        rank_budget: bytes a rank may use: host memory x headroom / nproc_per_host.
        traffic: all-to-all bytes of one step.
        compute_s, network_s: the slowest rank's lookups and update; the slowest host's transfer.
        hosts_needed: fewest hosts of this size and nproc_per_host the plan fits on with the
            same sharding choice (None: never, e.g. a table larger than a rank, table-wise).
        assumptions: what the estimate takes for granted, to print beside it.
    """

    hosts: int
    nproc_per_host: int
    device: str
    batch_size: int
    shards: tuple[Shard, ...]
    sharding: dict[str, str]
    rank_memory: tuple[TableMemory, ...]
    rank_budget: int
    traffic: StepTraffic
    compute_s: float
    network_s: float
    hosts_needed: int | None
    assumptions: tuple[str, ...]

    @property
    def world_size(self) -> int:
        return self.hosts * self.nproc_per_host

    @property
    def step_s(self) -> float:
        return self.compute_s + self.network_s

    @property
    def fits(self) -> bool:
        return all(memory.total <= self.rank_budget for memory in self.rank_memory)


# ----------------------------------------------------------------------------- shard shapes


def column_block(dim: int, column_shard_dim: int | None) -> int:
    """Columns of one column-wise shard, as TorchRec cuts them.

    The smallest divisor of ``dim`` that is a multiple of 4 and at least ``column_shard_dim``
    (TorchRec's ``ParameterConstraints.min_partition``; its default is 128); ``dim`` itself
    when there is none.

    Example:
        >>> column_block(16, 8), column_block(16, 5), column_block(16, None), column_block(6, 2)
        (8, 8, 16, 6)
    """
    lower = 128 if column_shard_dim is None else column_shard_dim
    for block in range(max(lower, 1), dim):
        if dim % block == 0 and block % 4 == 0:
            return block
    return dim


def row_split(rows: int, world_size: int) -> list[int]:
    """Rows per rank of a row-wise table: ``ceil(rows / W)`` each, the last ranks the rest.

    Example:
        >>> row_split(1001, 4), row_split(5, 4)
        ([251, 251, 251, 248], [2, 2, 1, 0])
    """
    block = -(-rows // world_size)
    return [max(0, min(block, rows - rank * block)) for rank in range(world_size)]


def _shard_memory(table: TablePlan, rows: int, columns: int, with_vocabulary: bool) -> TableMemory:
    shard = dataclasses.replace(table, rows=rows, dim=columns)
    if not with_vocabulary:
        shard = dataclasses.replace(shard, id_bytes=0, hash_overhead=0, metadata_bytes=0)
    return table_memory(shard)


def _least_loaded(loads: list[int], exclude: set[int] = frozenset()) -> int:
    candidates = [rank for rank in range(len(loads)) if rank not in exclude] or range(len(loads))
    return min(candidates, key=lambda rank: (loads[rank], rank))


def _place_table_wise(table: TablePlan, loads: list[int]) -> list[Shard]:
    rank = _least_loaded(loads)
    memory = table_memory(table)
    loads[rank] += memory.total
    return [Shard(table.name, "table_wise", rank, table.rows, table.dim, 0, 0, memory)]


def _place_column_wise(table: TablePlan, loads: list[int], block: int) -> list[Shard]:
    shards, used = [], set()
    for number in range(table.dim // block):
        rank = _least_loaded(loads, used)
        memory = _shard_memory(table, table.rows, block, with_vocabulary=number == 0)
        loads[rank] += memory.total
        used.add(rank)
        shards.append(Shard(table.name, "column_wise", rank, table.rows, block, 0, number * block, memory))
    return shards


def _place_row_wise(table: TablePlan, loads: list[int]) -> list[Shard]:
    shards, offset = [], 0
    for rank, rows in enumerate(row_split(table.rows, len(loads))):
        memory = _shard_memory(table, rows, table.dim, with_vocabulary=True)
        loads[rank] += memory.total
        shards.append(Shard(table.name, "row_wise", rank, rows, table.dim, offset, 0, memory))
        offset += rows
    return shards


def _column_blocks(dim: int) -> list[int]:
    """The column blocks TorchRec can cut ``dim`` into, widest (fewest shards) first."""
    return sorted({column_block(dim, lower) for lower in range(1, dim + 1)}, reverse=True)


def _place(
    plan: MemoryPlan,
    world_size: int,
    rank_budget: int,
    sharding: str,
    device: str,
    column_shard_dim: int | None,
) -> list[Shard]:
    """Shards of every table, biggest table first, each on the least-loaded ranks."""
    loads = [0] * world_size
    shards: list[Shard] = []
    for table in sorted(plan.tables, key=lambda t: (-table_memory(t).total, t.name)):
        if sharding == "table_wise":
            shards += _place_table_wise(table, loads)
        elif sharding == "column_wise":
            block = column_block(table.dim, column_shard_dim or math.ceil(table.dim / world_size))
            shards += _place_column_wise(table, loads, block)
        elif sharding == "row_wise":
            shards += _place_row_wise(table, loads)
        else:  # auto: whole tables where they fit; else row-wise (GPU) or the fewest column shards that fit
            if min(loads) + table_memory(table).total <= rank_budget or world_size == 1:
                shards += _place_table_wise(table, loads)
            elif device == "gpu":
                shards += _place_row_wise(table, loads)
            else:
                blocks = _column_blocks(table.dim)
                for block in blocks:
                    trial = list(loads)
                    placed = _place_column_wise(table, trial, block)
                    if max(trial) <= rank_budget or block == blocks[-1]:
                        loads[:] = trial
                        shards += placed
                        break
    return shards


def _rank_memory(shards: list[Shard], world_size: int) -> list[TableMemory]:
    memory = [_NO_MEMORY] * world_size
    for shard in shards:
        memory[shard.rank] = memory[shard.rank] + shard.memory
    return memory


def _check(sharding: str, device: str, world_size: int, nproc_per_host: int) -> None:
    if sharding not in ("auto", *SHARDING_TYPES):
        raise ValueError(f"sharding: expected one of {['auto', *SHARDING_TYPES]}, got {sharding!r}")
    if device not in MEMORY_GBPS:
        raise ValueError(f"device: expected one of {list(MEMORY_GBPS)}, got {device!r}")
    if sharding == "row_wise" and device == "cpu":
        raise ValueError(
            "sharding row_wise: TorchRec's CPU sharder offers data_parallel, table_wise, column_wise "
            "and table_column_wise only; plan row_wise with device gpu"
        )
    if world_size < 1 or nproc_per_host < 1 or world_size % nproc_per_host:
        raise ValueError(
            f"expected world_size >= 1 a multiple of nproc_per_host >= 1, got {world_size} and {nproc_per_host}"
        )


def _rank_budget(plan: MemoryPlan, nproc_per_host: int) -> int:
    return math.floor(plan.host_memory_gb * GIB * plan.headroom / nproc_per_host)


def hosts_to_fit(
    plan: MemoryPlan,
    nproc_per_host: int = 1,
    sharding: str = "auto",
    device: str = "cpu",
    column_shard_dim: int | None = None,
    max_hosts: int | None = None,
) -> int | None:
    """Fewest hosts (of ``plan.host_memory_gb``, ``nproc_per_host`` ranks each) the plan fits on.

    Starts from the bytes-only bound (``planner.hosts_needed``) and adds hosts until every
    rank's shards fit its budget; None when none up to ``max_hosts`` (default: 4 x the bound
    + 64) does, as for a table larger than one rank placed table-wise.

    Example:
        >>> from terarec.embedding.planner import MemoryPlan, TablePlan
        >>> plan = MemoryPlan([TablePlan("t", rows=10**9, dim=16)], host_memory_gb=24)
        >>> hosts_to_fit(plan, 1, "table_wise"), hosts_to_fit(plan, 1, "row_wise", device="gpu")
        (None, 6)
    """
    _check(sharding, device, nproc_per_host, nproc_per_host)
    budget = _rank_budget(plan, nproc_per_host)
    lower = hosts_needed(plan)
    for hosts in range(lower, (max_hosts or 4 * lower + 64) + 1):
        world_size = hosts * nproc_per_host
        shards = _place(plan, world_size, budget, sharding, device, column_shard_dim)
        if all(memory.total <= budget for memory in _rank_memory(shards, world_size)):
            return hosts
        if any(_smallest_shard(table, sharding, device) > budget for table in plan.tables):
            return None  # more ranks never make this table's shards smaller
    return None


def _smallest_shard(table: TablePlan, sharding: str, device: str) -> int:
    """Bytes of the smallest shard ``table`` can be cut into, whatever the number of ranks."""
    if sharding == "row_wise" or (sharding == "auto" and device == "gpu"):
        return 0
    if sharding == "table_wise":
        return table_memory(table).total
    return _shard_memory(table, table.rows, _column_blocks(table.dim)[-1], with_vocabulary=True).total


# ----------------------------------------------------------------------------- traffic and time


class _Flows:
    """Bytes each rank sends and receives, in all and across hosts."""

    def __init__(self, world_size: int, nproc_per_host: int) -> None:
        self.host = np.arange(world_size) // nproc_per_host
        self.hosts = world_size // nproc_per_host
        self.sent = np.zeros(world_size)
        self.sent_off_host = np.zeros(world_size)
        self.received_off_host = np.zeros(world_size)

    def all_to_one(self, rank: int, nbytes: float) -> float:
        """Every other rank sends ``nbytes`` to ``rank``; returns the bytes moved."""
        off = self.host != self.host[rank]
        self.sent += nbytes
        self.sent[rank] -= nbytes
        self.sent_off_host += nbytes * off
        self.received_off_host[rank] += nbytes * off.sum()
        return nbytes * (len(self.sent) - 1)

    def one_to_all(self, rank: int, nbytes: float) -> float:
        """``rank`` sends ``nbytes`` to every other rank; returns the bytes moved."""
        off = self.host != self.host[rank]
        self.sent[rank] += nbytes * (len(self.sent) - 1)
        self.sent_off_host[rank] += nbytes * off.sum()
        self.received_off_host += nbytes * off
        return nbytes * (len(self.sent) - 1)

    def all_to_all(self, nbytes: float) -> float:
        """Every rank sends ``nbytes`` to every other rank; returns the bytes moved."""
        world_size = len(self.sent)
        off_host_peers = world_size - world_size // self.hosts
        self.sent += nbytes * (world_size - 1)
        self.sent_off_host += nbytes * off_host_peers
        self.received_off_host += nbytes * off_host_peers
        return nbytes * (world_size - 1) * world_size

    def per_host(self, per_rank: np.ndarray) -> np.ndarray:
        return np.bincount(self.host, weights=per_rank, minlength=self.hosts)


def _lines(nbytes: float) -> int:
    return math.ceil(nbytes / CACHE_LINE) * CACHE_LINE if nbytes else 0


def _bytes_touched_per_id(table: TablePlan, columns: int, with_vocabulary: bool) -> int:
    """Memory traffic of one id on one shard: forward read; fused backward read + write of the
    row and its optimizer state (training only); one hash-map probe (managed vocabulary)."""
    weights = _lines(weight_bytes_per_row(columns, table.dtype))
    state = _lines(optimizer_bytes_per_row(columns, table.optimizer))
    training = table.optimizer != "none"
    probe = CACHE_LINE if with_vocabulary and table.hash_overhead else 0
    return weights + (2 * weights + 2 * state if training else 0) + probe


def _traffic_and_time(
    plan: MemoryPlan,
    shards: list[Shard],
    world_size: int,
    nproc_per_host: int,
    batch_size: int,
    comm_bytes: int,
    memory_gbps: float,
    network_gbps: float,
) -> tuple[StepTraffic, float, float]:
    flows = _Flows(world_size, nproc_per_host)
    touched = np.zeros(world_size)  # memory bytes of lookups and updates per rank
    phases = {"input": 0.0, "forward": 0.0, "backward": 0.0}
    tables = {table.name: table for table in plan.tables}
    for shard in shards:
        table = tables[shard.table]
        bags = batch_size * table.features  # bags per rank per step
        ids = bags * table.pooling_factor
        training = table.optimizer != "none"
        pooled = bags * shard.columns * comm_bytes
        if shard.sharding == "row_wise":
            if shard.rank:  # a row-wise table's collectives are counted once, with its rank-0 shard
                touched[shard.rank] += ids * _bytes_touched_per_id(table, shard.columns, True)
                continue
            phases["input"] += flows.all_to_all(ids * ID_BYTES / world_size + bags * LENGTH_BYTES)
            phases["forward"] += flows.all_to_all(pooled)
            if training:
                phases["backward"] += flows.all_to_all(pooled)
            touched[0] += ids * _bytes_touched_per_id(table, shard.columns, True)
            continue
        phases["input"] += flows.all_to_one(shard.rank, ids * ID_BYTES + bags * LENGTH_BYTES)
        phases["forward"] += flows.one_to_all(shard.rank, pooled)
        if training:
            phases["backward"] += flows.all_to_one(shard.rank, pooled)
        with_vocabulary = shard.column_offset == 0
        touched[shard.rank] += world_size * ids * _bytes_touched_per_id(table, shard.columns, with_vocabulary)
    host_sent = flows.per_host(flows.sent_off_host)
    host_received = flows.per_host(flows.received_off_host)
    traffic = StepTraffic(
        input_bytes=round(phases["input"]),
        forward_bytes=round(phases["forward"]),
        backward_bytes=round(phases["backward"]),
        rank_sent_max=round(flows.sent.max()),
        host_sent_max=round(host_sent.max()),
        host_received_max=round(host_received.max()),
    )
    compute_s = float(touched.max()) / (memory_gbps * 1e9)
    network_s = max(traffic.host_sent_max, traffic.host_received_max) / (network_gbps * 1e9 / 8)
    return traffic, compute_s, network_s


# ----------------------------------------------------------------------------- the plan


def plan_sharding(
    plan: MemoryPlan,
    world_size: int,
    sharding: str = "auto",
    *,
    nproc_per_host: int | None = None,
    batch_size: int = 4096,
    device: str = "cpu",
    network_gbps: float = 100.0,
    memory_gbps: float | None = None,
    comm_bytes: int = 4,
    column_shard_dim: int | None = None,
) -> ShardingPlan:
    """Shard ``plan``'s tables over ``world_size`` ranks; bytes per rank, traffic and step time.

    Args:
        plan: the tables, and the memory of one host (``host_memory_gb``, ``headroom``).
        world_size: ranks in all (hosts x nproc_per_host).
        sharding: ``table_wise``, ``column_wise`` or ``row_wise`` for every table, or ``auto``:
            biggest table first, whole on the least-loaded rank where it fits its budget, else
            row-wise (GPU) or in the fewest column shards that fit (CPU).
        nproc_per_host: ranks per host (default: all on one host); each gets
            ``host_memory_gb x headroom / nproc_per_host``.
        batch_size: examples per rank per step.
        device: ``cpu`` (TorchRec: no row-wise) or ``gpu``.
        network_gbps: network bandwidth of one host, gigabits per second, each way.
        memory_gbps: random-access memory bandwidth of one rank, GB/s (default: MEMORY_GBPS).
        comm_bytes: bytes per pooled-embedding value in the all-to-all (4: fp32; 2: QComms fp16).
        column_shard_dim: TorchRec's ``min_partition`` for column-wise shards (default for
            ``column_wise``: ``ceil(dim / world_size)``, one shard per rank where dim allows).

    Example:
        >>> from terarec.embedding.planner import MemoryPlan, TablePlan
        >>> plan = MemoryPlan([TablePlan("item", rows=1001, dim=16)], host_memory_gb=1)
        >>> sharded = plan_sharding(plan, 4, "row_wise", device="gpu", nproc_per_host=2)
        >>> [shard.rows for shard in sharded.shards], sharded.hosts, sharded.sharding
        ([251, 251, 251, 248], 2, {'item': 'row_wise'})
    """
    nproc_per_host = world_size if nproc_per_host is None else nproc_per_host
    _check(sharding, device, world_size, nproc_per_host)
    if batch_size < 1 or network_gbps <= 0 or comm_bytes < 1 or (memory_gbps is not None and memory_gbps <= 0):
        raise ValueError(
            "expected batch_size >= 1, network_gbps > 0, comm_bytes >= 1 and memory_gbps > 0, got "
            f"{batch_size}, {network_gbps}, {comm_bytes} and {memory_gbps}"
        )
    memory_gbps = MEMORY_GBPS[device] if memory_gbps is None else memory_gbps
    budget = _rank_budget(plan, nproc_per_host)
    shards = _place(plan, world_size, budget, sharding, device, column_shard_dim)
    traffic, compute_s, network_s = _traffic_and_time(
        plan, shards, world_size, nproc_per_host, batch_size, comm_bytes, memory_gbps, network_gbps
    )
    value = {4: "fp32", 2: "fp16/bf16"}.get(comm_bytes, f"{comm_bytes}-byte")
    assumptions = (
        f"{batch_size} examples per rank per step; ids uniform over rows; {value} pooled embeddings on the wire",
        f"lookups + fused update at {memory_gbps:g} GB/s of random access per rank "
        f"({'measured gather ceiling, BENCHMARKS.md' if memory_gbps == MEMORY_GBPS['cpu'] and device == 'cpu' else 'assumed'}); "
        "64-byte lines; forward read + backward read/write",
        f"{network_gbps:g} Gb/s per host each way; traffic inside a host not timed; no compute/network overlap",
        "not counted: dense model, activations, dense all-reduce, runtime",
    )
    return ShardingPlan(
        hosts=world_size // nproc_per_host,
        nproc_per_host=nproc_per_host,
        device=device,
        batch_size=batch_size,
        shards=tuple(shards),
        sharding={shard.table: shard.sharding for shard in shards},
        rank_memory=tuple(_rank_memory(shards, world_size)),
        rank_budget=budget,
        traffic=traffic,
        compute_s=compute_s,
        network_s=network_s,
        hosts_needed=hosts_to_fit(plan, nproc_per_host, sharding, device, column_shard_dim),
        assumptions=assumptions,
    )


# ----------------------------------------------------------------------------- report


def format_ranks(ranks: list[int]) -> str:
    """Ranks as compact ranges.

    Example:
        >>> format_ranks([0, 1, 2, 5, 7, 8])
        '0-2, 5, 7-8'
    """
    parts, start = [], None
    for i, rank in enumerate(ranks):
        if start is None:
            start = rank
        if i + 1 == len(ranks) or ranks[i + 1] != rank + 1:
            parts.append(str(start) if start == rank else f"{start}-{rank}")
            start = None
    return ", ".join(parts)


def _format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def sharding_report(sharded: ShardingPlan) -> list[Table | str]:
    """The plan as rich Tables (shards by table, memory by rank with equal neighbours merged,
    one step), then the estimate's assumptions as lines."""
    title = (
        f"sharding plan: {sharded.hosts} hosts x {sharded.nproc_per_host} processes = "
        f"{sharded.world_size} ranks ({sharded.device})"
    )
    by_table = Table(title=title)
    for column in ("table", "sharding", "shards", "rows x cols", "ranks", "bytes per shard"):
        by_table.add_column(column, justify="left" if column in ("table", "sharding", "ranks") else "right")
    for name, sharding in sharded.sharding.items():
        shards = [shard for shard in sharded.shards if shard.table == name]
        sizes = sorted({shard.memory.total for shard in shards})
        shapes = sorted({(shard.rows, shard.columns) for shard in shards}, reverse=True)
        by_table.add_row(
            name,
            sharding,
            str(len(shards)),
            ", ".join(dict.fromkeys(f"{format_count(rows)} x {columns}" for rows, columns in shapes)),
            format_ranks(sorted({shard.rank for shard in shards})),
            " - ".join(dict.fromkeys(format_bytes(size) for size in (sizes[0], sizes[-1]))),
        )

    usable = format_bytes(sharded.rank_budget)
    by_rank = Table(title="memory per rank", caption=f"{usable} usable per rank")
    with_metadata = any(memory.metadata for memory in sharded.rank_memory)
    for column in ("ranks", "weights", "ids", "optim", "hash map", "metadata", "total", "of usable"):
        if column != "metadata" or with_metadata:
            by_rank.add_column(column, justify="left" if column == "ranks" else "right")
    groups: list[tuple[list[int], list[str]]] = []  # neighbours whose printed figures agree
    for rank, memory in enumerate(sharded.rank_memory):
        parts = (memory.weights, memory.ids, memory.optimizer, memory.hash_map)
        parts += (memory.metadata, memory.total) if with_metadata else (memory.total,)
        share = f"{memory.total / sharded.rank_budget:.0%}" if sharded.rank_budget else "-"
        cells = [format_bytes(part) for part in parts] + [share]
        if groups and groups[-1][1] == cells:
            groups[-1][0].append(rank)
        else:
            groups.append(([rank], cells))
    for ranks, cells in groups:
        by_rank.add_row(format_ranks(ranks), *cells)

    traffic = sharded.traffic
    step = Table(title=f"one step ({sharded.batch_size} examples per rank)", show_header=False)
    step.add_column("what")
    step.add_column("value", justify="right")
    hosts = "never" if sharded.hosts_needed is None else str(sharded.hosts_needed)
    fits = "yes" if sharded.fits else "NO: a rank is over its budget"
    rows = [
        ("all-to-all: ids + lengths", format_bytes(traffic.input_bytes)),
        ("all-to-all: pooled embeddings (forward)", format_bytes(traffic.forward_bytes)),
        ("all-to-all: their gradients (backward)", format_bytes(traffic.backward_bytes)),
        ("all-to-all: in all", format_bytes(traffic.total)),
        ("most sent by one rank", format_bytes(traffic.rank_sent_max)),
        ("most sent / received by one host off-host",
         f"{format_bytes(traffic.host_sent_max)} / {format_bytes(traffic.host_received_max)}"),
        ("embedding compute (slowest rank)", _format_seconds(sharded.compute_s)),
        ("network (slowest host)", _format_seconds(sharded.network_s)),
        ("estimated step time", _format_seconds(sharded.step_s)),
        ("fits these hosts", fits),
        ("hosts needed (this host size and sharding)", hosts),
    ]  # fmt: skip
    for what, value in rows:
        step.add_row(what, value)
    return [by_table, by_rank, step, *(f"assumes: {line}" for line in sharded.assumptions)]
