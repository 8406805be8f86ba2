"""Training on several processes and hosts: the one training loop under torchrun, TorchRec's
``DistributedModelParallel`` for the tables, DDP for the dense part, sharded checkpoints.

``terarec train CONFIG --nproc N`` (``launch``) starts N worker processes through
``torch.distributed.run`` (torchrun; gloo on CPU, NCCL on GPU); each worker runs ``train_worker``:

* **Model.** The task builds its model as in one process, except that ``pooled_embeddings``
  returns TorchRec ``EmbeddingBagCollection``s tagged with their fused optimizer
  (``terarec.embedding.factory.shardable_pooled_embeddings``). ``shard`` wraps the training step
  in ``DistributedModelParallel``: the planner shards every collection (table-wise, column-wise,
  table-column-wise; ``embedding.sharding_types`` narrows the choice), FBGEMM's fused row-wise
  Adagrad / SGD update the shards inside backward, and the rest is under DDP with Adam.
  Sequence models' unpooled tables stay dense parameters under DDP.
* **Data.** Each process reads its own share of every split (CTR: ``SplitDataset.readers``;
  sequences: its slice of each of one process's batches, so a step's global batch is one
  process's batch); the config's batch sizes are global. The processes step in lockstep
  (``lockstep``): a process out of batches while others still have some repeats its last batch
  with weight 0, so the collectives of the sharded forward always match.
* **One process's step.** A step of N processes is one process's step on the global batch: each
  process's mean loss is weighed by its share of the global batch's loss terms (examples, or a
  sequence model's predicted positions: ``loss_shares``), so DDP's average of the gradients (and
  TorchRec's, which divides the tables' gradients by N in the all-to-all backward) is the
  gradient of the global mean; sampled negatives are drawn from (seed, global step), the same on
  every process (``terarec.train.loop.seed_negatives``).
* **Evaluation** runs on every process's share and joins the predictions (``all_gather``) before
  the metrics: global AUC / LogLoss / gAUC and full-catalogue HR / NDCG, not a mean of shares.
* **Checkpoints.** The resumable state is a ``torch.distributed.checkpoint`` folder per save
  (``state-<step>/``: model and optimizer shards, plus rank 0's ``position.pt``), written under a
  temporary name, renamed, then named in ``state.json`` (atomic); it loads at any world size
  (DCP reshards). The best epoch is also consolidated into the ordinary ``checkpoint.pt``, so
  ``terarec eval`` / ``predict`` / ``export`` use a distributed run like any other.
* **Faults.** torchrun watches the workers: one that dies ends the others (and the job, with
  the failed rank's error); ``--max-restarts K`` restarts them, and they resume from the last
  state of the run folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torchrec import EmbeddingBagCollection
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from terarec.config import ExperimentConfig, to_yaml
from terarec.embedding.factory import engine_state_dict
from terarec.models.protocols import CountsLossTerms
from terarec.runtime import cpu_quota
from terarec.train.checkpoint import load_checkpoint, save_checkpoint
from terarec.train.logs import RunLogs
from terarec.train.loop import (
    CHECKPOINT_FORMAT,
    RunResult,
    Trainer,
    _config_from,
    new_run_dir,
    write_status,
)
from terarec.train.setup import seed_everything, set_threads
from terarec.train.tasks import Task, build_task, task_class

log = logging.getLogger("terarec")

POINTER = "state.json"  # names the latest complete state folder of a distributed run
POSITION_FORMAT = "terarec.state.distributed.v1"
SHARDING_TYPES = ("table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel")
TIMEOUT_SECONDS = 300  # a collective that waits longer (a dead or stuck peer) fails


# ---- process group


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def launched_rank() -> int:
    """This process's rank as torchrun numbered it (``RANK``), also after the group has ended."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def init_process_group() -> None:
    """Join the job torchrun started (its environment variables): NCCL on GPU, gloo on CPU."""
    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(seconds=int(os.environ.get("TERAREC_DIST_TIMEOUT", TIMEOUT_SECONDS)))
    # torchrun's store outlives a restart of its workers (--max-restarts): keys of each attempt
    # under their own prefix, or the new workers read the dead ones' addresses and fail to connect.
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"terarec/attempt-{attempt}", store),
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def end_process_group() -> None:
    """Leave the job cleanly: wait for every process, then tear the group down. Left to the
    interpreter's exit, the group's threads were sometimes destroyed while still joinable, and a
    worker that had finished aborted ("terminate called without an active exception", SIGABRT),
    which failed a finished job."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_array(values: np.ndarray) -> np.ndarray:
    """The concatenation, in rank order, of every process's ``values`` (a ``Gather``)."""
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, np.asarray(values))
    return np.concatenate(parts)


