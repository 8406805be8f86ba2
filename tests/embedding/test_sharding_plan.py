"""Tests for terarec.embedding.sharding_plan: shards, bytes per rank, traffic, step time, hosts.

The oracles: hand-computed bytes, TorchRec's own planner (shard shapes and ranks), and a
TorchRec DistributedModelParallel over 2 gloo processes (the bytes each rank really holds).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from terarec.embedding.planner import MemoryPlan, TablePlan, table_memory
from terarec.embedding.sharding_plan import (
    column_block,
    hosts_to_fit,
    plan_sharding,
    row_split,
    sharding_report,
)


def direct(name: str, rows: int, dim: int, **fields) -> TablePlan:
    """A table indexed directly: no vocabulary ids, no hash map."""
    return TablePlan(name, rows=rows, dim=dim, id_bytes=0, hash_overhead=0, **fields)


# ----------------------------------------------------------------------------- shard shapes and bytes


def test_column_blocks_follow_torchrec_min_partition() -> None:
    assert [column_block(16, lower) for lower in (1, 4, 5, 8, 9, 16, 128)] == [4, 4, 8, 8, 16, 16, 16]
    assert column_block(96, 40) == 48  # smallest divisor >= 40 that is a multiple of 4
    assert column_block(6, 1) == 6  # no multiple of 4 divides 6: the whole dim


def test_row_split_puts_ceil_rows_on_each_rank_and_the_rest_last() -> None:
    assert row_split(10, 4) == [3, 3, 3, 1]
    assert sum(row_split(13_888_888_888, 32)) == 13_888_888_888


def test_column_wise_keeps_the_vocabulary_once_and_rowwise_adagrad_per_shard() -> None:
    plan = MemoryPlan([TablePlan("item", rows=1000, dim=16)])  # fp32, row-wise Adagrad, id + map
    sharded = plan_sharding(plan, 2, "column_wise")
    assert [(s.rank, s.rows, s.columns, s.column_offset) for s in sharded.shards] == [(0, 1000, 8, 0), (1, 1000, 8, 8)]
    # rank 0: 8 fp32 + 4 (Adagrad) + 8 (id) + 32 (map) per row; rank 1: 8 fp32 + 4.
    assert [memory.total for memory in sharded.rank_memory] == [1000 * 76, 1000 * 36]
    # Column shards duplicate the row-wise state: 4 B a row more than the unsharded table.
    assert sum(m.total for m in sharded.rank_memory) == table_memory(plan.tables[0]).total + 1000 * 4


def test_row_wise_splits_every_per_row_cost_with_the_rows() -> None:
    table = TablePlan("item", rows=1001, dim=16, metadata_bytes=4)
    sharded = plan_sharding(MemoryPlan([table]), 4, "row_wise", device="gpu")
    assert [s.rows for s in sharded.shards] == [251, 251, 251, 248]
    per_row = table_memory(table).total / 1001
    assert [m.total for m in sharded.rank_memory] == [rows * per_row for rows in (251, 251, 251, 248)]


def test_table_wise_places_the_biggest_table_first_on_the_least_loaded_rank() -> None:
    plan = MemoryPlan([direct("a", 1000, 8), direct("b", 1000, 64), direct("c", 1000, 32), direct("d", 1000, 16)])
    sharded = plan_sharding(plan, 2, "table_wise")
    assert {s.table: s.rank for s in sharded.shards} == {"b": 0, "c": 1, "d": 1, "a": 1}
    assert [m.weights for m in sharded.rank_memory] == [1000 * 64 * 4, 1000 * 56 * 4]


def test_row_wise_on_cpu_is_refused_as_torchrec_does() -> None:
    plan = MemoryPlan([direct("a", 10, 4)])
    with pytest.raises(ValueError, match="row_wise: TorchRec's CPU sharder offers .*device gpu"):
        plan_sharding(plan, 2, "row_wise")
    with pytest.raises(ValueError, match="sharding: expected one of .*got 'rows'"):
        plan_sharding(plan, 2, "rows")
    with pytest.raises(ValueError, match="multiple of nproc_per_host"):
        plan_sharding(plan, 3, nproc_per_host=2)


def test_auto_keeps_small_tables_whole_and_splits_the_big_one() -> None:
    gib = 2**30
    tables = [direct("big", 10_000_000, 16), direct("small", 1000, 16), direct("mid", 1000, 32)]
    plan = MemoryPlan(tables, host_memory_gb=1, headroom=1.0)
    on_gpu = plan_sharding(plan, 8, device="gpu", nproc_per_host=4)  # 256 MiB a rank; big is 640 MB
    assert on_gpu.rank_budget == gib // 4
    assert on_gpu.sharding == {"big": "row_wise", "mid": "table_wise", "small": "table_wise"}
    assert on_gpu.fits
    # CPU: no row-wise; the fewest column shards that fit: 4 of 4 columns (160 MB each).
    on_cpu = plan_sharding(plan, 8, device="cpu", nproc_per_host=4)
    assert on_cpu.sharding == {"big": "column_wise", "mid": "table_wise", "small": "table_wise"}
    assert sorted(s.columns for s in on_cpu.shards if s.table == "big") == [4, 4, 4, 4]
    assert on_cpu.fits
    # Ten times the rows: 1.6 GB a column shard, over any rank's budget, and the plan says so.
    bigger = MemoryPlan([direct("big", 100_000_000, 16)], host_memory_gb=1, headroom=1.0)
    assert not plan_sharding(bigger, 8, device="cpu", nproc_per_host=4).fits
    assert plan_sharding(bigger, 8, device="cpu", nproc_per_host=4).hosts_needed is None


def test_hosts_to_fit() -> None:
    big = TablePlan("t", rows=10**9, dim=16)  # 108 GB with Adagrad, id and map
    plan = MemoryPlan([big], host_memory_gb=24, headroom=0.8)
    assert hosts_to_fit(plan, 1, "table_wise") is None  # one table never fits one host
    # Row-wise: ceil(108e9 / (24 GiB x 0.8)) = 6 hosts; with 2 ranks a host, still 6.
    assert hosts_to_fit(plan, 1, "row_wise", device="gpu") == 6
    assert hosts_to_fit(plan, 2, "row_wise", device="gpu") == 6
    assert plan_sharding(plan, 6, "row_wise", device="gpu", nproc_per_host=1).fits
    assert not plan_sharding(plan, 5, "row_wise", device="gpu", nproc_per_host=1).fits


# ----------------------------------------------------------------------------- traffic and time


def test_table_wise_traffic_and_compute_by_hand() -> None:
    table = direct("a", 1000, 16, features=2, pooling_factor=3)
    sharded = plan_sharding(MemoryPlan([table]), 2, "table_wise", batch_size=10, memory_gbps=1)
    traffic = sharded.traffic
    assert traffic.input_bytes == 10 * 2 * (3 * 8 + 8)  # rank 1 sends its ids and lengths to rank 0
    assert traffic.forward_bytes == 10 * 2 * 16 * 4  # rank 0 sends rank 1 its pooled embeddings
    assert traffic.backward_bytes == traffic.forward_bytes
    assert traffic.rank_sent_max == 640 + 1280
    assert traffic.host_sent_max == 0 and sharded.network_s == 0  # one host
    # Rank 0 looks up both ranks' 2 x 10 x 2 x 3 ids: 64 B row read 3 times + Adagrad's line twice.
    assert sharded.compute_s == pytest.approx(120 * (3 * 64 + 2 * 64) / 1e9)


def test_inference_tables_have_no_backward() -> None:
    table = direct("a", 1000, 16, optimizer="none", dtype="int8")
    assert plan_sharding(MemoryPlan([table]), 2, "table_wise").traffic.backward_bytes == 0


def test_row_wise_traffic_across_two_hosts_by_hand() -> None:
    table = direct("a", 1000, 16, pooling_factor=4)
    sharded = plan_sharding(
        MemoryPlan([table]), 4, "row_wise", device="gpu", nproc_per_host=2, batch_size=10, network_gbps=1
    )
    pair_input = 10 * 4 * 8 / 4 + 10 * 8  # a quarter of the ids, every length
    pair_pooled = 10 * 16 * 4  # reduce-scatter forward, all-gather backward
    traffic = sharded.traffic
    assert traffic.input_bytes == 12 * pair_input
    assert traffic.forward_bytes == traffic.backward_bytes == 12 * pair_pooled
    # Each host's 2 ranks send to the other host's 2 ranks.
    assert traffic.host_sent_max == traffic.host_received_max == 4 * (pair_input + 2 * pair_pooled)
    assert sharded.network_s == pytest.approx(traffic.host_sent_max / (1e9 / 8))
    assert sharded.step_s == pytest.approx(sharded.compute_s + sharded.network_s)


def test_fp16_comms_halve_the_embedding_traffic() -> None:
    plan = MemoryPlan([direct("a", 1000, 16)])
    fp32 = plan_sharding(plan, 2, "column_wise").traffic
    fp16 = plan_sharding(plan, 2, "column_wise", comm_bytes=2).traffic
    assert fp16.forward_bytes * 2 == fp32.forward_bytes and fp16.input_bytes == fp32.input_bytes


# ----------------------------------------------------------------------------- TorchRec's planner


def torchrec_shards(tables: list[TablePlan], world_size: int, sharding: str, device: str, min_partition=None):
    """(table, rank, rows, columns) of every shard in the plan TorchRec's planner makes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrec")
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

    collection = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=t.name, embedding_dim=t.dim, num_embeddings=t.rows, feature_names=[t.name])
            for t in tables
        ],
        device=torch.device("meta"),
    )
    constraints = {
        t.name: ParameterConstraints(sharding_types=[sharding], compute_kernels=["fused"], min_partition=min_partition)
        for t in tables
    }
    topology = Topology(world_size=world_size, compute_device="cuda" if device == "gpu" else "cpu")
    sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            plan = EmbeddingShardingPlanner(topology=topology, constraints=constraints).plan(collection, [sharder])
        finally:
            logging.disable(logging.NOTSET)
    return sorted(
        (name, shard.placement.rank(), *shard.shard_sizes)
        for name, parameter in plan.plan[""].items()
        for shard in parameter.sharding_spec.shards
    )


