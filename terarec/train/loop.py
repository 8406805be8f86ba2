"""The training loop every task kind shares: fit, validate each epoch, keep the best, test; resumable.

A run writes its folder as it goes:

* ``config.yaml``: the resolved config (columns filled in from the dataset, data path absolute);
* ``status.json``: ``running``, ``finished`` or ``failed`` (with the reason);
* its logs (``terarec.train.logs.RunLogs``): ``train.log``, ``steps.csv`` (running train loss
  and learning rate every ``train.log_every`` steps), ``epochs.csv`` (one row per epoch),
  TensorBoard events under ``tensorboard/`` and ``curves.png``; and ``metrics.json`` (updated
  after every epoch);
* ``checkpoint.pt``: the best epoch so far, self-contained: config, model inputs (vocabularies,
  columns), weights; ``terarec eval`` and ``terarec.serve.Predictor`` need nothing else;
* ``state.pt``: everything to continue exactly where the run was: weights, dense and fused-table
  optimizer state, learning-rate schedule, global step, RNG states, the position in the data and
  the best epoch so far; written every ``train.checkpoint_every`` steps and after each epoch.

Both files are written atomically, so a run killed at any moment loses at most the steps since
its last state; ``terarec train --resume RUN`` (``resume(run_dir)``) continues it, mid-epoch
included, and ends with the same weights and metrics as a run never stopped (same thread count).

Optimizers: Adam for the dense parameters (and for tables kept as parameters,
``embedding.optimizer: adam``), with its fused kernel (one pass over all parameters instead
of a loop of small ops per tensor; the same update within float rounding); tables on the
embedding engine are updated inside backward by their own sparse optimizer (row-wise Adagrad
by default). ``train.warmup_steps`` ramps both learning rates linearly; ``train.plateau_decay``
lowers both after an epoch without a better validation metric.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
import traceback
from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import yaml

from terarec.config import ExperimentConfig, from_dict, to_yaml
from terarec.data.batches import make_loader
from terarec.models.protocols import (
    DrawsNegatives,
    EndsEpochs,
    FitsStatistics,
    FusedTables,
    PenalisedTables,
    RegularizedTables,
    SendsSparseGradients,
    parameter_count,
)
from terarec.train.checkpoint import load_checkpoint, save_checkpoint
from terarec.train.experiment import check_config
from terarec.train.logs import RunLogs
from terarec.train.setup import seed_everything, set_threads
from terarec.train.tasks import Task, build_task, task_class

log = logging.getLogger("terarec")
T = TypeVar("T")

CHECKPOINT_FORMAT = "terarec.checkpoint.v2"
STATE_FORMAT = "terarec.state.v1"


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _json_safe(value: Any) -> Any:
    """NaN / inf (e.g. gAUC with no usable user) become null: metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(value), indent=2))
    tmp.replace(path)


def new_run_dir(config: ExperimentConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.run_dir) / f"{config.name}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    run_dir, suffix = base, 1
    while True:  # mkdir is the claim: two runs started in the same second get two folders
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_dir = base.with_name(f"{base.name}-{suffix}")
            suffix += 1


