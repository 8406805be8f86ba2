"""Serving bundles: trained runs exported as plain files (no pickle) with a checked manifest.

``export_bundle([RUN, ...], BUNDLE)`` writes, for each run, a *part* named by its role: a
sequential run is the ``retrieval`` part, a CTR or ranking run the ``ranking`` part (one of each
at most). A bundle folder holds::

    manifest.json                  format, terarec version, parts (task, model, schema), sha256 of every file
    <part>/config.yaml             the run's resolved config
    <part>/weights.safetensors     the model's state dict (tables, managed-vocabulary buffers included)
    <part>/inputs.safetensors      the model-input record (vocabularies; the catalogue's raw item ids)
    retrieval/items.safetensors    raw item ids and unit item vectors of catalogue rows 1..N
    retrieval/index.faiss          a faiss inner-product index over those vectors (exact or HNSW)
    ranking/catalogue.parquet      the items' feature values (last seen in the run's data), if any

``load_bundle(BUNDLE)`` checks the manifest's format and version and every file's sha256 before
reading anything, then rebuilds each part's ``Predictor``; a missing file, a checksum mismatch or
an incompatible version is a ``BundleError`` naming the file.

Example:
    >>> bundle = load_bundle("bundles/demo")  # doctest: +SKIP
    >>> bundle.retrieval.predictor.kind, bundle.index_info["kind"]  # doctest: +SKIP
    ('sequential', 'exact')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import terarec
from terarec.config import to_yaml
from terarec.data import schema
from terarec.data.schema import DatasetMeta
from terarec.models import check_model_options
from terarec.serve.predictor import Predictor
from terarec.train.loop import load_task, task_from_saved
from terarec.train.setup import feature_spec, set_threads
from terarec.train.tasks import RankingTask, Task

BUNDLE_FORMAT = "terarec.bundle.v1"
MANIFEST = "manifest.json"
ROLES = {"sequential": "retrieval", "ctr": "ranking", "ranking": "ranking"}
# Catalogues at least this large get an HNSW index (exact search stays fast below it).
HNSW_FROM_ITEMS = 200_000
HNSW_EF_SEARCH = (32, 64, 128, 256, 512, 1024, 2048)
RECALL_TARGET = 0.95
RECALL_AT = 100


class BundleError(ValueError):
    """A bundle that cannot be served: the message names the file and what was expected."""


# ---- files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatten_tensors(record: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """A nested dict of tensors as one flat dict keyed ``a/b`` (safetensors holds flat dicts)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_tensors(value, f"{name}/"))
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach().contiguous().clone()  # safetensors refuses shared storage
        else:
            raise TypeError(f"model input {name!r} is a {type(value).__name__}, not a tensor: it cannot be exported")
    return flat