def ours(tables: list[TablePlan], world_size: int, sharding: str, device: str, column_shard_dim=None):
    sharded = plan_sharding(MemoryPlan(tables), world_size, sharding, device=device, column_shard_dim=column_shard_dim)
    return sorted((s.table, s.rank, s.rows, s.columns) for s in sharded.shards)


@pytest.mark.parametrize(
    ("tables", "world_size", "sharding", "device", "min_partition"),
    [
        ([direct("a", 1000, 16), direct("b", 3000, 32)], 2, "column_wise", "cpu", 8),
        ([direct("a", 1000, 16), direct("b", 3000, 32)], 4, "column_wise", "cpu", 4),
        ([direct("a", 1000, 16), direct("b", 3000, 16)], 2, "table_wise", "cpu", None),
        ([direct("a", 1000, 16), direct("b", 3000, 16), direct("c", 2000, 16)], 3, "table_wise", "cpu", None),
        ([direct("a", 1001, 16), direct("b", 10, 8)], 4, "row_wise", "gpu", None),
    ],
)
def test_shards_agree_with_torchrec_planner(tables, world_size, sharding, device, min_partition) -> None:
    expected = torchrec_shards(tables, world_size, sharding, device, min_partition)
    got = ours(tables, world_size, sharding, device, min_partition)
    if sharding == "table_wise":  # rank numbers are arbitrary: compare which tables share a rank
        def groups(shards):
            by_rank: dict[int, set] = {}
            for name, rank, *_ in shards:
                by_rank.setdefault(rank, set()).add(name)
            return sorted(sorted(names) for names in by_rank.values())

        assert groups(got) == groups(expected)
        assert sorted((name, rows, cols) for name, _, rows, cols in got) == sorted(
            (name, rows, cols) for name, _, rows, cols in expected
        )
    else:
        assert got == expected


