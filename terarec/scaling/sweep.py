"""Scaling sweeps: many model sizes trained on the same data and steps, then fitted and plotted.

A sweep spec (YAML) names model *families*, each an experiment config plus a list of model
sizes (``points``: dicts of model options merged onto the config's ``model``) and/or a small
``grid`` (every combination of the listed option values)::

    name: scaling
    out: runs/scaling
    overrides: [data.path=data/scaling]          # applied to every point
    families:
      - name: wukong
        config: wukong.yaml                       # relative to the spec file
        points:
          - {num_layers: 1, fm_rank: 4, fmb_mlp: [32], top_mlp: [32]}
          - {num_layers: 2, fm_rank: 4, fmb_mlp: [32], top_mlp: [32]}
      - name: dlrm
        config: dlrm.yaml
        grid: {top_mlp: [[64], [256, 256]]}

Every point must use the same data, batch size, seed, epochs and step cap (checked), so
quality differs only by model. The sweep folder holds ``points/<id>/`` (each a run folder
with ``metrics.json``) and ``results.json``, rewritten atomically after every point. Run
again, a sweep reads back the finished points whose resolved config is unchanged (a hash)
and trains only the rest; a point stopped part way is trained again from scratch.

Example:
    >>> spec = load_sweep("configs/scaling/sweep.yaml", ["train.threads=1"])  # doctest: +SKIP
    >>> records = run_sweep(spec, Path("runs/scaling"))  # doctest: +SKIP
    >>> summary = summarize(Path("runs/scaling"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from terarec.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    from_dict,
    read_yaml_mapping,
)
from terarec.scaling.fit import MONOTONE_TOLERANCE, fit_power_law, is_monotone
from terarec.scaling.flops import TRAIN_FACTOR, ctr_model_cost
from terarec.train.experiment import check_config

RESULTS = "results.json"
FIT = "fit.json"
PLOT = "scaling.png"
SPEC = "sweep.yaml"
# What must be equal across a sweep's points: the data and the steps they are trained for.
SHARED_FIELDS = ("data.path", "data.batch_size", "data.sparse", "data.dense", "data.labels", "data.crosses",
                 "train.epochs", "train.max_steps_per_epoch", "train.seed", "train.patience")
# Settings that change speed, not results: left out of a point's identity, so a sweep resumed
# with another thread count still reuses its finished points.
VOLATILE_FIELDS = ("name", "run_dir", "train.threads", "data.num_workers")


@dataclass
class FamilySpec:
    """One model family of a sweep.

    Args:
        name: the family's label in results and the chart (e.g. ``wukong``).
        config: the family's experiment YAML, relative to the sweep file (or absolute).
        points: model sizes, each a mapping of model options merged onto the config's ``model``.
        grid: option -> list of values; every combination is one more point (after ``points``).
        overrides: dotted overrides for this family's points only.
    """

    name: str
    config: str
    points: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


@dataclass
class SweepSpec:
    """A scaling sweep.

    Args:
        name: names the sweep (and prefixes its runs' names).
        families: the model families and their sizes.
        overrides: dotted overrides applied to every point (after the families' own).
        out: the default sweep folder.
        base_dir: folder that relative family configs are read from (the spec file's folder).
    """

    name: str = "sweep"
    families: list[FamilySpec] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    out: str = "runs/sweep"
    base_dir: str = "."


@dataclass
class SweepPoint:
    """One model size: its id (``<family>-<index>``), family, model options and resolved config."""

    id: str
    family: str
    options: dict[str, Any]
    config: ExperimentConfig

    @property
    def config_hash(self) -> str:
        data = json.loads(json.dumps(asdict(self.config)))
        for dotted in VOLATILE_FIELDS:
            *parents, last = dotted.split(".")
            node = data
            for part in parents:
                node = node[part]
            node.pop(last, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read a sweep YAML; ``overrides`` (dotted, like ``terarec train``'s) apply to every point."""
    path = Path(path)
    data = read_yaml_mapping(path, "sweep")
    data.setdefault("base_dir", str(path.resolve().parent))
    spec = from_dict(SweepSpec, data, "sweep")
    spec.overrides = list(spec.overrides) + list(overrides or [])
    if not spec.families:
        raise ConfigError(f"{path}: 'families' is empty; list at least one model family")
    names = [family.name for family in spec.families]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: family names must be distinct, got {names}")
    return spec


def _family_config_path(spec: SweepSpec, family: FamilySpec) -> Path:
    path = Path(family.config)
    if not path.is_absolute():
        path = Path(spec.base_dir) / path
    if not path.exists():
        raise ConfigError(f"family '{family.name}': config {path} does not exist")
    return path


def _family_options(family: FamilySpec) -> list[dict[str, Any]]:
    options = [dict(point) for point in family.points]
    if family.grid:
        keys = list(family.grid)
        for values in itertools.product(*(family.grid[key] for key in keys)):
            options.append(dict(zip(keys, values)))
    if not options:
        raise ConfigError(f"family '{family.name}': no points (give 'points' or 'grid')")
    return options


def expand_points(spec: SweepSpec) -> list[SweepPoint]:
    """Every point of the sweep with its resolved, checked config, in spec order.

    Raises:
        ConfigError: a bad option (naming the point), or points that differ in their data or
            steps (naming the field).
    """
    points: list[SweepPoint] = []
    for family in spec.families:
        base = read_yaml_mapping(_family_config_path(spec, family), f"family '{family.name}' config")
        base = apply_overrides(base, list(family.overrides) + list(spec.overrides))
        for index, options in enumerate(_family_options(family)):
            point_id = f"{family.name}-{index:02d}"
            data = copy.deepcopy(base)
            model = dict(data.get("model") or {})
            model.update(options)
            data["model"] = model
            data["name"] = f"{spec.name}-{point_id}"
            try:
                config = from_dict(ExperimentConfig, data)
                check_config(config)
            except ConfigError as error:
                raise ConfigError(f"sweep point {point_id} {options}: {error}") from error
            if config.task != "ctr":
                raise ConfigError(f"sweep point {point_id}: scaling sweeps need task 'ctr', got {config.task!r}")
            points.append(SweepPoint(point_id, family.name, options, config))
    _check_same_data_and_steps(points)
    return points


def _get(config: ExperimentConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _check_same_data_and_steps(points: list[SweepPoint]) -> None:
    first = points[0]
    for dotted in SHARED_FIELDS:
        for point in points[1:]:
            if _get(point.config, dotted) != _get(first.config, dotted):
                raise ConfigError(
                    f"sweep points must share {dotted}: {first.id} has {_get(first.config, dotted)!r}, "
                    f"{point.id} has {_get(point.config, dotted)!r}"
                )


def _train_point(config: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """The default trainer: ``terarec.train.loop.train``; returns the run's metrics.json."""
    from terarec.train.loop import train

    result = train(config, progress=False, run_dir=run_dir)
    return json.loads((result.run_dir / "metrics.json").read_text())


def read_results(out_dir: str | Path) -> dict[str, Any]:
    """The sweep folder's results.json (an empty record when there is none yet)."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return {"points": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error}); move it away to start the sweep afresh") from error


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    trainer: Callable[[ExperimentConfig, Path], dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every point of ``spec`` not already finished in ``out_dir``; return all records.

    Args:
        spec: the sweep (see ``load_sweep``).
        out_dir: the sweep folder; created, or resumed when it holds a results.json.
        trainer: ``(config, run_dir) -> metrics`` with ``test`` and ``valid`` mappings (AUC,
            LogLoss) like a run's metrics.json; the default trains with ``terarec.train.loop``.
        log: where the one progress line per point goes.

    Returns:
        One record per point, in spec order: id, family, model options, ``gflops`` (dense
        forward per example), ``train_gflops`` (3x), parameters, test / valid LogLoss and AUC,
        wall seconds and the config hash.
    """
    trainer = trainer or _train_point
    out_dir = Path(out_dir)
    points = expand_points(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPEC).write_text(yaml.safe_dump(asdict(spec), sort_keys=False))
    previous_results = read_results(out_dir)
    done = {record["id"]: record for record in previous_results.get("points", [])}
    results: dict[str, Any] = {"name": spec.name, "data_path": points[0].config.data.path, "points": []}
    records: dict[str, dict[str, Any]] = {}

    ids = {point.id for point in points}
    earlier = previous_results.get("earlier_points", []) + [record for key, record in done.items() if key not in ids]
    if earlier:  # points an earlier spec had: kept for the record, not fitted
        results["earlier_points"] = earlier

    def save() -> None:
        results["points"] = [records[p.id] for p in points if p.id in records]  # finished, in spec order
        _write_json(out_dir / RESULTS, results)

    for number, point in enumerate(points, 1):
        tag = f"[{number}/{len(points)}] {point.id}"
        previous = done.get(point.id)
        if previous is not None and previous.get("config_hash") == point.config_hash:
            records[point.id] = previous
            log(f"{tag}: finished earlier, test LogLoss {previous.get('test_logloss')} (kept)")
            continue
        run_dir = out_dir / "points" / point.id
        if run_dir.exists():  # a point stopped part way, or one whose config changed
            shutil.rmtree(run_dir)
        cost = ctr_model_cost(point.config)
        started = time.perf_counter()
        metrics = trainer(point.config, run_dir)
        seconds = time.perf_counter() - started
        test, valid = metrics.get("test", {}), metrics.get("valid", {})
        epochs = [e for e in metrics.get("epochs", []) if "steps" in e]
        records[point.id] = {
            "id": point.id,
            "family": point.family,
            "model": point.config.model,
            "options": point.options,
            "gflops": cost.gflops,
            "train_gflops": TRAIN_FACTOR * cost.gflops,
            "parameters": metrics.get("parameters"),
            "dense_parameters": cost.dense_parameters,
            "test_logloss": test.get("logloss"),
            "test_auc": test.get("auc"),
            "valid_logloss": valid.get("logloss"),
            "valid_auc": valid.get("auc"),
            "steps": sum(e["steps"] for e in epochs),
            "train_seconds": round(sum(e.get("train_seconds", 0.0) for e in epochs), 2),
            "seconds": round(seconds, 2),
            "config_hash": point.config_hash,
            "run_dir": str(run_dir.relative_to(out_dir)),
        }
        save()
        log(f"{tag}: {cost.gflops * 1e3:.4g} MFLOPs/example, {cost.dense_parameters:,} dense params, "
            f"test LogLoss {test.get('logloss', float('nan')):.5f} AUC {test.get('auc', float('nan')):.4f}, "
            f"{seconds:.0f}s")
    save()
    return [records[p.id] for p in points]


def summarize(out_dir: str | Path, floor: float | None = None, plot: bool = True) -> dict[str, Any]:
    """Fit each family of a sweep folder, write ``fit.json`` and ``scaling.png``, return the summary.

    Args:
        out_dir: a sweep folder (its results.json).
        floor: the Bayes-optimal LogLoss, a lower bound on every fit's asymptote; by default
            read from the data when it carries its true probabilities (``synthetic-ctr``).
        plot: write the PNG.

    Returns:
        ``{"floor", "families": {name: {"points", "gflops_span", "monotone", "fit"}}, "plot"}``
        where ``fit`` is ``PowerLawFit.to_dict()`` or None (fewer than 3 points).
    """
    from terarec.scaling.plot import plot_scaling

    out_dir = Path(out_dir)
    results = read_results(out_dir)
    if floor is None and results.get("data_path"):
        floor = _floor(results["data_path"])
    families: dict[str, tuple[list[float], list[float]]] = {}
    for record in results.get("points", []):
        if record.get("test_logloss") is None:
            continue
        compute, loss = families.setdefault(record["family"], ([], []))
        compute.append(record["gflops"])
        loss.append(record["test_logloss"])
    summary: dict[str, Any] = {"floor": floor, "families": {}}
    fits = {}
    for name, (compute, loss) in families.items():
        try:
            fit = fit_power_law(compute, loss, floor=floor) if len(compute) >= 3 else None
        except ValueError:  # no fit converged: report the points without one
            fit = None
        fits[name] = fit
        summary["families"][name] = {
            "points": len(compute),
            "gflops_min": min(compute),
            "gflops_max": max(compute),
            "gflops_span": max(compute) / min(compute),
            "logloss_best": min(loss),
            "monotone": is_monotone(compute, loss, MONOTONE_TOLERANCE),
            "fit": None if fit is None else fit.to_dict(),
        }
    if plot and families:
        summary["plot"] = str(plot_scaling(families, fits, out_dir / PLOT, floor=floor,
                                           title=f"{results.get('name', 'sweep')}: test LogLoss against compute"))
    _write_json(out_dir / FIT, summary)
    return summary


def _floor(data_path: str) -> float | None:
    from terarec.data.errors import DataError
    from terarec.data.sources.synthetic_ctr import bayes_logloss

    try:
        return bayes_logloss(data_path, "test")
    except (DataError, OSError):
        return None
