"""Tests for terarec.embedding.planner: bytes per row, per table and per plan, hosts, YAML plans."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from terarec.config import ConfigError, from_dict
from terarec.embedding.planner import (
    GIB,
    MemoryPlan,
    TableMemory,
    TablePlan,
    bytes_per_row,
    format_bytes,
    format_count,
    hash_bytes_per_row,
    hosts_needed,
    load_plan,
    optimizer_bytes_per_row,
    plan_memory,
    report_rows,
    report_table,
    rows_per_bytes,
    table_memory,
    weight_bytes_per_row,
)

TB = 10**12

# ----------------------------------------------------------------------------- the field's arithmetic


def test_16_dim_row_with_its_id_is_72_bytes_in_fp32_and_40_in_fp16() -> None:
    assert bytes_per_row(16, "fp32") == 72  # 16 x 4 + 8
    assert bytes_per_row(16, "fp16") == 40  # 16 x 2 + 8
    assert bytes_per_row(16, "bf16") == 40
    assert bytes_per_row(16, "fp32", include_id=False) == 64


def test_one_terabyte_holds_13_9_to_25_billion_rows() -> None:
    assert rows_per_bytes(TB, 16, "fp32") == 13_888_888_888  # 1e12 / 72
    assert f"{rows_per_bytes(TB, 16, 'fp32') / 1e9:.1f}" == "13.9"
    assert rows_per_bytes(TB, 16, "fp16") == 25_000_000_000  # 1e12 / 40


def test_rows_per_bytes_counts_the_optimizer_and_hash_map_when_asked() -> None:
    # fp16 + id + row-wise Adagrad: 32 + 8 + 4 = 44 B; with the default 32-byte map share: 76 B.
    assert rows_per_bytes(TB, 16, "fp16", optimizer="rowwise_adagrad") == TB // 44
    assert rows_per_bytes(TB, 16, "fp16", optimizer="rowwise_adagrad", hash_overhead=True) == TB // 76
    assert rows_per_bytes(100, 16, "fp16", hash_overhead=10) == 2  # 100 // 50


# ----------------------------------------------------------------------------- per row


@pytest.mark.parametrize(
    ("optimizer", "state_bytes"),
    [("rowwise_adagrad", 4), ("adagrad", 16 * 4), ("adam", 2 * 16 * 4), ("sgd", 0), ("none", 0), (None, 0)],
)
def test_optimizer_state_per_row(optimizer: str | None, state_bytes: int) -> None:
    assert optimizer_bytes_per_row(16, optimizer) == state_bytes
    # State is fp32 whatever the weights are: fp16 weights do not halve it.
    assert bytes_per_row(16, "fp16", optimizer=optimizer) == 40 + state_bytes


@pytest.mark.parametrize(
    ("optimizer", "state_bytes"),
    [("rowwise_adagrad", 1000 * 4), ("adagrad", 1000 * 8 * 4), ("adam", 2 * 1000 * 8 * 4), ("sgd", 0)],
)
def test_optimizer_state_per_table(optimizer: str, state_bytes: int) -> None:
    memory = table_memory(
        TablePlan("t", rows=1000, dim=8, dtype="bf16", optimizer=optimizer, hash_overhead=0)
    )
    assert memory.optimizer == state_bytes
    assert memory.total == 1000 * (8 * 2 + 8) + state_bytes


def test_unknown_optimizer_is_an_error() -> None:
    with pytest.raises(ValueError, match="optimizer: expected one of .*'adagrad'.*got 'adamw'"):
        optimizer_bytes_per_row(16, "adamw")


@pytest.mark.parametrize("dim", [4, 16, 33, 128])
def test_int8_row_is_dim_bytes_plus_fp16_scale_and_bias(dim: int) -> None:
    assert weight_bytes_per_row(dim, "int8") == dim + 4
    assert bytes_per_row(dim, "int8") == dim + 4 + 8


@pytest.mark.parametrize("dim", [4, 16, 33, 128])
def test_row_bytes_match_fbgemm(dim: int) -> None:
    inference = pytest.importorskip("fbgemm_gpu.split_table_batched_embeddings_ops_inference")
    from fbgemm_gpu.split_embedding_configs import SparseType

    for dtype, sparse_type in [
        ("int8", SparseType.INT8),
        ("fp16", SparseType.FP16),
        ("fp32", SparseType.FP32),
    ]:
        assert weight_bytes_per_row(dim, dtype) == inference.unpadded_row_size_in_bytes(dim, sparse_type)


def test_hash_map_bytes_per_row() -> None:
    assert hash_bytes_per_row() == 32.0  # (8-byte key + 8-byte row) / load factor 0.5
    assert hash_bytes_per_row(8, 4, 0.75) == 16.0
    assert bytes_per_row(16, "fp16", hash_overhead=True) == 72
    assert bytes_per_row(16, "fp16", hash_overhead=False) == 40
    assert bytes_per_row(16, "fp16", hash_overhead=12.5) == 52.5
    with pytest.raises(ValueError, match="load_factor"):
        hash_bytes_per_row(load_factor=0)


def test_unknown_dtype_is_an_error() -> None:
    with pytest.raises(ValueError, match="dtype: expected one of .*got 'fp8'"):
        bytes_per_row(16, "fp8")


# ----------------------------------------------------------------------------- tables and plans


def test_100m_row_fp16_d16_table_with_rowwise_adagrad() -> None:
    # The table the issue trains on this 24 GB machine; compare total with its measured RSS.
    table = TablePlan("item", rows=100_000_000, dim=16, dtype="fp16")
    memory = table_memory(table)
    assert memory.weights == 3_200_000_000  # 100M x 16 x 2
    assert memory.ids == 800_000_000  # 100M x 8
    assert memory.optimizer == 400_000_000  # 100M x 4
    assert memory.hash_map == 3_200_000_000  # 100M x 32
    assert memory.total == 7_600_000_000
    assert format_bytes(memory.total) == "7.08 GiB"

    without_map = table_memory(dataclasses.replace(table, hash_overhead=0))
    assert without_map.total == 4_400_000_000
    assert format_bytes(without_map.total) == "4.10 GiB"
    assert hosts_needed(MemoryPlan([table], host_memory_gb=24)) == 1


def test_table_memory_counts_eviction_metadata() -> None:
    memory = table_memory(TablePlan("t", rows=10, dim=4, optimizer="sgd", hash_overhead=0, metadata_bytes=12))
    assert memory == TableMemory(weights=160, ids=80, optimizer=0, hash_map=0, metadata=120)


def test_plan_memory_sums_the_tables() -> None:
    tables = [
        TablePlan("a", rows=10, dim=4, optimizer="sgd", hash_overhead=0),  # 10 x (16 + 8)
        TablePlan("b", rows=5, dim=2, dtype="fp16", optimizer="adam", id_bytes=0),  # 5 x (4 + 16 + 32)
    ]
    memory = plan_memory(MemoryPlan(tables))
    assert memory == TableMemory(weights=180, ids=80, optimizer=80, hash_map=160, metadata=0)
    assert memory.total == 240 + 260


def test_int8_table_needs_no_optimizer() -> None:
    with pytest.raises(ValueError, match="table 'q': dtype int8 is for inference: expected optimizer none"):
        TablePlan("q", rows=10, dim=4, dtype="int8")
    assert table_memory(TablePlan("q", rows=10, dim=4, dtype="int8", optimizer="none")).weights == 80


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": -1}, "rows must be >= 0"),
        ({"dim": 0}, "dim must be >= 1"),
        ({"hash_overhead": -1.0}, "hash_overhead"),
    ],
)
def test_table_plan_rejects_impossible_values(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TablePlan(**{"name": "t", "rows": 10, "dim": 4, **changes})


# ----------------------------------------------------------------------------- hosts


def test_hosts_needed_rounds_up() -> None:
    usable = int(24 * GIB * 0.8)  # 24 GiB is a whole number of bytes; x 0.8 floors to whole bytes
    assert hosts_needed(usable, host_memory_gb=24, headroom=0.8) == 1
    assert hosts_needed(usable + 1, host_memory_gb=24, headroom=0.8) == 2
    assert hosts_needed(3 * usable, host_memory_gb=24, headroom=0.8) == 3
    assert hosts_needed(3 * usable + 1, host_memory_gb=24, headroom=0.8) == 4
    assert hosts_needed(0, host_memory_gb=24) == 1  # a job always runs somewhere
    assert hosts_needed(40 * GIB, host_memory_gb=24, headroom=1.0) == 2


def test_hosts_needed_takes_host_and_headroom_from_the_plan_unless_given() -> None:
    # 1G rows x 72 B = 72e9 B = 67.05 GiB.
    plan = MemoryPlan([TablePlan("t", rows=10**9, dim=16, optimizer="sgd", hash_overhead=0)], 24, 0.8)
    assert plan_memory(plan).total == 72 * 10**9
    assert hosts_needed(plan) == 4  # 67.05 / 19.2 = 3.49
    assert hosts_needed(plan, headroom=1.0) == 3  # 67.05 / 24 = 2.79
    assert hosts_needed(plan, host_memory_gb=64) == 2  # 67.05 / 51.2 = 1.31
    with pytest.raises(ValueError, match="headroom"):
        hosts_needed(plan, headroom=1.5)


# ----------------------------------------------------------------------------- YAML

PLAN_YAML = """\
host_memory_gb: 24
headroom: 0.75
tables:
  - name: item
    rows: 100_000_000
    dim: 16
    dtype: fp16
  - {name: cross, rows: 2_000_000, dim: 8, optimizer: adam, hash_overhead: 0, metadata_bytes: 4}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_plan_from_yaml(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, PLAN_YAML))
    assert plan.host_memory_gb == 24.0 and plan.headroom == 0.75
    assert plan.tables[0] == TablePlan("item", rows=100_000_000, dim=16, dtype="fp16")
    assert plan.tables[1] == TablePlan(
        "cross", rows=2_000_000, dim=8, optimizer="adam", hash_overhead=0.0, metadata_bytes=4
    )