# ----------------------------------------------------------------------------- DistributedModelParallel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shard_bytes_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One gloo rank: shard an EBC column-wise with DMP and write the bytes it holds."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    configs = [
        EmbeddingBagConfig(name="item", embedding_dim=16, num_embeddings=20_000, feature_names=["item"]),
        EmbeddingBagConfig(name="user", embedding_dim=32, num_embeddings=5_000, feature_names=["user"]),
    ]
    collection = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    constraints = {
        c.name: ParameterConstraints(sharding_types=["column_wise"], compute_kernels=["fused"], min_partition=c.embedding_dim // 2)
        for c in configs
    }
    sharder = EmbeddingBagCollectionSharder(
        fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.1}
    )
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world_size, compute_device="cpu"), constraints=constraints)
    model = DistributedModelParallel(
        collection,
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        device=torch.device("cpu"),
        plan=planner.plan(collection, [sharder]),
        sharders=[sharder],
    )

    def local_bytes(value) -> int:
        shards = value.local_shards() if hasattr(value, "local_shards") else []
        return sum(shard.tensor.numel() * shard.tensor.element_size() for shard in shards)

    weights = sum(local_bytes(value) for value in model.state_dict().values())
    state = model.fused_optimizer.state_dict()["state"]
    optimizer = sum(local_bytes(value) for per_param in state.values() for value in per_param.values())
    Path(out, f"rank{rank}.json").write_text(json.dumps({"weights": weights, "optimizer": optimizer}))
    dist.destroy_process_group()


