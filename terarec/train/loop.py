"""The training loop both task kinds share: fit, validate each epoch, keep the best, test.

A run writes its folder as it goes: ``config.yaml`` (the resolved config), ``train.log``,
``metrics.json`` (updated after every epoch), ``steps.csv`` (running train loss and learning
rate every ``train.log_every`` steps), ``epochs.csv`` (one row per epoch: loss, speed,
validation metrics) and ``checkpoint.pt`` (the best epoch so far, written atomically), so a
run stopped part way keeps every finished epoch.

Optimizers: Adam for the dense parameters (and for tables kept as parameters,
``embedding.optimizer: adam``); tables on the embedding engine are updated inside backward
by their own sparse optimizer (row-wise Adagrad by default). ``train.warmup_steps`` ramps
both learning rates linearly.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from terarec.config import ExperimentConfig, to_yaml
from terarec.data.batches import make_loader
from terarec.eval.evaluate import evaluate_ctr, evaluate_ranking
from terarec.train.checkpoint import load_checkpoint, save_checkpoint
from terarec.train.setup import (
    Task,
    build_task,
    seed_everything,
    set_threads,
    vocabulary_record,
)

log = logging.getLogger("terarec")


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def selection_metric(config: ExperimentConfig) -> str:
    """The validation metric that picks the best epoch: AUC for CTR (the mean over labels for
    several), NDCG@K (first K) for sequences."""
    if config.task == "ctr":
        return "auc" if len(config.data.labels or [None]) == 1 else "mean_auc"
    return f"ndcg@{config.eval.ks[0]}"


def _json_safe(value: Any) -> Any:
    """NaN / inf (e.g. gAUC with no usable user) become null: metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


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


def _attach_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def evaluate(task: Task, split: str, progress: bool = False) -> dict[str, float]:
    """Metrics of the task's model on one split."""
    loader = make_loader(task.dataset(split), task.config.data.num_workers)
    if task.config.task == "ctr":
        return evaluate_ctr(task.model, loader, task.inputs.labels, progress=progress)
    eval_config = task.config.eval
    return evaluate_ranking(task.model, loader, eval_config.ks, eval_config.protocol, eval_config.num_sampled,
                            task.config.train.seed, progress=progress)


def _training_loss(task: Task, batch) -> torch.Tensor:
    """A model's own ``loss(batch)`` when it has one (sequence models; CTR models with an
    auxiliary loss such as DIEN's), else binary cross-entropy of its logits."""
    if hasattr(task.model, "loss"):
        return task.model.loss(batch)
    return F.binary_cross_entropy_with_logits(task.model(batch), batch.labels)


def embedding_penalty(model: torch.nn.Module, coefficient: float) -> torch.Tensor | None:
    """lambda/2 * sum ||W||^2 over the tables kept as parameters (``embedding.regularization``)."""
    if coefficient <= 0:
        return None
    weights = [w for module in model.modules() if hasattr(module, "table_weights") for w in module.table_weights()]
    if not weights:
        return None
    return 0.5 * coefficient * sum(weight.square().sum() for weight in weights)


class LearningRates:
    """The learning rates of the dense optimizer and of the engine's sparse optimizers, moved
    together: a linear warm-up over the first ``warmup_steps`` steps, and a decay by a factor
    after each epoch without a better validation metric."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, warmup_steps: int,
                 sparse_learning_rate: float) -> None:
        self.optimizer, self.warmup_steps = optimizer, warmup_steps
        self.dense = [group["lr"] for group in optimizer.param_groups]
        self.sparse_modules = [m for m in model.modules()
                               if hasattr(m, "set_learning_rate") and hasattr(m, "fused_parameters")]
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


class CSVLog:
    """Appends rows to a CSV file in the run folder, header first."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerow(columns)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row.get(column, "") for column in self.columns])


def checkpoint_payload(task: Task, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "format": "terarec.checkpoint.v1",
        "config_yaml": to_yaml(task.config),
        "epoch": epoch,
        "metrics": metrics,
        "model": task.model.state_dict(),
        "vocabularies": vocabulary_record(task.inputs.vocabularies),
    }


def load_task(run_dir: str | Path) -> Task:
    """Rebuild a run's task and load its best checkpoint (``weights_only=True``)."""
    import yaml

    from terarec.config import check_model_options, from_dict

    payload = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    config = from_dict(ExperimentConfig, yaml.safe_load(payload["config_yaml"]))
    check_model_options(config)
    task = build_task(config, vocabulary_ids=payload["vocabularies"])
    task.model.load_state_dict(payload["model"])
    return task