def lockstep(batches: Iterable) -> Iterator[tuple[Any, float]]:
    """(batch, weight) for as long as any process has a batch: every process takes part in every
    step's collectives. A process out of batches repeats its last one with weight 0 (it adds
    nothing to the gradients and no example is counted twice)."""
    last = None
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        more = torch.tensor([0 if batch is None else 1])
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not int(more):
            return
        if batch is not None:
            last = batch
            yield batch, 1.0
        elif last is None:
            raise RuntimeError(f"rank {rank()} has no batch of this split while other processes do: "
                               "the split has fewer batches than processes; use fewer processes or a smaller batch")
        else:
            yield last, 0.0


def loss_shares(steps: Iterable[tuple[Any, float]], terms_of: Callable[[Any], int]) -> Iterator[tuple[Any, float]]:
    """(batch, weight) with ``weight`` this process's share of the step's loss terms times the
    world size: ``N * terms / sum(terms over processes)``. Each process's loss is a mean over its
    own terms (``terms_of``); weighed so, DDP's average of the processes' gradients is the gradient
    of the mean over the global batch, whatever each process holds of it (a padding step, weight
    0, holds nothing)."""
    for batch, weight in steps:
        terms = float(terms_of(batch)) if weight else 0.0
        total = torch.tensor([terms], dtype=torch.float64)
        dist.all_reduce(total)
        yield batch, share_weight(terms, float(total), world_size())


def share_weight(terms: float, total: float, world: int) -> float:
    """The factor on a process's mean loss over ``terms`` of the ``total`` terms of ``world``
    processes such that the average over processes (DDP's) is the mean over all ``total``."""
    return world * terms / total if total > 0 else 0.0


def eval_lockstep(model: nn.Module, batches: Iterable) -> Iterator[Any]:
    """This process's evaluation batches; while others still evaluate, it runs its last batch
    again (output dropped), so the sharded lookups' collectives match."""
    for batch, weight in lockstep(batches):
        if weight:
            yield batch
        else:
            with torch.no_grad():
                model(batch)


# ---- the sharded model


class TrainingStep(nn.Module):
    """The task's loss as a module, so DDP's forward (which prepares the gradient all-reduce)
    runs it; ``model`` is the task's model itself, sharded in place."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.model = task.model
        self._loss = task.loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self._loss(batch)


def table_constraints(model: nn.Module, sharding_types: list[str], column_shard_dim: int = 0
                      ) -> dict[str, ParameterConstraints]:
    """Planner constraints for every table of ``model``: the fused kernel (the configured sparse
    optimizer), the sharding types allowed (empty: the planner's choice) and the width of a
    column-wise shard (0: TorchRec's default)."""
    unknown = [name for name in sharding_types if name not in SHARDING_TYPES]
    if unknown:
        raise ValueError(f"embedding.sharding_types: unknown {unknown}; expected some of {list(SHARDING_TYPES)}")
    kernels = ["dense"] if sharding_types == ["data_parallel"] else ["fused"]
    constraints = {}
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            for table in module.embedding_bag_configs():
                constraints[table.name] = ParameterConstraints(sharding_types=list(sharding_types) or None,
                                                               compute_kernels=kernels,
                                                               min_partition=column_shard_dim or None)
    return constraints


def shard(task: Task) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """The task's training step under ``DistributedModelParallel`` (tables sharded by TorchRec's
    planner, the rest under DDP) and its optimizer: the tables' fused optimizer and Adam."""
    config = task.config
    step = TrainingStep(task)
    sharders = [EmbeddingBagCollectionSharder()]
    topology = Topology(world_size=world_size(), compute_device=device().type,
                        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))
    planner = EmbeddingShardingPlanner(topology=topology,
                                       constraints=table_constraints(step, config.embedding.sharding_types,
                                                                     config.embedding.column_shard_dim))
    plan = planner.collective_plan(step, sharders, dist.GroupMember.WORLD)
    model = DistributedModelParallel(step, device=device(), plan=plan, sharders=sharders,
                                     data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False,
                                                                                      find_unused_parameters=True))
    if rank() == 0:
        log.info("sharding plan:\n%s", plan)
    train = config.train
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=train.learning_rate, weight_decay=train.weight_decay),
    )
    return model, CombinedOptimizer([model.fused_optimizer, dense])