def test_plan_yaml_round_trip(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, PLAN_YAML))
    again = from_dict(MemoryPlan, yaml.safe_load(yaml.safe_dump(dataclasses.asdict(plan))))
    assert again == plan


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("tables:\n  - {name: t, rows: 10, dimm: 4}\n", "tables[0].dimm", "dim"),
        (
            "tables:\n  - {name: t, rows: 10, dim: 4, hash_overheads: 0}\n",
            "tables[0].hash_overheads",
            "hash_overhead",
        ),
        ("host_memory: 24\n", "host_memory", "host_memory_gb"),
    ],
)
def test_unknown_plan_key_names_the_nearest(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_plan(path)
    message = str(error.value)
    assert str(path) in message
    assert f"unknown config key '{key}'" in message
    assert f"did you mean '{suggestion}'" in message


def test_plan_value_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"tables\[0\].dtype: expected one of \['fp32', 'fp16', 'bf16', 'int8'\]"
    ):
        load_plan(write(tmp_path, "tables:\n  - {name: t, rows: 10, dim: 4, dtype: fp64}\n"))
    with pytest.raises(ConfigError, match=r"tables\[0\].rows: expected an integer"):
        load_plan(write(tmp_path, "tables:\n  - {name: t, rows: many, dim: 4}\n"))
    with pytest.raises(ConfigError, match=r"tables\[0\]: table 't': dim must be >= 1"):
        load_plan(write(tmp_path, "tables:\n  - {name: t, rows: 10, dim: 0}\n"))
    with pytest.raises(ConfigError, match=r"names must be unique, repeated: \['t'\]"):
        load_plan(
            write(tmp_path, "tables:\n  - {name: t, rows: 1, dim: 1}\n  - {name: t, rows: 1, dim: 1}\n")
        )
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- report


