"""Embedding deltas: the rows of a bundle's tensors that changed, applied to a served bundle without restart.

A delta folder (format ``terarec.delta.v1``, docs/serving.md) holds ``manifest.json`` (the
version of the bundle it applies to, the part, sha256 of each file) and ``<part>.safetensors``
with, per changed tensor ``name`` of the part's state dict, either ``name::rows`` (int64 row
indices along the first dimension) and ``name::values`` (those rows' new values), or
``name::full`` (the whole tensor, when most of it changed). Rows cover table rows rewritten by
training and ids evicted from or admitted to a managed vocabulary alike: its id-to-row state is
tensors of the state dict too.

Deltas form a chain: each names the bundle version it applies to (the exported bundle, or the
version the previous delta made). ``make_delta`` writes one from a bundle (plus the deltas already
applied) and a later checkpoint of the same run (same config and vocabulary sizes); a streaming run
(``terarec.stream``) writes one with ``write_delta`` after every ``stream.delta_every`` chunks. ``apply_delta`` returns a new ``Bundle``, leaving the
served one untouched for batches in flight; the retrieval part's item vectors and index are
rebuilt when its weights changed.

Example:
    >>> make_delta("bundles/v1", "runs/seq-hstu-…", "deltas/0001")  # doctest: +SKIP
    >>> bundle = apply_delta(load_bundle("bundles/v1"), "deltas/0001")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from terarec.config import to_yaml
from terarec.serve.bundle import ROLES, Bundle, BundleError, _read_tensors, build_index, load_bundle, sha256_of
from terarec.serve.predictor import Predictor
from terarec.train.loop import load_task, task_from_saved

DELTA_FORMAT = "terarec.delta.v1"


def make_delta(bundle_path: str | Path, run: str | Path, out: str | Path,
               after: list[str | Path] = ()) -> Path:
    """Write to ``out`` the delta taking the bundle (with the ``after`` deltas applied, in order) to
    ``run``'s current checkpoint, for the part of ``run``'s role."""
    out = Path(out)
    bundle = load_bundle(bundle_path)
    for earlier in after:
        bundle = apply_delta(bundle, earlier)
    task = load_task(run)
    role = ROLES[task.kind]
    if role not in bundle.parts:
        raise BundleError(f"{Path(bundle_path) / 'manifest.json'}: no {role} part to take a delta of")
    if out.exists():
        raise FileExistsError(f"delta folder {out} exists")
    write_delta(bundle.parts[role].predictor.model.state_dict(), task.model.state_dict(), out, bundle.version, role,
                str(run))
    return out


def write_delta(base: dict[str, torch.Tensor], new: dict[str, torch.Tensor], out: str | Path, base_version: str,
                role: str, source: str = "the model") -> dict:
    """Write to ``out`` the delta taking state dict ``base`` (bundle version ``base_version``) to ``new``,
    for the bundle part ``role``; returns its manifest. The folder is written beside itself and renamed
    into place (an existing one, e.g. left by a run killed after writing it, is replaced)."""
    out = Path(out)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in new.items():
        old = base.get(name)
        if old is None or old.shape != value.shape or old.dtype != value.dtype:
            raise BundleError(f"{source}: tensor {name!r} does not match the bundle's (another model or vocabulary "
                              "size: export a new bundle instead)")
        if torch.equal(old, value):
            continue
        changed = torch.nonzero((old != value).reshape(old.shape[0], -1).any(1)).squeeze(1) if old.dim() else None
        if changed is not None and changed.numel() < old.shape[0] // 2:
            tensors[f"{name}::rows"], tensors[f"{name}::values"] = changed, value[changed].contiguous().clone()
        else:
            tensors[f"{name}::full"] = value.contiguous().clone()
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, staging / f"{role}.safetensors")
    manifest = {"format": DELTA_FORMAT, "base_bundle": base_version, "part": role,
                "files": {f"{role}.safetensors": sha256_of(staging / f"{role}.safetensors")}}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest


def apply_delta(bundle: Bundle, delta: str | Path) -> Bundle:
    """A new bundle: ``bundle`` with the delta's rows written into a copy of its part's model."""
    delta = Path(delta)
    manifest_path = delta / "manifest.json"
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path}: missing (not a delta folder)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != DELTA_FORMAT:
        raise BundleError(f"{manifest_path}: expected format {DELTA_FORMAT!r}, found {manifest.get('format')!r}")
    if manifest.get("base_bundle") != bundle.version:
        raise BundleError(f"{manifest_path}: applies to bundle version {manifest.get('base_bundle')}, "
                          f"the served one is {bundle.version}")
    for name, expected in manifest.get("files", {}).items():
        if not (delta / name).is_file():
            raise BundleError(f"{delta / name}: missing (listed in {manifest_path})")
        if sha256_of(delta / name) != expected:
            raise BundleError(f"{delta / name}: sha256 mismatch")
    role = manifest.get("part")
    if role not in bundle.parts:
        raise BundleError(f"{manifest_path}: part {role!r} is not in the served bundle")
    part = bundle.parts[role]
    served = part.predictor.task
    state = dict(served.model.state_dict())  # live views of the served model: replaced, never written
    tensors = _read_tensors(delta / f"{role}.safetensors")
    for key, value in tensors.items():
        name, kind = key.rsplit("::", 1)
        if name not in state:
            raise BundleError(f"{delta / f'{role}.safetensors'}: tensor {name!r} is not in the model")
        if kind == "full":
            state[name] = value
        elif kind == "rows":
            state[name] = state[name].clone()
            state[name][value] = tensors[f"{name}::values"]
    # A new model built from the saved parts, not a deep copy of the served one: the embedding engine's
    # tables are memory shared with its kernel, which a deep copy does not keep shared.
    task = task_from_saved({"config_yaml": to_yaml(served.config), "inputs": served.record, "model": state},
                           delta / f"{role}.safetensors")
    updated = dataclasses.replace(part, predictor=Predictor(task))
    if role == "retrieval":
        kind = bundle.index_info.get("kind", "exact")
        updated.index, _ = build_index(updated.predictor.item_vectors(), kind)
    applied = dict(bundle.manifest, deltas=[*bundle.manifest.get("deltas", []), manifest])
    return Bundle(bundle.path, applied, dict(bundle.parts, **{role: updated}))


__all__ = ["DELTA_FORMAT", "apply_delta", "make_delta", "write_delta"]
