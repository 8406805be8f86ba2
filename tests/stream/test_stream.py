"""terarec stream: progressive validation, bounded event-time vocabularies, the source, base bundle + deltas."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from terarec.config import ConfigError
from terarec.data.errors import DataError
from terarec.embedding.eviction import EMPTY
from terarec.features.hashing import hash_array
from terarec.serve.bundle import export_bundle, load_bundle
from terarec.serve.delta import apply_delta
from terarec.stream.loop import resume_stream, stream
from terarec.stream.source import ParquetFolderSource
from terarec.train.experiment import load_config
from terarec.train.loop import load_task
from tests.stream.conftest import DAILY, stream_config_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def streamed(daily_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("streamed")
    config = load_config(stream_config_file(daily_folder, tmp, "run"))
    return stream(config, progress=False), config


def test_each_chunk_is_evaluated_before_training_on_it(streamed) -> None:
    result, _ = streamed
    chunks = result.chunks
    assert [c["name"] for c in chunks] == [f"day-{d:04d}.parquet" for d in range(DAILY.days)]
    # Before any training every id is unknown (default row): one score for all rows, AUC exactly 0.5.
    assert chunks[0]["valid"]["auc"] == 0.5
    assert all(c["valid"]["count"] == DAILY.events_per_day for c in chunks)
    assert chunks[-1]["valid"]["auc"] > 0.55
    rows = (result.run_dir / "chunks.csv").read_text().splitlines()
    assert len(rows) == DAILY.days + 1 and "valid_auc" in rows[0] and "vocab_evicted" in rows[0]
    assert (result.run_dir / "curves.png").exists()


def test_vocabularies_stay_bounded_and_expire_ids_in_event_time(streamed, daily_folder: Path) -> None:
    result, config = streamed
    chunks = result.chunks
    features, capacity = len(config.data.sparse), config.embedding.capacity
    admitted = sum(c["vocab"]["admitted"] for c in chunks)
    evicted = sum(c["vocab"]["evicted"] for c in chunks)
    assert admitted - evicted == chunks[-1]["vocab"]["size"] <= features * capacity
    assert admitted > features * capacity and evicted > 0  # more ids passed than the tables hold: rows reused
    assert all(c["vocab"]["not_admitted"] == 0 for c in chunks)  # min_count 1: every new id gets a row
    # TTL in event time (1.5 days): the item table holds only items seen in the last day and a half.
    vocab = load_task(result.run_dir).model.sparse_arch.vocabularies["item_id"]
    held = vocab.row_ids[vocab.row_ids != EMPTY]
    assert int(vocab.row_last_seen[vocab.row_ids != EMPTY].min()) >= int(vocab.clock) - 1.5 * 86_400
    last_days = pa.concat_tables(pq.read_table(daily_folder / f"day-{d:04d}.parquet", columns=["item_id"])
                                 for d in (DAILY.days - 2, DAILY.days - 1))
    recent = set(hash_array(last_days.column("item_id").combine_chunks(), "item_id").tolist())
    assert held.numel() > 0 and set(held.tolist()) <= recent


def test_base_bundle_and_the_deltas_reproduce_the_full_export(streamed, tmp_path: Path) -> None:
    result, _ = streamed
    deltas = sorted((result.run_dir / "deltas").iterdir())
    assert [d.name for d in deltas] == [f"{n:06d}" for n in range(1, DAILY.days + 1)]
    bundle = load_bundle(result.run_dir / "bundle")
    for delta in deltas:
        bundle = apply_delta(bundle, delta)
    full = load_bundle(export_bundle([result.run_dir], tmp_path / "full", index="exact", catalogue=False, threads=1))
    patched, exported = bundle.ranking.predictor.model.state_dict(), full.ranking.predictor.model.state_dict()
    assert patched.keys() == exported.keys()
    for name, value in exported.items():
        assert torch.equal(patched[name], value), name
    # Each delta holds rows, not whole tables: far smaller than the base.
    sizes = [sum(f.stat().st_size for f in d.iterdir()) for d in deltas]
    assert max(sizes[1:]) < (result.run_dir / "bundle" / "ranking" / "weights.safetensors").stat().st_size


def test_a_run_that_trains_only_the_first_chunk_stays_frozen(daily_folder: Path, tmp_path: Path) -> None:
    config = load_config(stream_config_file(daily_folder, tmp_path, "frozen", stream={"train_chunks": 1,
                                                                                        "max_chunks": 3}))
    chunks = stream(config, progress=False).chunks
    assert [c["trained"] for c in chunks] == [True, False, False]
    assert chunks[1]["vocab"]["admitted"] == 0 and chunks[2]["steps"] == 0


def test_the_folder_source_picks_up_new_files_in_name_order(daily_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "arriving"
    folder.mkdir()
    shutil.copy(daily_folder / "day-0001.parquet", folder / "day-0001.parquet")
    (folder / ".day-0002.parquet.tmp").write_bytes(b"half written")
    waits = []

    def sleep(seconds: float) -> None:  # a new day lands while the source waits
        waits.append(seconds)
        if len(waits) == 1:
            shutil.copy(daily_folder / "day-0000.parquet", folder / "day-0000.parquet")  # too late: skipped
            shutil.copy(daily_folder / "day-0002.parquet", folder / "day-0002.parquet")

    source = ParquetFolderSource(folder, ["item_id", "click"], follow=True, poll_seconds=1.0, idle_seconds=3.0,
                                 sleep=sleep, optional_columns=["user_id", "not_there"])
    first = source.next_chunk(None)
    assert first.name == "day-0001.parquet" and first.table.column_names == ["item_id", "click", "user_id"]
    assert source.next_chunk(first.name).name == "day-0002.parquet"
    assert source.next_chunk("day-0002.parquet") is None and waits == [1.0, 1.0, 1.0, 1.0]
    assert first.table.num_rows == pq.read_metadata(daily_folder / "day-0001.parquet").num_rows


@pytest.mark.parametrize("config_file", sorted((ROOT / "configs" / "stream").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_stream_configs_stream(config_file: Path, daily_folder: Path, tmp_path: Path) -> None:
    overrides = [f"data.path={daily_folder}", f"run_dir={tmp_path}", "embedding.capacity=300", "stream.max_chunks=2",
                 "stream.delta_every=0", "train.threads=1"]
    config = load_config(config_file, overrides)
    if config.task == "ctr":
        config = load_config(config_file, [*overrides, "data.sparse=[user_id,item_id,category,device,hour]"])
    chunks = stream(config, progress=False).chunks
    assert len(chunks) == 2 and chunks[1]["train_loss"] > 0
    if config.task == "ctr":
        assert chunks[1]["valid"]["auc"] > 0.5
    else:  # next-item retrieval: day 2's users ranked from their day-1 clicks
        assert chunks[1]["valid"]["count"] > 0 and 0 <= chunks[1]["valid"]["ndcg@10"] <= 1


def test_a_stream_config_without_managed_capacity_or_of_another_task_is_refused(daily_folder: Path,
                                                                                 tmp_path: Path) -> None:
    config = load_config(stream_config_file(daily_folder, tmp_path, "exact", embedding={"vocabulary": "exact"}))
    with pytest.raises(ConfigError, match="vocabulary: managed and a capacity"):
        stream(config, progress=False)
    config.embedding.vocabulary, config.task = "managed", "ranking"
    with pytest.raises(ConfigError, match="'ranking' is not streamed yet"):
        stream(config, progress=False)


def test_a_missing_source_folder_is_refused_before_a_run_folder_is_made(daily_folder: Path, tmp_path: Path) -> None:
    config = load_config(stream_config_file(daily_folder, tmp_path, "missing"))
    config.data.path = str(tmp_path / "no-such-days")
    with pytest.raises(DataError, match="not a folder of Parquet partitions"):
        stream(config, progress=False, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_deltas_every_two_chunks_across_a_resume_that_picks_up_new_days(daily_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "arriving"
    folder.mkdir()
    for day in range(3):
        shutil.copy(daily_folder / f"day-{day:04d}.parquet", folder)
    first = stream(load_config(stream_config_file(folder, tmp_path, "two", stream={"delta_every": 2})), progress=False)
    assert [d.name for d in sorted((first.run_dir / "deltas").iterdir())] == ["000002"]
    for day in range(3, DAILY.days):  # more days arrive; the run continues after its last chunk
        shutil.copy(daily_folder / f"day-{day:04d}.parquet", folder)
    resumed = resume_stream(first.run_dir, progress=False)
    assert [c["name"] for c in resumed.chunks] == [f"day-{d:04d}.parquet" for d in range(DAILY.days)]
    deltas = sorted((first.run_dir / "deltas").iterdir())
    assert [d.name for d in deltas] == ["000002", "000004", "000006"]
    bundle = load_bundle(first.run_dir / "bundle")
    for delta in deltas:
        bundle = apply_delta(bundle, delta)
    whole = stream(load_config(stream_config_file(daily_folder, tmp_path, "whole", stream={"delta_every": 2})),
                   progress=False)
    expected = load_task(whole.run_dir).model.state_dict()
    patched = bundle.ranking.predictor.model.state_dict()
    assert all(torch.equal(patched[name], value) for name, value in expected.items())
    assert [c["valid"] for c in resumed.chunks] == [c["valid"] for c in whole.chunks]


def test_the_server_applies_the_stream_deltas_in_order(streamed, daily_folder: Path) -> None:
    from fastapi.testclient import TestClient

    from terarec.serve.predictor import Predictor
    from terarec.serve.server import ServerSettings, create_app

    result, _ = streamed
    rows = pq.read_table(daily_folder / f"day-{DAILY.days - 1:04d}.parquet").slice(0, 50)
    body = {"rows": rows.select(["user_id", "item_id", "category", "device"]).to_pylist()}
    expected = Predictor.from_run(result.run_dir).score(rows)["click"]
    deltas = sorted((result.run_dir / "deltas").iterdir())
    app = create_app(ServerSettings(bundle=result.run_dir / "bundle", threads=1))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        before = client.post("/v1/score", json=body).json()["scores"]["click"]
        assert client.post("/admin/delta", json={"path": str(deltas[1])}).status_code == 409  # out of order
        for delta in deltas:
            applied = client.post("/admin/delta", json={"path": str(delta)})
            assert applied.status_code == 200, applied.text
        served = client.post("/v1/score", json=body).json()["scores"]["click"]
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert not np.allclose(before, expected, atol=1e-3)