def unflatten_tensors(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise BundleError(f"{path}: not a readable safetensors file ({error})") from error


# ---- the retrieval index


def build_index(vectors: np.ndarray, kind: str = "auto", seed: int = 0) -> tuple[faiss.Index, dict[str, Any]]:
    """An inner-product index over unit ``vectors`` and what was measured about it.

    ``kind``: ``exact`` (IndexFlatIP), ``hnsw``, or ``auto`` (HNSW from ``HNSW_FROM_ITEMS`` items).
    For HNSW the first efSearch of ``HNSW_EF_SEARCH`` whose recall@100 against exact search reaches
    0.95 on 500 queries (catalogue vectors with noise, re-normalised), bisected down towards the
    last that did not (to within an eighth), is kept; when none does, the exact index is used
    instead and the measured recall says why.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if kind not in ("auto", "exact", "hnsw"):
        raise ValueError(f"index kind must be auto, exact or hnsw, got {kind!r}")
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    if kind == "exact" or (kind == "auto" and count < HNSW_FROM_ITEMS) or count <= RECALL_AT:
        return exact, {"kind": "exact", "items": count, "dim": dim}
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 128
    started = time.perf_counter()
    hnsw.add(vectors)
    build_seconds = time.perf_counter() - started
    queries = probe_queries(vectors, 500, seed)
    _, truth = exact.search(queries, RECALL_AT)
    measured: dict[str, float] = {}

    def reaches_target(ef_search: int) -> bool:
        hnsw.hnsw.efSearch = ef_search
        _, found = hnsw.search(queries, RECALL_AT)
        measured[str(ef_search)] = recall(found, truth)
        return measured[str(ef_search)] >= RECALL_TARGET

    failing = 0
    for ef_search in HNSW_EF_SEARCH:
        if reaches_target(ef_search):
            # bisect down to within 1/8 of the smallest passing value: a doubling step can overshoot 2x
            while ef_search - failing > max(8, ef_search // 8):
                middle = (failing + ef_search) // 2
                failing, ef_search = (failing, middle) if reaches_target(middle) else (middle, ef_search)
            hnsw.hnsw.efSearch = ef_search
            return hnsw, {"kind": "hnsw", "items": count, "dim": dim, "M": 32, "ef_search": ef_search,
                          f"recall@{RECALL_AT}": measured[str(ef_search)], "recall_by_ef_search": measured,
                          "build_seconds": round(build_seconds, 2)}
        failing = ef_search
    return exact, {"kind": "exact", "items": count, "dim": dim, "hnsw_recall_by_ef_search": measured}


def probe_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries near the catalogue: random item vectors plus noise of their own scale, unit length."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    noisy = picked + rng.normal(0, 1.0 / np.sqrt(vectors.shape[1]), picked.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True).clip(1e-12)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (exact top-k positions) present in ``found``."""
    hits = [np.intersect1d(f[f >= 0], t).size / t.size for f, t in zip(found, truth)]
    return float(np.mean(hits))


# ---- export


def _item_features(task: Task) -> list[str]:
    """Columns a catalogue item may carry for the ranking part: the ranking model's item features, or
    a CTR model's input columns but the ids (``catalogue_table`` keeps those fixed per item)."""
    if task.kind == "ranking":
        return RankingTask._feature_columns(task.config)[0]
    spec = feature_spec(task.config, None)
    return [name for name in [*spec.sparse, *spec.dense] if name not in (schema.ITEM_ID, schema.USER_ID)]


def catalogue_table(task: Task, data_path: Path) -> pa.Table:
    """One row per item of the run's data: its raw id and the last value (by time) of each item feature.
    For a CTR run only features constant within every item are kept (the others describe the user or
    the moment, and come with the request)."""
    meta = DatasetMeta.load(data_path)
    wanted = _item_features(task)
    present = [name for name in wanted if name in meta.columns] if meta.columns else wanted
    timed = not meta.columns or schema.TIMESTAMP in meta.columns  # CTR logs may have no time: file order
    names = list(dict.fromkeys([schema.ITEM_ID, *([schema.TIMESTAMP] if timed else []), *present]))
    table = pa.concat_tables(pq.read_table(data_path / part, columns=names) for part in meta.parts)
    if schema.TIMESTAMP in table.column_names:
        table = table.sort_by(schema.TIMESTAMP)
    grouped = table.group_by(schema.ITEM_ID, use_threads=False)
    last = grouped.aggregate([(name, "last") for name in present])
    last = last.rename_columns([name.removesuffix("_last") for name in last.column_names])
    if task.kind == "ctr" and present:
        distinct = grouped.aggregate([(name, "count_distinct") for name in present])
        constant = [name for name in present if pc.max(distinct.column(f"{name}_count_distinct")).as_py() <= 1]
        last = last.select([schema.ITEM_ID, *constant])
    return last.select([schema.ITEM_ID, *[n for n in last.column_names if n != schema.ITEM_ID]])


def _part_schema(task: Task) -> dict[str, Any]:
    config = task.config
    described: dict[str, Any] = {"task": task.kind, "model": config.model["name"], "labels": list(config.data.labels or [])}
    if task.kind == "ctr":
        spec = feature_spec(config, None)
        described.update(sparse=list(spec.sparse), dense=list(spec.dense))
    elif task.kind == "ranking":
        item_features, user_features = RankingTask._feature_columns(config)
        described.update(actions=list(config.data.actions), item_features=item_features,
                         user_features=user_features,
                         max_events=int(getattr(check_model_options(config), "max_events", config.data.max_length)))
    else:
        described.update(max_length=int(config.data.max_length), items=int(task.record["item_raw_ids"].numel()))
    return described


def export_bundle(runs: list[str | Path], out: str | Path, index: str = "auto", data_path: str | Path | None = None,
                  overwrite: bool = False, threads: int = 0, catalogue: bool = True) -> Path:
    """Write the bundle of ``runs`` (one sequential and / or one CTR-or-ranking run) to ``out``.

    Args:
        runs: run folders, each with its ``checkpoint.pt``.
        out: the bundle folder; written beside itself and renamed into place (never half-written).
        index: the retrieval index kind (``auto``, ``exact``, ``hnsw``; see ``build_index``).
        data_path: the ranking run's prepared dataset, read for the catalogue's item features
            (default: the run's ``data.path``).
        overwrite: replace an existing bundle at ``out``.
        catalogue: write the ranking part's ``catalogue.parquet`` (False: none; requests then bring
            the items' features, as for a streaming run, whose data is no prepared dataset).
    """
    set_threads(threads)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"bundle folder {out} exists (pass overwrite / --overwrite to replace it)")
    if not runs:
        raise ValueError("export: give at least one run folder")
    tasks: dict[str, tuple[Path, Task]] = {}
    for run in map(Path, runs):
        task = load_task(run)
        role = ROLES[task.kind]
        if role in tasks:
            raise ValueError(f"export: {run} and {tasks[role][0]} are both {role} runs; a bundle holds one of each")
        tasks[role] = (run, task)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    parts: dict[str, Any] = {}
    try:
        for role, (run, task) in tasks.items():
            folder = staging / role
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text(to_yaml(task.config))
            save_file({k: v.contiguous().clone() for k, v in task.model.state_dict().items()},
                      folder / "weights.safetensors")
            save_file(flatten_tensors(task.record), folder / "inputs.safetensors")
            parts[role] = {"run": str(run.resolve()), "schema": _part_schema(task)}
            if role == "retrieval":
                predictor = Predictor(task)
                vectors = predictor.item_vectors()
                save_file({"raw_ids": task.record["item_raw_ids"].contiguous().clone(),
                           "vectors": torch.from_numpy(vectors)}, folder / "items.safetensors")
                faiss_index, described = build_index(vectors, index, seed=task.config.train.seed)
                faiss.write_index(faiss_index, str(folder / "index.faiss"))
                parts[role]["index"] = described
            elif catalogue and _item_features(task):
                source = Path(data_path) if data_path is not None else Path(task.config.data.path)
                if not (source / "dataset.yaml").exists():
                    raise FileNotFoundError(f"export: the ranking run's item features are read from its dataset, and "
                                            f"{source / 'dataset.yaml'} does not exist (pass data_path / --data)")
                pq.write_table(catalogue_table(task, source), folder / "catalogue.parquet")
        files = {str(path.relative_to(staging)): sha256_of(path) for path in sorted(staging.rglob("*")) if path.is_file()}
        manifest = {"format": BUNDLE_FORMAT, "terarec_version": terarec.__version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "parts": parts, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# ---- loading


BLAS_QUERIES = 5  # exact search: batches of this many queries or more go through one matrix product


@dataclass
class BundlePart:
    """One exported run: its predictor, its schema (manifest) and, for retrieval, items and index."""

    role: str
    predictor: Predictor
    schema: dict[str, Any]
    item_raw_ids: np.ndarray | None = None
    index: faiss.Index | None = None
    catalogue: pa.Table | None = None

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) scores and catalogue positions (-1: none) of the index's top ``k`` for each of
        the (B, d) query vectors.

        faiss scans an exact index query by query below its BLAS threshold and with one matrix
        product above it. Measured on the 117k x 64 catalogue of ``bench/serve.py`` (one thread,
        k 456): 1 query 1.3 ms by scan, 4.4 by BLAS; 8 queries 10.6 against 6.5; 32 queries 35
        against 14. So a batch of ``BLAS_QUERIES`` or more takes the product. The threshold is
        faiss's global: only the server's compute thread searches while serving, and either path
        gives the same neighbours up to float rounding."""
        if isinstance(self.index, faiss.IndexFlat):
            faiss.cvar.distance_compute_blas_threshold = 1 if len(vectors) >= BLAS_QUERIES else 2**31 - 1
        return self.index.search(vectors, k)


@dataclass
class Bundle:
    """A loaded, verified bundle (see the module docstring)."""

    path: Path
    manifest: dict[str, Any]
    parts: dict[str, BundlePart] = field(default_factory=dict)

    @property
    def retrieval(self) -> BundlePart | None:
        return self.parts.get("retrieval")

    @property
    def ranking(self) -> BundlePart | None:
        return self.parts.get("ranking")

    @property
    def index_info(self) -> dict[str, Any]:
        return self.manifest["parts"].get("retrieval", {}).get("index", {})

    @property
    def version(self) -> str:
        """Identifies this bundle's content: the first 12 hex digits of the manifest's sha256 (the
        manifest of a bundle with deltas applied lists them, so each delta makes a new version)."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()[:12]