def write_status(run_dir: Path, status: str, reason: str = "") -> None:
    """``status.json``: running / finished / failed, with the reason of a failure."""
    record = {"status": status, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if reason:
        record["reason"] = reason
    write_json(run_dir / "status.json", record)


@dataclass
class StepModules:
    """The modules a training step calls besides the loss, found once per run: a runtime Protocol
    check of every module, three times a step, was ~6% of a Beauty HSTU epoch.

    Args:
        samplers: modules that draw negatives (``DrawsNegatives``).
        penalised: tables with a penalty of their own (``PenalisedTables``).
        regularized: tables ``embedding.regularization`` penalises (``RegularizedTables``).
        dense_gradients: tables whose lookups send row-sparse gradients into a kept dense
            ``.grad`` (``sparse_gradient_tables``, ``clear_gradients``).
    """

    samplers: list[DrawsNegatives]
    penalised: list[PenalisedTables]
    regularized: list[RegularizedTables]
    dense_gradients: list[torch.nn.Parameter] = field(default_factory=list)

    @classmethod
    def of(cls, model: torch.nn.Module, dense_gradients: Sequence[torch.nn.Parameter] = ()) -> StepModules:
        modules = list(model.modules())
        return cls([m for m in modules if isinstance(m, DrawsNegatives)],
                   [m for m in modules if isinstance(m, PenalisedTables)],
                   [m for m in modules if isinstance(m, RegularizedTables)], list(dense_gradients))


def embedding_penalty(model: torch.nn.Module | StepModules, coefficient: float) -> torch.Tensor | None:
    """lambda/2 * sum ||W||^2 over the tables kept as parameters (``embedding.regularization``), plus
    each table's own penalty (``PenalisedTables``: Res-embedding's residual L2); ``model`` or its
    ``StepModules``."""
    modules = model if isinstance(model, StepModules) else StepModules.of(model)
    penalties = [module.regularization() for module in modules.penalised]
    weights = [w for module in modules.regularized for w in module.table_weights()]
    if coefficient > 0 and weights:
        penalties.append(0.5 * coefficient * sum(weight.square().sum() for weight in weights))
    return sum(penalties[1:], penalties[0]) if penalties else None


class LearningRates:
    """The learning rates of the dense optimizer and of the engine's sparse optimizers, moved
    together: a linear warm-up over the first ``warmup_steps`` steps, and a decay by a factor
    after each epoch without a better validation metric."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, warmup_steps: int,
                 sparse_learning_rate: float) -> None:
        self.optimizer, self.warmup_steps = optimizer, warmup_steps
        self.dense = [group["lr"] for group in optimizer.param_groups]
        self.sparse_modules = [m for m in model.modules() if isinstance(m, FusedTables)]
        self.sparse = sparse_learning_rate
        self.scale = 1.0  # product of the plateau decays so far

    def _apply(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.dense):
            group["lr"] = base * factor
        for module in self.sparse_modules:
            module.set_learning_rate(self.sparse * factor)

    def step(self, global_step: int) -> float:
        """Set the rates for step ``global_step`` (0-based); returns the multiplier in force."""
        if self.warmup_steps and global_step <= self.warmup_steps:
            factor = self.scale * min(1.0, (global_step + 1) / self.warmup_steps)
            self._apply(factor)
            return factor
        return self.scale

    def decay(self, factor: float) -> None:
        """Multiply every rate by ``factor`` (after an epoch without improvement)."""
        if factor < 1.0:
            self.scale *= factor
            self._apply(self.scale)

    def restore(self, scale: float, global_step: int) -> None:
        """The rates in force after ``global_step`` steps and decays multiplying to ``scale``."""
        self.scale = scale
        self._apply(scale)
        self.step(global_step)


def dense_optimizer(task: Task) -> torch.optim.Optimizer:
    """Adam over the model's parameters (the fused tables are not among them), with torch's fused
    kernel: one pass over the parameters instead of a loop of per-tensor ops (the same update to
    float rounding; on Beauty HSTU the per-tensor loop was ~1 s of a 7.6 s epoch)."""
    config = task.config
    return torch.optim.Adam(task.model.parameters(), lr=config.train.learning_rate,
                            weight_decay=config.train.weight_decay, fused=True)


def make_optimizer(task: Task) -> tuple[torch.optim.Optimizer, LearningRates]:
    """Adam over the model's parameters, and the learning rates it moves together with the fused tables'."""
    optimizer = dense_optimizer(task)
    return optimizer, learning_rates(optimizer, task)


def learning_rates(optimizer: torch.optim.Optimizer, task: Task) -> LearningRates:
    """The schedule that moves ``optimizer``'s rates together with the fused tables'."""
    config = task.config
    return LearningRates(optimizer, task.model, config.train.warmup_steps,
                         config.embedding.learning_rate or config.train.learning_rate)


def seed_negatives(model: torch.nn.Module | StepModules, seed: int, step: int) -> None:
    """Seed every negative sampler of ``model`` (``DrawsNegatives``; or of its ``StepModules``)
    for global step ``step``."""
    for module in (model if isinstance(model, StepModules) else StepModules.of(model)).samplers:
        module.seed_negatives(seed, step)


def sparse_gradient_tables(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Switch ``model``'s table lookups to row-sparse gradients where it offers them
    (``SendsSparseGradients``); the tables, whose gradients ``clear_gradients`` must keep dense."""
    return model.send_sparse_gradients() if isinstance(model, SendsSparseGradients) else []


def clear_gradients(optimizer: torch.optim.Optimizer, dense: Sequence[torch.nn.Parameter] = ()) -> None:
    """Every gradient to None, except those of ``dense`` (``sparse_gradient_tables``): zeroed in
    place (made once), so that the row-sparse gradients of their lookups are added into a dense
    ``.grad`` and Adam gets the same dense gradient as from dense lookups, without a fresh
    table-sized tensor per lookup (two ~1 ms fills a step on Beauty)."""
    kept = [table.grad for table in dense]
    optimizer.zero_grad(set_to_none=True)
    for table, grad in zip(dense, kept):
        table.grad = torch.zeros_like(table) if grad is None else grad.zero_()


def train_step(task: Task, optimizer: torch.optim.Optimizer, batch: Any,
               loss_of: Callable[[Any], torch.Tensor] | None = None, weight: float = 1.0,
               modules: StepModules | None = None) -> float:
    """One optimisation step on ``batch`` (the fused tables update inside backward); returns the loss.

    ``loss_of`` replaces ``task.loss`` (a distributed run's model wrapper); ``weight`` scales the
    loss's gradient (a distributed process's share of the global batch's loss terms, 0 for its
    padding step, whose loss counts 0); ``modules``: the model's ``StepModules`` (found again
    when None).
    """
    modules = modules or StepModules.of(task.model)
    loss = (loss_of or task.loss)(batch)
    penalty = embedding_penalty(modules, task.config.embedding.regularization)
    clear_gradients(optimizer, modules.dense_gradients)
    (loss * weight if penalty is None else loss * weight + penalty).backward()
    optimizer.step()
    return loss.item() if weight else 0.0


# ---- checkpoints


def checkpoint_payload(task: Task, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
    """The best-epoch checkpoint: everything to rebuild and use the model without the dataset."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config_yaml": to_yaml(task.config),
        "inputs": task.record,
        "epoch": epoch,
        "metrics": metrics,
        "model": task.model.state_dict(),
    }


def rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state["numpy"]
    np.random.set_state(("MT19937", saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["gauss"]))


def _config_from(payload: dict[str, Any], path: Path, data_path: str | Path | None) -> ExperimentConfig:
    try:
        config = from_dict(ExperimentConfig, yaml.safe_load(payload["config_yaml"]))
    except (KeyError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: the checkpoint's config is missing or unreadable ({error})") from error
    if data_path is not None:
        config.data.path = str(Path(data_path).resolve())
    check_config(config)
    return config


def _check_payload(payload: dict[str, Any], path: Path, fmt: str, keys: tuple[str, ...]) -> None:
    if payload.get("format") != fmt:
        found = payload.get("format", "no format field")
        raise ValueError(f"{path}: expected a {fmt} file, found {found!r} "
                         "(written by another terarec version, or not a terarec file)")
    missing = [key for key in keys if key not in payload]
    if missing:
        raise ValueError(f"{path}: the checkpoint has no {', '.join(missing)}")


def _load_weights(module: torch.nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        first = str(error).strip().splitlines()
        raise ValueError(f"{path}: the saved {what} do not fit the model its config builds: "
                         f"{' '.join(line.strip() for line in first[:4])}") from error


def load_task(run_dir: str | Path, data_path: str | Path | None = None, state: bool = False) -> Task:
    """Rebuild a run's task with its best weights (``checkpoint.pt``) or, with ``state``, its latest
    resumable weights (``state.pt``); no dataset is read. ``data_path`` points the task's datasets
    at another copy of the data (evaluation)."""
    path = Path(run_dir) / ("state.pt" if state else "checkpoint.pt")
    payload = load_checkpoint(path)
    _check_payload(payload, path, STATE_FORMAT if state else CHECKPOINT_FORMAT, ("config_yaml", "inputs", "model"))
    return task_from_saved(payload, path, data_path)


def task_from_saved(payload: dict[str, Any], path: Path, data_path: str | Path | None = None) -> Task:
    """A task rebuilt from saved parts (``config_yaml``, ``inputs`` record, ``model`` state dict), as a
    checkpoint or an exported bundle holds them; ``path`` names the source in errors."""
    config = _config_from(payload, path, data_path)
    try:
        task = task_class(config.task).from_record(config, payload["inputs"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: the saved model inputs are incomplete ({error})") from error
    _load_weights(task.model, payload["model"], path, "model weights")
    return task


# ---- training


class Trainer:
    """One run: trains ``task`` in ``run_dir``, from the start or from a saved state."""

    def __init__(self, task: Task, run_dir: Path, logs: RunLogs, state: dict[str, Any] | None = None) -> None:
        self.task, self.run_dir, self.config, self.logs = task, run_dir, task.config, logs
        self.metric, self.higher_is_better = task.monitor()
        model = task.model
        self.trainable = not isinstance(model, FitsStatistics)
        self.record: dict[str, Any] = {
            "name": self.config.name, "model": self.config.model["name"], "task": self.config.task,
            "parameters": parameter_count(model), "epochs": [], "selection_metric": self.metric,
        }
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_value, self.best_epoch, self.best_valid, self.stale = -math.inf, -1, {}, 0
        self.sums = {"loss": 0.0, "steps": 0, "examples": 0, "seconds": 0.0, "window_loss": 0.0, "window_steps": 0}
        self.optimizer = None
        dense_gradients = []
        if self.trainable:
            dense_gradients = self._sparse_gradient_tables()
            self.optimizer = self._make_optimizer()
            self.rates = learning_rates(self.optimizer, task)
        self.modules = StepModules.of(task.model, dense_gradients)  # after sharding, if any
        if state is not None:
            self._restore(state)

    # -- what a distributed run (terarec.train.distributed) replaces

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the dense parameters (and the tables kept as parameters)."""
        return dense_optimizer(self.task)

    def _loss(self, batch: Any) -> torch.Tensor:
        return self.task.loss(batch)

    def _sparse_gradient_tables(self) -> list[torch.nn.Parameter]:
        """The tables whose lookups send row-sparse gradients into a kept dense ``.grad``."""
        return sparse_gradient_tables(self.task.model)

    def _steps(self, batches):
        """(batch, weight) per step: every batch counts fully in one process."""
        for batch in batches:
            yield batch, 1.0

    def save_best(self, epoch: int, valid: dict[str, float]) -> None:
        save_checkpoint(self.run_dir / "checkpoint.pt", checkpoint_payload(self.task, epoch, valid))

    def load_best(self) -> None:
        _load_weights(self.task.model, load_checkpoint(self.run_dir / "checkpoint.pt")["model"],
                      self.run_dir / "checkpoint.pt", "model weights")

    # -- state

    def state_payload(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config_yaml": to_yaml(self.config),
            "inputs": self.task.record,
            "model": self.task.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                         "rate_scale": self.rates.scale, "stale": self.stale, "best_epoch": self.best_epoch,
                         "best_value": self.best_value, **{f"sum_{k}": v for k, v in self.sums.items()}},
            "record": json.dumps(_json_safe({**self.record, "best_valid": self.best_valid})),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.restore_position(state)
        set_rng_state(state["rng"])

    def restore_position(self, state: dict[str, Any]) -> None:
        """Epoch, step, best epoch, sums, record and learning rates of a saved state."""
        position = state["position"]
        self.epoch, self.step_in_epoch = int(position["epoch"]), int(position["step_in_epoch"])
        self.global_step, self.stale = int(position["global_step"]), int(position["stale"])
        self.best_epoch, self.best_value = int(position["best_epoch"]), float(position["best_value"])
        self.sums = {k: position[f"sum_{k}"] for k in self.sums}
        record = json.loads(state["record"])
        self.best_valid = record.pop("best_valid") or {}
        self.record = record
        self.rates.restore(float(position["rate_scale"]), self.global_step)

    def save_state(self) -> None:
        save_checkpoint(self.run_dir / "state.pt", self.state_payload())

    def write_record(self) -> None:
        write_json(self.run_dir / "metrics.json", self.record)

    # -- the run

    def run(self) -> RunResult:
        started = time.perf_counter() - float(self.record.get("seconds", 0.0))
        model, config = self.task.model, self.config
        log.info("run %s: model %s, %s parameters, %d threads", self.run_dir, config.model["name"],
                 f"{self.record['parameters']:,}", torch.get_num_threads())
        if self.epoch == 0 and self.step_in_epoch == 0:
            self.task.check()
        if not self.trainable:
            model.fit_statistics(self.task.loader("train"))
            self.best_valid, self.best_epoch = self.task.evaluate("valid"), 0
            self.record["epochs"].append({"epoch": 0, "valid": self.best_valid})
            self.logs.epoch(self.record["epochs"][-1], self.metric)
            if config.train.checkpoint:
                save_checkpoint(self.run_dir / "checkpoint.pt", checkpoint_payload(self.task, 0, self.best_valid))
        else:
            while self.epoch < config.train.epochs and not self._patience_spent():
                self.train_epoch()
            if config.train.checkpoint and self.best_epoch > 0:
                self.load_best()
        test = self.task.evaluate("test")
        self.record.update(best_epoch=self.best_epoch, valid=self.best_valid, test=test,
                           seconds=round(time.perf_counter() - started, 2))
        self.write_record()
        log.info("best epoch %d; test %s", self.best_epoch, json.dumps(_json_safe(test)))
        return RunResult(self.run_dir, self.best_epoch, self.best_valid, test, self.record["epochs"],
                         self.record["seconds"])

    def step(self, batch: Any, weight: float = 1.0) -> float:
        """One optimisation step at ``self.global_step``, its negatives drawn from (seed, step); the loss."""
        seed_negatives(self.modules, self.config.train.seed, self.global_step)
        return train_step(self.task, self.optimizer, batch, self._loss, weight, self.modules)

    def train_epoch(self) -> dict[str, float]:
        """One more epoch: train, let modules end it (``EndsEpochs``), validate, keep the best;
        returns the validation metrics."""
        self._train_epoch()
        for module in self.task.model.modules():
            if isinstance(module, EndsEpochs):
                module.end_epoch(self.epoch + 1)
        self._end_epoch()
        return self.record["epochs"][-1]["valid"]

    def _patience_spent(self) -> bool:
        patience = self.config.train.patience
        if patience and self.stale >= patience:
            log.info("early stop: %d epochs without a better valid %s", self.stale, self.metric)
            return True
        return False

    def _batches(self):
        """This epoch's training batches from the saved position on (earlier ones are built and
        skipped, so the order is the uninterrupted run's)."""
        train_set = self.task.dataset("train", shuffle=True)
        train_set.set_epoch(self.epoch)
        limit = self.config.train.max_steps_per_epoch
        total = len(train_set) if isinstance(train_set, Sized) else None
        if limit and total:
            total = min(total, limit)
        loader = iter(make_loader(train_set, self.config.data.num_workers))
        for _ in range(self.step_in_epoch):
            next(loader, None)
        return self.logs.bar(loader, None if total is None else max(total - self.step_in_epoch, 0),
                             f"epoch {self.epoch + 1}/{self.config.train.epochs}")

    def _train_epoch(self) -> None:
        config, model, sums = self.config, self.task.model, self.sums
        model.train()
        every = config.train.checkpoint_every
        bar = self._batches()
        clock = time.perf_counter()
        for batch, weight in self._steps(bar):
            if config.train.max_steps_per_epoch and self.step_in_epoch >= config.train.max_steps_per_epoch:
                break
            factor = self.rates.step(self.global_step)
            value = self.step(batch, weight)
            sums["loss"] += value
            sums["window_loss"] += value
            sums["window_steps"] += 1
            sums["steps"] += 1
            sums["examples"] += len(batch) if weight else 0
            self.step_in_epoch += 1
            self.global_step += 1
            if sums["steps"] % 20 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / sums['steps']:.4f}")
            if self.global_step % config.train.log_every == 0:
                self.logs.step(self.global_step, self.epoch + 1, config.train.learning_rate * factor,
                               sums["window_loss"] / sums["window_steps"])
                sums["window_loss"], sums["window_steps"] = 0.0, 0
            if every and self.global_step % every == 0:
                sums["seconds"] += time.perf_counter() - clock
                clock = time.perf_counter()
                self.save_state()
        bar.close()
        sums["seconds"] += time.perf_counter() - clock

    def _end_epoch(self) -> None:
        config, sums = self.config, self.sums
        valid = self.task.evaluate("valid")
        seconds = sums["seconds"]
        entry = {"epoch": self.epoch + 1, "train_loss": sums["loss"] / max(sums["steps"], 1), "steps": sums["steps"],
                 "train_seconds": round(seconds, 2),
                 "examples_per_s": round(sums["examples"] / max(seconds, 1e-9), 1),
                 "global_step": self.global_step, "valid": valid}
        self.record["epochs"].append(entry)
        value = valid.get(self.metric)
        if value is None:
            raise ValueError(f"train.monitor: the validation metrics have no '{self.metric}' "
                             f"(they have: {', '.join(sorted(valid))})")
        self.logs.epoch(entry, self.metric)
        signed = value if self.higher_is_better else -value
        if signed > self.best_value:
            self.best_value, self.best_epoch, self.best_valid, self.stale = signed, self.epoch + 1, valid, 0
            if config.train.checkpoint:
                self.save_best(self.epoch + 1, valid)
        else:
            self.stale += 1
            self.rates.decay(config.train.plateau_decay)
            if config.train.plateau_decay < 1:
                log.info("no better valid %s: learning rates x%g", self.metric, self.rates.scale)
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums = {key: 0 if isinstance(value, int) else 0.0 for key, value in self.sums.items()}
        self.record["best_epoch"] = self.best_epoch
        self.write_record()
        self.save_state()


def run_in_folder(run_dir: Path, logs: RunLogs, body: Callable[[], T]) -> T:
    """Run ``body`` as the run of ``run_dir``: ``status.json`` says running, then finished or failed
    (with the reason; the traceback goes to ``train.log``); the logs are closed either way."""
    write_status(run_dir, "running")
    try:
        result = body()
    except BaseException as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        write_status(run_dir, "failed", reason)
        log.error("run failed: %s", reason)
        with (run_dir / "train.log").open("a") as handle:  # the traceback is for the log file, not the console
            handle.write(traceback.format_exc())
        raise
    finally:
        logs.close()
    write_status(run_dir, "finished")
    return result


def _run(task: Task, run_dir: Path, progress: bool | None, state: dict[str, Any] | None) -> RunResult:
    logs = RunLogs(run_dir, progress=progress, resume=state is not None)
    return run_in_folder(run_dir, logs, lambda: Trainer(task, run_dir, logs, state).run())


def train(config: ExperimentConfig, progress: bool | None = None, run_dir: Path | None = None) -> RunResult:
    """Train ``config``'s model, keep the best validation epoch, report its test metrics.

    The run folder is written as the run goes (see the module docstring); a run that fails
    leaves ``status.json`` saying why, and ``resume(run_dir)`` continues a stopped one.
    ``progress``: progress bars (None: only when stderr is a terminal)."""
    config = copy.deepcopy(config)
    seed_everything(config.train.seed)
    set_threads(config.train.threads)
    run_dir = run_dir or new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.data.path = str(Path(config.data.path).resolve())
    (run_dir / "config.yaml").write_text(to_yaml(config))
    write_status(run_dir, "running")
    try:
        task = build_task(config)
    except BaseException as error:
        write_status(run_dir, "failed", f"{type(error).__name__}: {error}")
        raise
    (run_dir / "config.yaml").write_text(to_yaml(task.config))
    return _run(task, run_dir, progress, None)


def resume(run_dir: str | Path, progress: bool | None = None, data_path: str | Path | None = None,
           threads: int | None = None) -> RunResult:
    """Continue a stopped run from its ``state.pt``; a run with no saved state yet starts again
    from its resolved config in the same folder. ``threads`` overrides ``train.threads`` (results
    repeat to the digit only at the thread count of the first run)."""
    config, task, payload = saved_run(run_dir, STATE_FORMAT, ("position",), data_path, threads)
    if payload is None:
        return train(config, progress, Path(run_dir))
    log.info("resuming %s at epoch %d, step %d", run_dir, payload["position"]["epoch"] + 1,
             payload["position"]["step_in_epoch"])
    return _run(task, Path(run_dir), progress, payload)


def saved_run(run_dir: str | Path, fmt: str, keys: tuple[str, ...], data_path: str | Path | None = None,
              threads: int | None = None) -> tuple[ExperimentConfig, Task | None, dict[str, Any] | None]:
    """What a stopped run resumes from: its config, its task with the saved weights and the saved
    state (``state.pt`` of format ``fmt``, with ``keys`` besides the common ones); or, for a run
    stopped before its first save, the config of ``config.yaml`` and no task or state.
    ``threads`` overrides ``train.threads``, and is set."""
    run_dir = Path(run_dir)
    path = run_dir / "state.pt"
    if not path.exists():
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no state.pt, no config.yaml)")
        config = from_dict(ExperimentConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
        if data_path is not None:
            config.data.path = str(Path(data_path).resolve())
        if threads is not None:
            config.train.threads = threads
        return config, None, None
    payload = load_checkpoint(path)
    _check_payload(payload, path, fmt, ("config_yaml", "inputs", "model", "optimizer", "rng", *keys))
    config = _config_from(payload, path, data_path)
    if threads is not None:
        config.train.threads = threads
    set_threads(config.train.threads)
    task = task_class(config.task).from_record(config, payload["inputs"])
    _load_weights(task.model, payload["model"], path, "model weights")
    return config, task, payload