def rank_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this process holds of the sharded tables: its local shards, and their fused
    optimizer state (row-wise Adagrad's momentum), measured on the live tensors."""
    weights = states = 0
    for name, tensor in model.state_dict().items():
        if hasattr(tensor, "local_shards") and "embedding_bags" in name:
            weights += sum(s.tensor.numel() * s.tensor.element_size() for s in tensor.local_shards())
    for key, state in optimizer.state_dict()["state"].items():
        if "embedding_bags" not in key:
            continue
        for value in state.values():
            if hasattr(value, "local_shards"):
                states += sum(s.tensor.numel() * s.tensor.element_size() for s in value.local_shards())
    return {"weights": weights, "optimizer": states, "total": weights + states}


# ---- the trainer


class _SilentLogs:
    """The logs of a rank other than 0: rank 0 alone writes the run folder."""

    progress = False

    def bar(self, iterable, total, desc):
        return RunLogs.bar(self, iterable, total, desc)  # a disabled bar: no progress drawn

    def step(self, *args) -> None:
        pass

    def epoch(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


class DistributedTrainer(Trainer):
    """``Trainer`` with the model sharded over the processes (see the module docstring)."""

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self.sharded, optimizer = shard(self.task)
        self.task.eval_batches = lambda batches: eval_lockstep(self.task.model, batches)
        self.task.gather = all_gather_array
        return optimizer

    def _loss(self, batch: Any) -> torch.Tensor:
        return self.sharded(batch)

    def _sparse_gradient_tables(self) -> list[torch.nn.Parameter]:
        """None: DDP reduces the tables' gradients as dense tensors."""
        return []

    def _steps(self, batches):
        return loss_shares(lockstep(batches), self._loss_terms)

    def _loss_terms(self, batch: Any) -> int:
        model = self.task.model
        return model.loss_terms(batch) if isinstance(model, CountsLossTerms) else len(batch)

    # -- state

    def _state(self) -> dict[str, Any]:
        return {"model": self.sharded.state_dict(), "optimizer": self.optimizer.state_dict()}

    def save_state(self) -> None:
        """A DCP folder of every process's shards, renamed into place and then named in
        ``state.json`` only when complete; older state folders are removed after."""
        name = f"state-{self.global_step:09d}"
        folder, tmp = self.run_dir / name, self.run_dir / f".{name}.tmp"
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        dcp.save(self._state(), checkpoint_id=tmp)
        if rank() == 0:
            payload = self.state_payload()
            del payload["model"], payload["optimizer"], payload["rng"]
            payload.update(format=POSITION_FORMAT, world_size=world_size())
            save_checkpoint(tmp / "position.pt", payload)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            _write_pointer(self.run_dir, name)
            for old in self.run_dir.glob("state-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def restore(self, folder: Path, position: dict[str, Any]) -> None:
        """Load a saved state folder (any world size) and its position."""
        self.optimizer.init_state()  # Adam's state exists before it is loaded into
        state = self._state()
        try:
            dcp.load(state, checkpoint_id=folder)
        except Exception as error:  # DCP raises its own CheckpointException with every rank's failure
            raise RuntimeError(
                f"{folder}: the saved state does not load into {world_size()} processes with this sharding plan "
                f"({str(error).strip().splitlines()[-1][:300]}). Weights reshard across any plan, the fused "
                "optimizer state (row-wise Adagrad's momentum) only across the same column split: resume "
                "with the world size it was saved at, or set embedding.sharding_types=[table_wise]"
            ) from error
        self.sharded.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.restore_position(position)
        saved_world = int(position["world_size"])
        if saved_world != world_size() and self.step_in_epoch:
            log.warning("the state was saved by %d processes at step %d of epoch %d; %d processes read other "
                        "shares of the data, so that epoch restarts from its beginning", saved_world,
                        self.step_in_epoch, self.epoch + 1, world_size())
            self.step_in_epoch = 0
            self.sums = {key: 0 if isinstance(value, int) else 0.0 for key, value in self.sums.items()}
        _seed_process(self.config.train.seed, self.global_step)

    def save_best(self, epoch: int, valid: dict[str, float]) -> None:
        """The best weights as a DCP folder (``best/``), consolidated by rank 0 into ``checkpoint.pt``."""
        folder, tmp = self.run_dir / "best", self.run_dir / ".best.tmp"
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        dcp.save({"model": self.sharded.state_dict()}, checkpoint_id=tmp)
        if rank() == 0:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            write_consolidated_checkpoint(self.task, folder, self.run_dir / "checkpoint.pt", epoch, valid)
        dist.barrier()

    def load_best(self) -> None:
        state = {"model": self.sharded.state_dict()}
        dcp.load(state, checkpoint_id=self.run_dir / "best")
        self.sharded.load_state_dict(state["model"])

    def write_record(self) -> None:
        if rank() == 0:
            super().write_record()


def _write_pointer(run_dir: Path, name: str) -> None:
    tmp = run_dir / f".{POINTER}.tmp"
    tmp.write_text(f'{{"format": "{POSITION_FORMAT}", "state": "{name}"}}\n')
    os.replace(tmp, run_dir / POINTER)


def latest_state(run_dir: Path) -> Path | None:
    """The state folder ``state.json`` names, or None before the first save."""
    import json

    pointer = run_dir / POINTER
    if not pointer.exists():
        return None
    record = json.loads(pointer.read_text())
    if record.get("format") != POSITION_FORMAT:
        raise ValueError(f"{pointer}: expected format {POSITION_FORMAT!r}, found {record.get('format')!r}")
    return run_dir / record["state"]


def write_consolidated_checkpoint(task: Task, folder: Path, path: Path, epoch: int, metrics: dict[str, float]) -> None:
    """The ordinary one-process ``checkpoint.pt`` (``terarec.checkpoint.v2``) from a DCP folder of
    sharded weights: full tables in the engine's layout (the optimizer state is not part of it)."""
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        full = Path(scratch) / "full.pt"
        dcp_to_torch_save(folder, full)
        state = torch.load(full, map_location="cpu", weights_only=True)["model"]
    prefix = "model."
    weights = {key.removeprefix(prefix): value for key, value in state.items()}
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "config_yaml": to_yaml(task.config), "inputs": task.record, "epoch": epoch,
        "metrics": metrics, "model": engine_state_dict(weights, task.config.embedding),
    })


def _seed_process(seed: int, global_step: int) -> None:
    """Each process's own random stream (dropout, negatives), fixed by the seed, step and rank."""
    seed_everything(int(np.random.SeedSequence([seed, global_step, rank()]).generate_state(1)[0]))


# ---- entry points


def _check_task(config: ExperimentConfig) -> None:
    if config.task == "ranking":
        raise ValueError("task 'ranking' does not run on several processes yet (its dataset has no per-process "
                         "shares): train it with --nproc 1")


def train_worker(config: ExperimentConfig | None, run_dir: Path | None = None, progress: bool | None = None,
                 data_path: Path | None = None) -> RunResult:
    """One process of a distributed run (under torchrun): train ``config`` in ``run_dir`` (rank 0
    picks a new folder when None), or resume the run there when it holds a saved state
    (``data_path``: its dataset moved)."""
    init_process_group()
    if rank() != 0:  # one console voice: rank 0's (every rank's failure still reaches the launcher)
        log.setLevel(logging.WARNING)
    # The planner warns about GPU topology discovery and dry runs, neither of which applies here.
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    if config is not None:
        set_threads(config.train.threads)
    if run_dir is None:
        chosen = [str(new_run_dir(config)) if rank() == 0 else None]
        dist.broadcast_object_list(chosen, src=0)
        run_dir = Path(chosen[0])
    run_dir = Path(run_dir)
    folder = latest_state(run_dir) if run_dir.exists() else None
    if folder is not None:
        payload = load_checkpoint(folder / "position.pt")
        config = _config_from(payload, folder / "position.pt", data_path)
        config.train.threads = torch.get_num_threads()
        _check_task(config)
        task = task_class(config.task).from_record(config, payload["inputs"])
        result = _run(task, run_dir, progress, (folder, payload))
        end_process_group()
        return result
    if config is None:
        raise FileNotFoundError(f"{run_dir}: no saved distributed state ({POINTER}) to resume")
    _check_task(config)
    seed_everything(config.train.seed)
    config.data.path = str(Path(config.data.path).resolve())
    if rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(config))
        write_status(run_dir, "running")
    try:
        task = build_task(config)
    except BaseException as error:
        if rank() == 0:
            write_status(run_dir, "failed", f"{type(error).__name__}: {error}")
        raise
    if rank() == 0:
        (run_dir / "config.yaml").write_text(to_yaml(task.config))
    result = _run(task, run_dir, progress, None)
    end_process_group()
    return result


