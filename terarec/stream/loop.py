"""The streaming loop: each chunk evaluated, then trained on, then committed with its name; one pass; resumable.

For every chunk the source hands out, in order (the task kind says how a chunk becomes metrics and
batches: ``Task.stream_evaluate`` / ``stream_batches`` / ``before_stream_step`` /
``after_stream_chunk``; ``ctr`` rows are examples, ``sequential`` rows are positives appended to
users' histories, ``terarec.train.sequence_stream``):

1. **progressive validation**: the model as it stands scores the chunk (evaluation mode: the
   managed vocabularies only look up, so ids never seen score on the default row);
2. **training** on the chunk (shuffled with a seed of ``train.seed`` and the chunk's position),
   one step per batch with the trainer's step (``terarec.train.loop.train_step``); before each
   batch the batch's latest event time is the managed vocabularies' clock, so TTL eviction runs
   in event time; the ids admitted, evicted and not admitted are counted per chunk;
3. **carrying** what the task remembers past the chunk (a sequential task's user histories),
   trained on or not;
4. **publishing**: a delta every ``stream.delta_every`` chunks (``terarec.stream.publish``);
5. **commit**: ``state.pt`` (weights, optimizer, vocabulary state, the task's carried state, RNG,
   the last chunk's name, the record) written beside itself and renamed over the old one, then
   ``checkpoint.pt`` (the latest weights, self-contained: ``terarec eval``, ``Predictor.from_run``
   and ``export`` read it).

A run killed at any moment resumes (``resume_stream``) after the last committed chunk and ends with
the weights and metrics of a run never stopped (same thread count). The run folder holds the
trainer's files, with ``chunks.csv`` (one row per chunk: its name, rows, train loss, events/s,
the progressive metrics ``valid_*`` and the vocabulary counts ``vocab_*``) in place of
``epochs.csv``, and ``curves.png`` drawing the metrics per chunk.

Example:
    >>> result = stream(load_config("configs/stream/wukong.yaml"))  # doctest: +SKIP
    >>> result.chunks[-1]["valid"]["auc"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terarec.config import ExperimentConfig, to_yaml
from terarec.embedding.vocabulary import ManagedVocabulary
from terarec.models.protocols import parameter_count
from terarec.train.checkpoint import save_checkpoint
from terarec.train.logs import RunLogs
from terarec.train.loop import (checkpoint_payload, make_optimizer, new_run_dir, rng_state, run_in_folder, saved_run,
                                seed_negatives, set_rng_state, train_step, write_json)
from terarec.train.setup import seed_everything, set_threads
from terarec.train.tasks import Task, task_class
from terarec.stream.publish import DeltaPublisher
from terarec.stream.source import Chunk, ChunkSource, ParquetFolderSource

log = logging.getLogger("terarec")

STREAM_STATE_FORMAT = "terarec.stream-state.v1"
VOCABULARY_COUNTERS = ("admitted_count", "evicted_count", "not_admitted_count")


@dataclass
class StreamResult:
    """What a finished streaming run reports."""

    run_dir: Path
    chunks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def folder_source(config: ExperimentConfig) -> ParquetFolderSource:
    """The config's source: the Parquet partitions of ``data.path``, read for the task's columns (and the
    user column for gAUC, where the files have one)."""
    columns = task_class(config.task).stream_columns(config)
    options = config.stream
    return ParquetFolderSource(config.data.path, columns, follow=options.follow, poll_seconds=options.poll_seconds,
                               idle_seconds=options.idle_seconds, optional_columns=[config.data.user_column])


class StreamTrainer:
    """One streaming run of ``task`` in ``run_dir`` over ``source``, from the start or a committed state."""

    def __init__(self, task: Task, run_dir: Path, logs: RunLogs, source: ChunkSource,
                 state: dict[str, Any] | None = None) -> None:
        self.task, self.run_dir, self.config, self.logs, self.source = task, run_dir, task.config, logs, source
        self.metric, _ = task.monitor()
        self.optimizer, self.rates = make_optimizer(task)
        self.vocabularies = [module for module in task.model.modules() if isinstance(module, ManagedVocabulary)]
        every = self.config.stream.delta_every
        self.publisher = DeltaPublisher(run_dir, task.kind, every) if every > 0 else None
        self.chunks_done, self.global_step, self.last_chunk = 0, 0, None
        self.record: dict[str, Any] = {"name": self.config.name, "model": self.config.model["name"],
                                       "task": self.config.task, "parameters": parameter_count(task.model),
                                       "chunks": [], "seconds": 0.0}
        if state is not None:
            self._restore(state)

    # -- state

    def _payload(self) -> dict[str, Any]:
        payload = {
            "format": STREAM_STATE_FORMAT, "config_yaml": to_yaml(self.config), "inputs": self.task.record,
            "model": self.task.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
            "position": {"chunks_done": self.chunks_done, "global_step": self.global_step},
            "last_chunk": self.last_chunk or "", "record": json.dumps(self.record),
            "task_state": self.task.stream_state(),
        }
        if self.publisher is not None:
            payload["publisher"] = self.publisher.state()
        return payload

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.chunks_done = int(state["position"]["chunks_done"])
        self.global_step = int(state["position"]["global_step"])
        self.last_chunk = state["last_chunk"] or None
        self.record = json.loads(state["record"])
        self.task.load_stream_state(state.get("task_state", {}))
        self.rates.restore(1.0, self.global_step)
        if self.publisher is not None:
            self.publisher.restore(state["publisher"], self.task.model)
        set_rng_state(state["rng"])

    def _commit(self, valid: dict[str, float]) -> None:
        save_checkpoint(self.run_dir / "state.pt", self._payload())
        save_checkpoint(self.run_dir / "checkpoint.pt", checkpoint_payload(self.task, self.chunks_done, valid))
        write_json(self.run_dir / "metrics.json", self.record)

    # -- the run

    def run(self) -> StreamResult:
        started = time.perf_counter() - float(self.record["seconds"])
        log.info("stream %s: model %s, %s parameters, %d threads, from %s", self.run_dir, self.config.model["name"],
                 f"{self.record['parameters']:,}", torch.get_num_threads(), self.last_chunk or "the first chunk")
        if self.publisher is not None and self.chunks_done == 0:
            save_checkpoint(self.run_dir / "checkpoint.pt", checkpoint_payload(self.task, 0, {}))
            self.publisher.export_base(self.task.model)
        limit = self.config.stream.max_chunks
        while not limit or self.chunks_done < limit:
            chunk = self.source.next_chunk(self.last_chunk)
            if chunk is None:
                break
            self._apply(chunk)
            self.record["seconds"] = round(time.perf_counter() - started, 2)
        write_json(self.run_dir / "metrics.json", self.record)
        log.info("stream ended after %d chunks (last: %s)", self.chunks_done, self.last_chunk)
        return StreamResult(self.run_dir, self.record["chunks"], self.record["seconds"])

    def _vocabulary_counts(self) -> dict[str, int]:
        counts = {"size": sum(vocab.num_admitted for vocab in self.vocabularies)}
        for counter in VOCABULARY_COUNTERS:
            counts[counter.removesuffix("_count")] = sum(int(getattr(vocab, counter))
                                                         for vocab in self.vocabularies)
        return counts

    def _apply(self, chunk: Chunk) -> None:
        config, model, table = self.config, self.task.model, chunk.table
        if config.stream.time_column not in table.column_names:
            raise ValueError(f"{chunk.name}: no column '{config.stream.time_column}' (stream.time_column)")
        valid = self.task.stream_evaluate(table)
        before = self._vocabulary_counts()
        trains = not config.stream.train_chunks or self.chunks_done < config.stream.train_chunks
        losses, clock = [], time.perf_counter()
        if trains:
            model.train()
            rng = np.random.default_rng([config.train.seed, self.chunks_done]) if config.stream.shuffle else None
            for event_time, batch in self.task.stream_batches(table, rng):
                for vocab in self.vocabularies:
                    vocab.set_event_time(event_time)
                factor = self.rates.step(self.global_step)
                batch = self.task.before_stream_step(batch, self.optimizer)
                seed_negatives(model, config.train.seed, self.global_step)  # as the trainer draws them
                losses.append(train_step(self.task, self.optimizer, batch))
                self.global_step += 1
                if self.global_step % config.train.log_every == 0:
                    window = losses[-config.train.log_every:]
                    self.logs.step(self.global_step, self.chunks_done + 1, config.train.learning_rate * factor,
                                   sum(window) / len(window))
        seconds = time.perf_counter() - clock
        carried = self.task.after_stream_chunk(table)  # trained on or not: e.g. the users' histories
        after = self._vocabulary_counts()
        self.chunks_done += 1
        self.last_chunk = chunk.name
        entry = {"chunk": self.chunks_done, "name": chunk.name, "rows": table.num_rows, "trained": trains,
                 "steps": len(losses), "global_step": self.global_step, "train_seconds": round(seconds, 2),
                 "examples_per_s": round(table.num_rows / max(seconds, 1e-9), 1) if trains else 0.0,
                 "valid": valid,
                 "vocab": {"size": after["size"], **{key: after[key] - before[key] for key in after if key != "size"}}}
        if losses:
            entry["train_loss"] = sum(losses) / len(losses)
        if carried:
            entry["carried"] = carried
        self.record["chunks"].append(entry)
        if self.publisher is not None:
            self.publisher.after_chunk(self.chunks_done, model)
        self.logs.epoch(entry, self.metric)  # before the commit: a chunk trained again is logged again, once
        log.info("chunk %d (%s): vocabulary %s", self.chunks_done, chunk.name, json.dumps(entry["vocab"]))
        self._commit(valid)


def _run(task: Task, run_dir: Path, source: ChunkSource | None, progress: bool | None,
         state: dict[str, Any] | None) -> StreamResult:
    source = source or folder_source(task.config)  # a bad source fails here, before the run's logs start
    logs = RunLogs(run_dir, progress=progress, resume=state is not None, unit="chunk")
    return run_in_folder(run_dir, logs, lambda: StreamTrainer(task, run_dir, logs, source, state).run())


def stream(config: ExperimentConfig, progress: bool | None = None, run_dir: Path | None = None,
           source: ChunkSource | None = None) -> StreamResult:
    """Stream ``config``'s model over the chunks of ``source`` (default: the Parquet partitions of
    ``data.path``) in one pass; see the module docstring."""
    config = copy.deepcopy(config)
    seed_everything(config.train.seed)
    set_threads(config.train.threads)
    if config.data.dense is None:
        config.data.dense = []
    config.data.path = str(Path(config.data.path).resolve())
    cls = task_class(config.task)
    task = cls.from_record(config, cls.streaming_record(config))
    source = source or folder_source(config)  # a bad source fails before a run folder is made
    run_dir = run_dir or new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    return _run(task, run_dir, source, progress, None)


def resume_stream(run_dir: str | Path, progress: bool | None = None, source: ChunkSource | None = None,
                  threads: int | None = None) -> StreamResult:
    """Continue a streaming run after its last committed chunk (from the start if it committed none)."""
    run_dir = Path(run_dir)
    config, task, payload = saved_run(run_dir, STREAM_STATE_FORMAT, ("position", "last_chunk", "record"),
                                      threads=threads)
    if payload is None:
        return stream(config, progress, run_dir, source)
    log.info("resuming stream %s after chunk %s", run_dir, payload["last_chunk"] or "(none)")
    return _run(task, run_dir, source, progress, payload)
