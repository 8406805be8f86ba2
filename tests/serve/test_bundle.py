"""Export and load of serving bundles: what loads answers like the run it came from; what is broken
is refused with the file named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from terarec.serve import Predictor
from terarec.serve.bundle import (BLAS_QUERIES, BundleError, BundlePart, build_index, export_bundle, load_bundle,
                                  recall)


@pytest.fixture(scope="module")
def bundle_dir(serve_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    return export_bundle([serve_runs["retrieval"], serve_runs["ranking"]], out, threads=1)


def _history(data: Path) -> np.ndarray:
    table = pq.read_table(sorted(data.glob("part-*.parquet"))[0], columns=["user_id", "item_id", "timestamp"])
    mine = table.filter(pc.equal(table.column("user_id"), table.column("user_id")[0])).sort_by("timestamp")
    return mine.column("item_id").to_numpy()


def test_bundle_answers_as_the_run(bundle_dir: Path, serve_runs: dict[str, Path]) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert set(manifest["parts"]) == {"retrieval", "ranking"}
    assert not list(bundle_dir.rglob("*.pt")) and not list(bundle_dir.rglob("*.pkl"))
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    bundle = load_bundle(bundle_dir, threads=1)
    offline = Predictor.from_run(serve_runs["retrieval"], threads=1)
    history = _history(serve_runs["data"])
    items, scores = offline.recommend(history, k=10, exclude_seen=False)
    part = bundle.retrieval
    found_scores, rows = part.index.search(part.predictor.user_vectors([history]), 10)
    np.testing.assert_array_equal(part.item_raw_ids[rows[0]], items)
    np.testing.assert_allclose(found_scores[0], scores, atol=1e-5)
    assert part.index.ntotal == offline.task.record["item_raw_ids"].numel()
    catalogue = bundle.ranking.catalogue
    assert catalogue.column_names == ["item_id", "category", "hour", "device"]
    assert catalogue.num_rows == pc.count_distinct(catalogue.column("item_id")).as_py()


def test_ctr_bundle_keeps_only_features_fixed_per_item(serve_runs: dict[str, Path], tmp_path: Path) -> None:
    bundle = load_bundle(export_bundle([serve_runs["ctr"]], tmp_path / "ctr"), threads=1)
    # price and category belong to the item in the synthetic log; hour, device and the user's do not
    assert set(bundle.ranking.catalogue.column_names) == {"item_id", "category", "price"}
    assert bundle.retrieval is None


@pytest.mark.parametrize("damage", ["missing", "checksum", "version", "no-manifest"])
def test_broken_bundle_is_refused_naming_the_file(bundle_dir: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if damage == "missing":
        (copy / "retrieval" / "index.faiss").unlink()
        expected = "index.faiss: missing"
    elif damage == "checksum":
        weights = copy / "ranking" / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        expected = "weights.safetensors: sha256 mismatch"
    elif damage == "version":
        manifest["terarec_version"] = "9.0.0"
        (copy / "manifest.json").write_text(json.dumps(manifest))
        expected = "manifest.json: written by terarec 9.0.0"
    else:
        (copy / "manifest.json").unlink()
        expected = "manifest.json: missing"
    with pytest.raises(BundleError, match=expected):
        load_bundle(copy)


def test_export_refuses_two_runs_of_one_role_and_an_existing_folder(serve_runs: dict[str, Path],
                                                                    bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both ranking runs"):
        export_bundle([serve_runs["ranking"], serve_runs["ctr"]], tmp_path / "two")
    with pytest.raises(FileExistsError, match="exists"):
        export_bundle([serve_runs["ranking"]], bundle_dir)
    assert not (tmp_path / "two").exists()


def test_hnsw_search_parameter_reaches_the_recall_target() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, described = build_index(vectors, "hnsw")
    assert described["kind"] == "hnsw" and described["recall@100"] >= 0.95
    assert index.hnsw.efSearch == described["ef_search"]
    failing = [int(ef) for ef, value in described["recall_by_ef_search"].items() if value < 0.95]
    assert all(ef < described["ef_search"] for ef in failing)  # the smallest passing value measured
    assert max(failing, default=0) >= described["ef_search"] * 7 / 8 - 8  # bisected close to the target
    exact, _ = build_index(vectors, "exact")
    queries = vectors[:50] + 0.1
    _, truth = exact.search(queries, 100)
    _, found = index.search(queries, 100)
    assert recall(found, truth) >= 0.9  # fresh queries: near the measured recall, not tuned on them
    assert build_index(vectors, "auto")[1]["kind"] == "exact"  # small catalogues stay exact


def test_exact_search_of_a_batch_equals_each_query_alone() -> None:
    """A batch of ``BLAS_QUERIES`` or more goes through faiss's matrix product, a single query through
    its scan: the same neighbours, scores equal up to float rounding, and the brute-force top k."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    index, _ = build_index(vectors, "exact")
    part = BundlePart("retrieval", predictor=None, schema={}, item_raw_ids=np.arange(3000), index=index)
    queries = rng.normal(size=(BLAS_QUERIES + 3, 16)).astype(np.float32)
    scores, positions = part.search(queries, 50)
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(positions, truth)
    for row, query in enumerate(queries):
        alone_scores, alone_positions = part.search(query[None], 50)
        np.testing.assert_array_equal(alone_positions[0], positions[row])
        np.testing.assert_allclose(alone_scores[0], scores[row], atol=1e-5)


def test_export_command_writes_a_loadable_bundle(serve_runs: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from terarec.cli import app

    result = CliRunner().invoke(app, ["export", str(serve_runs["retrieval"]), "--out", str(tmp_path / "b"),
                                      "--index", "exact", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote bundle" in result.output and "'kind': 'exact'" in result.output
    again = CliRunner().invoke(app, ["export", str(serve_runs["retrieval"]), "--out", str(tmp_path / "b")])
    assert again.exit_code != 0 and "exists" in again.output


def test_a_managed_vocabulary_run_scores_the_same_from_its_bundle(serve_runs: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow as pa

    from terarec.train.experiment import load_config
    from terarec.train.loop import train

    data = serve_runs["data"]
    config = load_config(None, ["name=managed", "task=ctr", f"data.path={data}", f"run_dir={tmp_path}",
                                "model={name: embedding_mlp, embedding_dim: 8, hidden: [16]}",
                                "data.sparse=[user_id, item_id, category]", "data.labels=[click]",
                                "embedding.vocabulary=managed", "embedding.optimizer=rowwise_adagrad", "train.epochs=1", "train.threads=1"])
    run = train(config, progress=False, run_dir=tmp_path / "run").run_dir
    bundle = load_bundle(export_bundle([run], tmp_path / "bundle"), threads=1)
    rows = pq.read_table(sorted(data.glob("part-*.parquet"))[0]).slice(0, 200)
    expected = Predictor.from_run(run, threads=1).score(rows)["click"]
    np.testing.assert_array_equal(bundle.ranking.predictor.score(pa.Table.from_batches(rows.to_batches()))["click"],
                                  expected)
    names = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["files"]
    assert "ranking/weights.safetensors" in names