def _run(task: Task, run_dir: Path, progress: bool | None, saved: tuple[Path, dict[str, Any]] | None) -> RunResult:
    logs = RunLogs(run_dir, progress=progress, resume=saved is not None) if rank() == 0 else _SilentLogs()
    if saved is not None:
        position = saved[1]["position"]
        log.info("resuming %s on %d processes (saved by %d) at epoch %d, step %d", run_dir, world_size(),
                 saved[1]["world_size"], position["epoch"] + 1, position["step_in_epoch"])
    if rank() == 0:
        write_status(run_dir, "running")
        log.info("%d processes (%s), %d threads each; global batch %d", world_size(), dist.get_backend(),
                 torch.get_num_threads(), task.config.data.batch_size)
    try:
        trainer = DistributedTrainer(task, run_dir, logs)
        if not trainer.trainable:
            raise ValueError(f"model '{task.config.model['name']}' is fitted, not trained: run it with --nproc 1")
        if saved is not None:
            trainer.restore(*saved)
        else:
            _seed_process(task.config.train.seed, 0)
        result = trainer.run()
    except BaseException as error:
        reason = f"rank {rank()}: {type(error).__name__}: {error}"
        if rank() == 0:  # one writer of the run folder; the launcher records other ranks' failures
            write_status(run_dir, "failed", reason)
        log.error("run failed: %s", reason)
        raise
    finally:
        logs.close()
    if rank() == 0:
        write_status(run_dir, "finished")
    return result