def test_format_bytes_uses_binary_units() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.00 KiB"
    assert format_bytes(1000 * 2**20) == "1000 MiB"  # a unit is 1024 of the one below, not 1000
    assert format_bytes(800_000_000) == "763 MiB"
    assert format_bytes(3.2e9) == "2.98 GiB"
    assert format_bytes(64 * GIB) == "64.0 GiB"
    assert format_bytes(2**40) == "1.00 TiB"
    assert format_bytes(TB) == "931 GiB"  # a decimal terabyte is 0.91 TiB


def test_format_count() -> None:
    assert [format_count(n) for n in (7, 1500, 100_000_000, 2_200_000_000)] == ["7", "1.5K", "100M", "2.2B"]


def test_report_rows_and_table(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, PLAN_YAML))
    rows = report_rows(plan)
    assert [row[0] for row in rows] == ["item", "cross", "total", "hosts"]
    item, _, total, hosts = rows
    assert item[:5] == ["item", "100M", "16", "fp16", "rowwise_adagrad"]
    assert item[-2:] == ["7.08 GiB", "76"]
    assert total[-2] == format_bytes(plan_memory(plan).total)
    assert hosts[-2] == "1"

    console = Console(record=True, width=160)
    console.print(report_table(plan))
    text = console.export_text()
    assert "7.08 GiB" in text and "metadata" in text and "18.0 GiB each" in text