def test_dmp_column_wise_shards_hold_the_bytes_the_plan_says(tmp_path: Path) -> None:
    pytest.importorskip("torchrec")
    world_size, port = 2, _free_port()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_shard_bytes_worker, args=(rank, world_size, port, str(tmp_path)))
        for rank in range(world_size)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    assert all(worker.exitcode == 0 for worker in workers), [worker.exitcode for worker in workers]

    plan = MemoryPlan([direct("item", 20_000, 16), direct("user", 5_000, 32)])
    sharded = plan_sharding(plan, world_size, "column_wise")
    for rank in range(world_size):
        measured = json.loads((tmp_path / f"rank{rank}.json").read_text())
        planned = sharded.rank_memory[rank]
        assert measured["weights"] == pytest.approx(planned.weights, rel=0.1)
        assert measured["optimizer"] == pytest.approx(planned.optimizer, rel=0.1)
        assert measured["weights"] + measured["optimizer"] == pytest.approx(planned.total, rel=0.1)


# ----------------------------------------------------------------------------- report and CLI


def test_report_and_cli(tmp_path: Path) -> None:
    from terarec.cli import app

    config = tmp_path / "plan.yaml"
    config.write_text("host_memory_gb: 1\ntables:\n  - {name: item, rows: 100_000_000, dim: 16, features: 2}\n")
    runner = CliRunner()
    alone = runner.invoke(app, ["plan", str(config)])
    assert alone.exit_code == 0 and "embedding memory plan" in alone.output and "sharding plan" not in alone.output
    result = runner.invoke(
        app, ["plan", str(config), "--hosts", "3", "--nproc-per-host", "2", "--host-memory", "64", "--device", "gpu"]
    )
    assert result.exit_code == 0, result.output
    assert "3 hosts x 2 processes = 6 ranks (gpu)" in result.output
    assert "row_wise" not in result.output  # 10.1 GB fits a rank of 25.6 GiB whole
    assert "hosts needed" in result.output and "assumes:" in result.output
    refused = runner.invoke(app, ["plan", str(config), "--hosts", "2", "--sharding", "row_wise"])
    assert refused.exit_code == 2 and "row_wise" in refused.output
    parts = sharding_report(plan_sharding(MemoryPlan([direct("a", 10, 4)]), 2, "column_wise"))
    assert isinstance(parts[-1], str) and parts[-1].startswith("assumes:")