def train(config: ExperimentConfig, progress: bool = True, run_dir: Path | None = None) -> RunResult:
    """Train ``config``'s model, keep the best validation epoch, report its test metrics."""
    started = time.perf_counter()
    seed_everything(config.train.seed)
    threads = set_threads(config.train.threads)
    run_dir = run_dir or new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    handler = _attach_log(run_dir)
    try:
        task = build_task(config)
        model = task.model
        # Tables trained inside backward are not nn.Parameters; count them too.
        fused = [t for m in model.modules() if hasattr(m, "fused_parameters") for t in m.fused_parameters()]
        n_params = sum(p.numel() for p in model.parameters()) + sum(t.numel() for t in fused)
        log.info("run %s: model %s, %s parameters, %d threads", run_dir, config.model["name"], f"{n_params:,}", threads)
        metric = selection_metric(config)
        record: dict[str, Any] = {"name": config.name, "model": config.model["name"], "task": config.task,
                                  "parameters": n_params, "epochs": [], "selection_metric": metric}
        best_value, best_epoch, best_valid = -math.inf, -1, {}

        def write_record() -> None:
            tmp = run_dir / "metrics.json.tmp"
            tmp.write_text(json.dumps(_json_safe(record), indent=2))
            tmp.replace(run_dir / "metrics.json")

        if not getattr(model, "trainable", True):
            model.fit_statistics(make_loader(task.dataset("train"), config.data.num_workers))
            best_valid, best_epoch = evaluate(task, "valid"), 0
            record["epochs"].append({"epoch": 0, "valid": best_valid})
            if config.train.checkpoint:
                save_checkpoint(run_dir / "checkpoint.pt", checkpoint_payload(task, 0, best_valid))
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate,
                                         weight_decay=config.train.weight_decay)
            rates = LearningRates(optimizer, model, config.train.warmup_steps,
                                  config.embedding.learning_rate or config.train.learning_rate)
            step_log = CSVLog(run_dir / "steps.csv", ["step", "epoch", "learning_rate", "train_loss"])
            epoch_log: CSVLog | None = None
            train_set = task.dataset("train", shuffle=True)
            stale, global_step = 0, 0
            for epoch in range(config.train.epochs):
                train_set.set_epoch(epoch)
                model.train()
                epoch_start = time.perf_counter()
                total_loss, steps, examples = 0.0, 0, 0
                total = len(train_set) if hasattr(train_set, "__len__") else None
                if config.train.max_steps_per_epoch and total:
                    total = min(total, config.train.max_steps_per_epoch)
                bar = tqdm(make_loader(train_set, config.data.num_workers), total=total,
                           desc=f"epoch {epoch + 1}/{config.train.epochs}", disable=not progress, leave=False)
                window_loss, window_steps = 0.0, 0
                for batch in bar:
                    factor = rates.step(global_step)
                    loss = _training_loss(task, batch)
                    penalty = embedding_penalty(model, config.embedding.regularization)
                    optimizer.zero_grad(set_to_none=True)
                    (loss if penalty is None else loss + penalty).backward()
                    optimizer.step()
                    value = loss.item()
                    total_loss += value
                    window_loss += value
                    window_steps += 1
                    steps += 1
                    global_step += 1
                    examples += len(batch)
                    if steps % 20 == 0:
                        bar.set_postfix(loss=f"{total_loss / steps:.4f}")
                    if global_step % config.train.log_every == 0:
                        step_log.write({"step": global_step, "epoch": epoch + 1,
                                        "learning_rate": config.train.learning_rate * factor,
                                        "train_loss": round(window_loss / window_steps, 6)})
                        window_loss, window_steps = 0.0, 0
                    if config.train.max_steps_per_epoch and steps >= config.train.max_steps_per_epoch:
                        break
                bar.close()
                train_seconds = time.perf_counter() - epoch_start
                valid = evaluate(task, "valid")
                entry = {"epoch": epoch + 1, "train_loss": total_loss / max(steps, 1), "steps": steps,
                         "train_seconds": round(train_seconds, 2),
                         "examples_per_s": round(examples / max(train_seconds, 1e-9), 1), "valid": valid}
                record["epochs"].append(entry)
                if epoch_log is None:
                    epoch_log = CSVLog(run_dir / "epochs.csv", ["epoch", "train_loss", "steps", "train_seconds",
                                                                "examples_per_s", *[f"valid_{k}" for k in valid]])
                epoch_log.write({**entry, **{f"valid_{k}": v for k, v in valid.items()}})
                log.info("epoch %d: loss %.4f, valid %s %.4f, %.1fs", epoch + 1, entry["train_loss"], metric,
                         valid.get(metric, float("nan")), train_seconds)
                if progress:
                    tqdm.write(f"epoch {epoch + 1}: train loss {entry['train_loss']:.4f}, "
                               f"valid {metric} {valid.get(metric, float('nan')):.4f} ({train_seconds:.1f}s)")
                if valid.get(metric, -math.inf) > best_value:
                    best_value, best_epoch, best_valid, stale = valid[metric], epoch + 1, valid, 0
                    if config.train.checkpoint:
                        save_checkpoint(run_dir / "checkpoint.pt", checkpoint_payload(task, epoch + 1, valid))
                else:
                    stale += 1
                    rates.decay(config.train.plateau_decay)
                    if config.train.plateau_decay < 1:
                        log.info("no better valid %s: learning rates x%g", metric, rates.scale)
                write_record()
                if config.train.patience and stale >= config.train.patience:
                    log.info("early stop: %d epochs without a better valid %s", stale, metric)
                    break
            if config.train.checkpoint and best_epoch > 0:
                model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
        test = evaluate(task, "test")
        record.update(best_epoch=best_epoch, valid=best_valid, test=test,
                      seconds=round(time.perf_counter() - started, 2))
        write_record()
        log.info("best epoch %d; test %s", best_epoch, json.dumps(test))
        return RunResult(run_dir, best_epoch, best_valid, test, record["epochs"], record["seconds"])
    finally:
        log.removeHandler(handler)
        handler.close()
