"""A streaming run's serving output: a base bundle before the first chunk, then an embedding delta every N chunks.

The deltas are ``terarec.delta.v1`` folders (``terarec.serve.delta``), chained from the base
bundle's version, so the server's ``POST /admin/delta`` applies them in order, and the base bundle
with every delta applied holds exactly the weights of the run's latest checkpoint. A delta is
written before the commit of its chunk: a run killed in between trains the chunk again and
rewrites the same delta (training repeats to the bit), so a delta is never lost or doubled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from terarec.serve.bundle import MANIFEST, ROLES, Bundle, export_bundle
from terarec.serve.delta import write_delta

BUNDLE_FOLDER, DELTAS_FOLDER = "bundle", "deltas"


def delta_folder(run_dir: Path, chunks_done: int) -> Path:
    """The delta written after the run's ``chunks_done``-th chunk."""
    return Path(run_dir) / DELTAS_FOLDER / f"{chunks_done:06d}"


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


class DeltaPublisher:
    """Exports ``run_dir/bundle`` and writes ``run_dir/deltas/<chunks done>`` every ``every`` chunks.

    Args:
        run_dir: the streaming run's folder (its ``checkpoint.pt`` is what the base bundle exports).
        kind: the run's task kind (names the bundle part).
        every: chunks between deltas (> 0).
    """

    def __init__(self, run_dir: Path, kind: str, every: int) -> None:
        self.run_dir, self.every, self.role = Path(run_dir), every, ROLES[kind]
        self.bundle_dir = self.run_dir / BUNDLE_FOLDER
        self.base_manifest: dict[str, Any] = {}
        self.applied: list[dict[str, Any]] = []  # the manifests of the deltas written, in order
        self.published: dict[str, torch.Tensor] = {}  # the weights the last delta (or the base) holds
        self.since_published = 0

    @property
    def version(self) -> str:
        """The bundle version the next delta applies to (the base's, then each delta's result)."""
        manifest = dict(self.base_manifest, deltas=self.applied) if self.applied else self.base_manifest
        return Bundle(self.bundle_dir, manifest).version

    def export_base(self, model: torch.nn.Module) -> None:
        """Export the base bundle from the run's ``checkpoint.pt`` (``model``'s weights)."""
        with torch.random.fork_rng():  # building the exported model draws initial weights: the run's RNG stays
            export_bundle([self.run_dir], self.bundle_dir, index="exact", overwrite=True,
                          threads=torch.get_num_threads(), catalogue=False)
        self.base_manifest = json.loads((self.bundle_dir / MANIFEST).read_text())
        self.published, self.applied, self.since_published = _copy(model.state_dict()), [], 0

    def after_chunk(self, chunks_done: int, model: torch.nn.Module) -> Path | None:
        """Write the delta of this chunk if one is due; returns its folder."""
        self.since_published += 1
        if chunks_done % self.every:
            return None
        state = model.state_dict()
        out = delta_folder(self.run_dir, chunks_done)
        self.applied.append(write_delta(self.published, state, out, self.version, self.role,
                                        f"{self.run_dir} after chunk {chunks_done}"))
        self.published, self.since_published = _copy(state), 0
        return out

    def state(self) -> dict[str, Any]:
        """What a commit keeps: the deltas' manifests and, between deltas, the last published weights."""
        saved: dict[str, Any] = {"base_manifest": json.dumps(self.base_manifest), "applied": json.dumps(self.applied)}
        if self.since_published:
            saved["published"] = self.published
        return saved

    def restore(self, saved: dict[str, Any], model: torch.nn.Module) -> None:
        self.base_manifest, self.applied = json.loads(saved["base_manifest"]), json.loads(saved["applied"])
        self.published = saved.get("published") or _copy(model.state_dict())
        self.since_published = 1 if "published" in saved else 0