def _compatible(version: str) -> bool:
    """Bundles are read by the terarec major.minor that wrote them (0.x minors may change formats)."""
    return version.split(".")[:2] == terarec.__version__.split(".")[:2]


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """The manifest of the bundle at ``path`` once its format, version and every file's sha256 check out."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path}: missing (not a terarec bundle folder, or an incomplete copy)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path}: not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{manifest_path}: expected format {BUNDLE_FORMAT!r}, found {found!r}")
    version = str(manifest.get("terarec_version", ""))
    if not _compatible(version):
        raise BundleError(f"{manifest_path}: written by terarec {version or '(no version)'}, which this terarec "
                          f"{terarec.__version__} cannot read (same major.minor needed); export the run again")
    for key in ("parts", "files"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{manifest_path}: no '{key}' mapping")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: missing (listed in {MANIFEST})")
        if sha256_of(file) != expected:
            raise BundleError(f"{file}: sha256 mismatch (the file changed or is corrupt since export)")
    for role in manifest["parts"]:
        for name in ("config.yaml", "weights.safetensors", "inputs.safetensors"):
            if f"{role}/{name}" not in manifest["files"]:
                raise BundleError(f"{path / role / name}: not listed in {manifest_path}")
    return manifest


def load_bundle(path: str | Path, threads: int = 0) -> Bundle:
    """Verify (``verify_bundle``) then load the bundle at ``path``; no pickle is read."""
    set_threads(threads)
    path = Path(path)
    manifest = verify_bundle(path)
    bundle = Bundle(path, manifest)
    for role, described in manifest["parts"].items():
        folder = path / role
        payload = {"config_yaml": (folder / "config.yaml").read_text(),
                   "inputs": unflatten_tensors(_read_tensors(folder / "inputs.safetensors")),
                   "model": _read_tensors(folder / "weights.safetensors")}
        task = task_from_saved(payload, folder / "weights.safetensors")
        part = BundlePart(role, Predictor(task), described.get("schema", {}))
        if role == "retrieval":
            items = _read_tensors(folder / "items.safetensors")
            part.item_raw_ids = items["raw_ids"].numpy()
            try:
                part.index = faiss.read_index(str(folder / "index.faiss"))
            except RuntimeError as error:
                raise BundleError(f"{folder / 'index.faiss'}: not a readable faiss index ({error})") from error
            if part.index.ntotal != part.item_raw_ids.size:
                raise BundleError(f"{folder / 'index.faiss'}: {part.index.ntotal} vectors for "
                                  f"{part.item_raw_ids.size} catalogue items")
            ef_search = described.get("index", {}).get("ef_search")
            if ef_search:
                faiss.downcast_index(part.index).hnsw.efSearch = int(ef_search)
        elif (folder / "catalogue.parquet").exists():
            part.catalogue = pq.read_table(folder / "catalogue.parquet")
        bundle.parts[role] = part
    return bundle


__all__ = ["BUNDLE_FORMAT", "Bundle", "BundleError", "BundlePart", "build_index", "export_bundle", "load_bundle",
           "verify_bundle"]