def evaluate_state(run_dir: str | Path, split: str = "test", best: bool = False) -> dict[str, float]:
    """Metrics of a distributed run's latest state (``best``: its best weights) on ``split``,
    evaluated by the processes of this job, whatever their number (DCP reshards the tables)."""
    init_process_group()
    run_dir = Path(run_dir)
    folder = latest_state(run_dir)
    if folder is None:
        raise FileNotFoundError(f"{run_dir}: no {POINTER}: not a distributed run folder, or nothing saved yet")
    payload = load_checkpoint(folder / "position.pt")
    config = _config_from(payload, folder / "position.pt", None)
    task = task_class(config.task).from_record(config, payload["inputs"])
    trainer = DistributedTrainer(task, run_dir, _SilentLogs())
    if best:
        trainer.load_best()
    else:
        trainer.restore(folder, payload)
    return task.evaluate(split)


def launch_arguments(nproc: int, nnodes: str = "1", node_rank: int = 0, rdzv_endpoint: str = "",
                     rdzv_backend: str = "c10d", rdzv_id: str = "", max_restarts: int = 0) -> list[str]:
    """torchrun's options for ``nproc`` processes per host (one host: standalone rendezvous)."""
    arguments = [f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}"]
    if nnodes == "1" and not rdzv_endpoint:
        return ["--standalone", *arguments]
    if not rdzv_endpoint:
        raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (reachable from every host)")
    return [*arguments, f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-backend={rdzv_backend}", *([f"--rdzv-id={rdzv_id}"] if rdzv_id else [])]


def launch(torchrun_arguments: list[str], command: list[str], nproc: int, threads: int = 0) -> int:
    """Run ``python -m terarec.cli <command>`` on every process through ``torch.distributed.run``;
    returns 0, or raises with the first failed rank's error. ``threads`` per process (0: this
    host's CPUs divided among its processes, at least 1)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    threads = threads or max(1, cpu_quota() // nproc)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torchrun would otherwise set 1, with a warning
    arguments = get_args_parser().parse_args(
        [*torchrun_arguments, "--module", "terarec.cli", *command, "--threads", str(threads)])
    try:
        run(arguments)
    except ChildFailedError as error:
        failures = "; ".join(f"rank {global_rank} (pid {failure.pid}): exit code {failure.exitcode}"
                             + (f" ({failure.signal_name()})" if failure.exitcode < 0 else "")
                             for global_rank, failure in sorted(error.failures.items()))
        raise RuntimeError(f"distributed run failed: {failures}") from None
    return 0


def in_worker() -> bool:
    """Whether this process was started by torchrun (and should join its job)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ

