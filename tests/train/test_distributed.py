"""Distributed training (terarec.train.distributed): disjoint data shares, global evaluation,
sharded checkpoints restored at other world sizes, and a killed rank ending the job."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from terarec.data import ctr_dataset
from terarec.data.ctr_dataset import CTRDataset
from terarec.data.sequence_dataset import SequenceDataset, SequenceSpec
from terarec.embedding.collection import SHARDED_INIT_BOUND
from terarec.models.hstu import HSTU
from terarec.train.distributed import share_weight
from terarec.train.loop import seed_negatives
from tests.models import sequences

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds any one launched job may take: a hang fails the test instead of blocking it


def _rows(dataset: CTRDataset) -> Counter:
    rows = Counter()
    for batch in dataset:
        keys = batch.sparse_features.keys()
        values = [batch.sparse_features[key].values().tolist() for key in keys]
        for index in range(len(batch)):
            rows[(int(batch.user_ids[index]), *(column[index] for column in values), float(batch.labels[index, 0]))] += 1
    return rows


def _shares(make, world_size: int) -> list:
    shares = []
    for rank in range(world_size):
        dataset = make()
        dataset.rank, dataset.world_size = rank, world_size
        dataset.set_epoch(1)
        shares.append(dataset)
    return shares


@pytest.mark.parametrize("whole_row_groups", [False, True])
@pytest.mark.parametrize("world_size", [2, 3])
def test_processes_read_disjoint_ctr_shares_that_cover_the_split(ctr_data: Path, world_size: int,
                                                                  whole_row_groups: bool, monkeypatch) -> None:
    if whole_row_groups:  # deal whole row groups even though there are few of them
        monkeypatch.setattr(ctr_dataset, "ROW_GROUPS_PER_READER", 0)
    make = lambda: CTRDataset(ctr_data, "train", batch_size=64, shuffle=True, seed=5)  # noqa: E731
    whole = _rows(_shares(make, 1)[0])
    shares = [_rows(dataset) for dataset in _shares(make, world_size)]
    assert sum(shares, Counter()) == whole  # every row once: none read twice, none dropped
    assert sum(whole.values()) == make().num_rows
    if not whole_row_groups:  # slices of every row group: shares within a row of each other
        sizes = [sum(share.values()) for share in shares]
        assert max(sizes) - min(sizes) <= len(make().units)


def test_processes_read_disjoint_users_of_a_sequence_split(seq_data: Path) -> None:
    def users(dataset: SequenceDataset) -> Counter:
        found = Counter()
        for batch in dataset:
            histories = batch.item_ids["item_id"].to_dense()
            for user, items in zip(batch.user_ids.tolist(), histories):
                found[(user, tuple(items.tolist()))] += 1
        return found

    make = lambda: SequenceDataset(seq_data, "train", SequenceSpec(max_length=5), batch_size=16,  # noqa: E731
                                   shuffle=True, seed=2)
    whole = users(_shares(make, 1)[0])
    shares = [users(dataset) for dataset in _shares(make, 2)]
    assert sum(shares, Counter()) == whole
    assert all(sum(share.values()) for share in shares)


@pytest.mark.parametrize("world_size, window", [(2, 0), (4, 0), (3, 2)])
def test_processes_split_each_batch_of_one_process(seq_data: Path, world_size: int, window: int) -> None:
    """Step k of N processes holds exactly the users of one process's batch k (the same seeded
    order and length buckets), each process an even slice: the same global batches, not batches of
    per-process shares (4 processes' batches of fixed hash shares made ML-100K HSTU's epoch 16 steps
    instead of 15, its last of 2 users; NDCG@10 was 9% lower over 7 seeds, as in one process trained
    on those batches)."""
    make = lambda: SequenceDataset(seq_data, "train", SequenceSpec(max_length=5), batch_size=22,  # noqa: E731
                                   shuffle=True, seed=2, bucket_window=window)
    whole = [batch.user_ids.tolist() for batch in _shares(make, 1)[0]]
    shares = [[batch.user_ids.tolist() for batch in dataset] for dataset in _shares(make, world_size)]
    assert len(whole[-1]) < 22  # a last, partial batch is split too
    assert [len(share) for share in shares] == [len(whole)] * world_size
    for step, users in enumerate(whole):
        parts = [share[step] for share in shares]
        assert sum(parts, []) == users
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ---- jobs of several processes


def _env() -> dict[str, str]:
    # PYTHONFAULTHANDLER: a worker that aborts (an intermittent SIGABRT on 4 processes here) prints its
    # Python stack; ``_failure`` shows it.
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TERAREC_DIST_TIMEOUT": "60",
            "PYTHONFAULTHANDLER": "1"}


def _failure(stderr: str) -> str:
    """The end of a failed job's stderr, from a worker's fatal-error report when there is one."""
    start = stderr.find("Fatal Python error")
    return stderr[start:start + 6000] if start >= 0 else stderr[-3000:]


def _config(data: Path, tmp: Path, name: str, **train) -> Path:
    config = {
        "name": name, "task": "ctr", "run_dir": str(tmp / "runs"),
        "data": {"path": str(data), "sparse": ["user_id", "item_id", "device"], "labels": ["click"],
                 "batch_size": 64, "eval_batch_size": 256},
        "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [8], "top_mlp": [16]},
        "embedding": {"optimizer": "rowwise_adagrad"},
        "train": {"epochs": 2, "learning_rate": 0.01, "seed": 3, "patience": 0, "log_every": 1,
                  "checkpoint_every": 10, **train},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _terarec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "terarec.cli", *args], env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT)


EVALUATE = """
import json, sys
from terarec.train.distributed import end_process_group, evaluate_state, rank
metrics = evaluate_state(sys.argv[1], "test", best=True)
if rank() == 0:
    print("METRICS " + json.dumps(metrics))
end_process_group()
"""


def _evaluate_on(run_dir: Path, nproc: int, tmp: Path) -> dict[str, float]:
    script = tmp / "evaluate.py"
    script.write_text(EVALUATE)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(script), str(run_dir)], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, _failure(done.stderr)
    line = next(line for line in done.stdout.splitlines() if line.startswith("METRICS "))
    return json.loads(line.removeprefix("METRICS "))


@pytest.fixture(scope="module")
def two_process_run(ctr_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dist")
    run_dir = tmp / "runs" / "two"
    done = _terarec("train", str(_config(ctr_data, tmp, "two")), "--nproc", "2", "--run-dir", str(run_dir))
    assert done.returncode == 0, _failure(done.stderr)
    return run_dir


def _close(found: dict, expected: dict, tolerance: float = 1e-6) -> None:
    for key in ("auc", "logloss", "gauc", "count"):
        if expected[key] is None:  # metrics.json writes NaN (no user with both labels) as null
            assert found[key] is None or math.isnan(found[key]), (key, found)
        else:
            assert abs(found[key] - expected[key]) <= tolerance, (key, found, expected)


@pytest.mark.slow  # launches jobs of 1-4 processes (~30-60 s each on 2 busy cores)
def test_a_two_process_run_evaluates_alike_on_one_two_and_four_processes(two_process_run: Path, ctr_data: Path) -> None:
    trained = json.loads((two_process_run / "metrics.json").read_text())["test"]
    tmp = two_process_run.parent
    assert trained["count"] == CTRDataset(ctr_data, "test").num_rows  # both processes' shares, joined
    for nproc in (1, 4):
        _close(_evaluate_on(two_process_run, nproc, tmp), trained)
    # The consolidated checkpoint.pt, evaluated in one process on the one-process engine tables.
    done = _terarec("eval", str(two_process_run), "--split", "test")
    assert done.returncode == 0, _failure(done.stderr)
    _close(json.loads(done.stdout.strip().splitlines()[-1]), trained)


@pytest.mark.slow  # launches jobs of 1-4 processes (~30-60 s each on 2 busy cores)
def test_a_two_process_state_resumes_on_one_process_with_its_optimizer(two_process_run: Path) -> None:
    trained = json.loads((two_process_run / "metrics.json").read_text())["test"]
    done = _terarec("train", "--resume", str(two_process_run), "--nproc", "1")
    assert done.returncode == 0, _failure(done.stderr)
    _close(json.loads((two_process_run / "metrics.json").read_text())["test"], trained)


def _kill_a_worker(arguments: list[str], ready, index: int) -> tuple[int, str, float]:
    """Start ``terarec train ARGUMENTS`` (2 processes), SIGKILL worker ``index`` once ``ready()``, wait
    for the launcher: (its return code, its stderr, seconds from the kill to its end). Every
    process the launcher started is gone afterwards."""
    launcher = subprocess.Popen([sys.executable, "-m", "terarec.cli", "train", *arguments], env=_env(), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not get ready"
            time.sleep(0.2)
        started = psutil.Process(launcher.pid).children(recursive=True)
        workers = [child for child in started if "--run-dir" in child.cmdline()]
        assert len(workers) == 2
        killed_at = time.monotonic()
        workers[index].send_signal(signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=TIMEOUT)
        return launcher.returncode, stderr, time.monotonic() - killed_at
    finally:
        if launcher.poll() is None:
            started += psutil.Process(launcher.pid).children(recursive=True)
            launcher.kill()
            launcher.wait()
        for process in started:
            if process.is_running():
                process.kill()


@pytest.mark.slow  # launches jobs of 1-4 processes (~30-60 s each on 2 busy cores)
def test_a_killed_rank_ends_the_job_with_a_clear_error(ctr_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "killed"
    config = _config(ctr_data, tmp_path, "killed", epochs=1000)
    steps = run_dir / "steps.csv"
    code, stderr, seconds = _kill_a_worker([str(config), "--nproc", "2", "--run-dir", str(run_dir)],
                                           lambda: steps.exists() and len(steps.read_text().splitlines()) >= 3, 1)
    assert code != 0 and seconds < 120
    assert "distributed run failed: rank" in stderr and "exit code -9" in stderr, stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "rank" in status["reason"]


@pytest.mark.parametrize("setting, message", [
    ({"optimizer": "adam"}, "embedding.optimizer=rowwise_adagrad"),
    ({"optimizer": "rowwise_adagrad", "vocabulary": "managed"}, "embedding.vocabulary=managed is not supported"),
    ({"optimizer": "rowwise_adagrad", "regularization": 0.1}, "embedding.regularization=0"),
])
def test_sharded_tables_refuse_what_they_cannot_train(setting: dict, message: str) -> None:
    from terarec.config import EmbeddingConfig
    from terarec.embedding.exact_vocabulary import ExactVocabulary
    from terarec.embedding.factory import shardable_pooled_embeddings
    from terarec.models.inputs import ModelInputs

    inputs = ModelInputs(vocabularies={"item_id": ExactVocabulary(np.arange(5))}, embedding=EmbeddingConfig(**setting),
                         learning_rate=0.01)
    with pytest.raises(ValueError, match=message):
        shardable_pooled_embeddings(inputs, 8)


@pytest.mark.slow  # two jobs' worth of process starts
def test_max_restarts_resumes_a_killed_job_from_its_last_state(ctr_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "restarted"
    config = _config(ctr_data, tmp_path, "restarted", epochs=3, checkpoint_every=5)
    code, stderr, _ = _kill_a_worker([str(config), "--nproc", "2", "--run-dir", str(run_dir), "--max-restarts", "1"],
                                     (run_dir / "state.json").exists, 0)
    assert code == 0, stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert "resuming" in (run_dir / "train.log").read_text()
    assert len(json.loads((run_dir / "metrics.json").read_text())["epochs"]) == 3


# ---- N processes' step = one process's step on the global batch


def _hstu_gradients(model, batch, weight: float = 1.0, seeded: bool = True) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if seeded:
        seed_negatives(model, 0, 7)
    else:
        model.head.draws = None  # the global generator: each share draws its own negatives
    (model.loss(batch) * weight).backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


@pytest.mark.parametrize("share_weights, seeded", [(True, True), (False, True), (True, False)])
def test_weighted_shares_of_a_batch_average_to_the_whole_batch_gradient(share_weights: bool, seeded: bool) -> None:
    """Two processes' shares of a batch (users of unequal history lengths), each process's mean
    loss weighed by its share of the positions and the gradients averaged (as DDP does), give the
    one-process gradient of the whole batch, with the negatives seeded by (seed, step); plain
    averaging or per-share draws do not."""
    torch.manual_seed(0)
    config = HSTU.Config(embedding_dim=16, num_layers=1, num_heads=2, max_length=10, num_negatives=4, dropout=0.0)
    model = HSTU(config, sequences.inputs())
    histories = sequences.cycle_histories(3, 9) + sequences.cycle_histories(2, 2, seed=1)
    whole = _hstu_gradients(model, sequences.batch(histories))
    shares = [sequences.batch(histories[:3]), sequences.batch(histories[3:])]  # 24 and 2 positions
    terms = [model.loss_terms(share) for share in shares]
    assert terms == [24, 2]
    averaged: dict[str, torch.Tensor] = {}
    for share, share_terms in zip(shares, terms):
        torch.manual_seed(len(averaged))  # unseeded draws differ between the processes
        weight = share_weight(share_terms, sum(terms), len(shares)) if share_weights else 1.0
        for name, grad in _hstu_gradients(model, share, weight, seeded).items():
            averaged[name] = averaged.get(name, 0) + grad / len(shares)
    close = all(torch.allclose(averaged[name], whole[name], rtol=1e-4, atol=1e-7) for name in whole)
    assert close == (share_weights and seeded)


def test_loss_terms_count_only_the_marked_targets_when_a_batch_marks_them() -> None:
    """A stream's batch predicts only its new events (``target_mask``): its loss averages over
    those, so its share of a global batch counts those, not every position."""
    config = HSTU.Config(embedding_dim=16, num_layers=1, num_heads=2, max_length=10, num_negatives=4, dropout=0.0)
    model = HSTU(config, sequences.inputs())
    batch = sequences.batch(sequences.cycle_histories(2, 5))  # 2 users x 5 events: 8 positions
    assert model.loss_terms(batch) == 8
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 3, 4, 9]] = True  # a first event predicts nothing: 3 of these 4 are targets
    batch.target_mask = mask
    assert model.loss_terms(batch) == 3


ONE_STEP = """
import sys
from pathlib import Path
import torch
from terarec.train import distributed
from terarec.train.experiment import load_config
from terarec.train.setup import seed_everything
from terarec.train.tasks import build_task
from tests.train.test_distributed import global_sequence_batch, share_cuts, user_share

distributed.init_process_group()
config = load_config(sys.argv[1], [])
seed_everything(config.train.seed)
task = build_task(config)
trainer = distributed.DistributedTrainer(task, Path(sys.argv[2]), distributed._SilentLogs())
batch = global_sequence_batch(task)
cuts = share_cuts(len(batch.user_ids), distributed.world_size())
share = user_share(batch, cuts[distributed.rank()], cuts[distributed.rank() + 1])
for step_batch, weight in trainer._steps([share]):
    trainer.step(step_batch, weight)
if distributed.rank() == 0:  # DDP's averaged gradients, left on the parameters after the step
    torch.save({name: p.grad for name, p in task.model.named_parameters() if p.grad is not None}, sys.argv[3])
distributed.end_process_group()
"""


def global_sequence_batch(task):
    """The first 12 users of the train split, read whole whatever the process (one global batch)."""
    from terarec.train.tasks import sequence_spec

    dataset = SequenceDataset(task.folder, "train", sequence_spec(task.config), batch_size=12)
    dataset.rank, dataset.world_size = 0, 1
    return next(iter(dataset))


def share_cuts(users: int, world: int) -> list[int]:
    """Bounds of ``world`` unequal, nonempty shares of ``users`` users (12 users: 4 + 8 on 2
    processes, 1 + 3 + 3 + 5 on 4)."""
    return [int(users * (rank / world) ** 1.5) for rank in range(world + 1)]


def user_share(batch, start: int, stop: int):
    """Users ``start:stop`` of a train SequenceBatch."""
    from terarec.data.batches import SequenceBatch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    lengths = batch.lengths
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    events = slice(int(offsets[start]), int(offsets[stop]))
    return SequenceBatch(
        user_ids=batch.user_ids[start:stop],
        item_ids=KeyedJaggedTensor.from_lengths_sync(keys=batch.item_ids.keys(), values=batch.item_ids.values()[events],
                                                     lengths=lengths[start:stop]),
        timestamps=batch.timestamps[events], actions=batch.actions[events])


@pytest.mark.slow  # launches a job of 2 or 4 processes
@pytest.mark.parametrize("nproc", [2, 4])
def test_processes_step_with_the_one_process_gradient_of_the_global_batch(seq_data: Path, tmp_path: Path,
                                                                           nproc: int) -> None:
    """HSTU's dense part (its item table included) under DDP: the gradient the processes agree on
    for one step, each holding an unequal share of the users of a global batch, is the one
    process's gradient of the whole batch: the same negatives, each process's mean weighed."""
    from terarec.train.experiment import load_config
    from terarec.train.setup import seed_everything
    from terarec.train.tasks import build_task

    config = {"name": "seq", "task": "sequential", "run_dir": str(tmp_path / "runs"),
              "data": {"path": str(seq_data), "batch_size": 12, "max_length": 10},
              "model": {"name": "hstu", "embedding_dim": 16, "num_layers": 1, "num_heads": 2, "max_length": 10,
                        "num_negatives": 8, "dropout": 0.0},
              "train": {"seed": 4}}
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(config))
    script = tmp_path / "one_step.py"
    script.write_text(ONE_STEP)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(script), str(path), str(tmp_path / "run"), str(tmp_path / "grads.pt")],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, _failure(done.stderr)
    distributed = torch.load(tmp_path / "grads.pt", weights_only=True)

    loaded = load_config(str(path), [])
    seed_everything(loaded.train.seed)
    task = build_task(loaded)
    batch = global_sequence_batch(task)
    cuts = share_cuts(len(batch.user_ids), nproc)
    positions = {int(user_share(batch, start, stop).lengths.sum()) for start, stop in zip(cuts, cuts[1:])}
    assert len(positions) > 1 and min(positions) > 0  # a plain mean of the shares' means would differ
    seed_negatives(task.model, loaded.train.seed, 0)
    task.loss(batch).backward()
    expected = {name: p.grad for name, p in task.model.named_parameters() if p.grad is not None}
    assert sorted(distributed) == sorted(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(distributed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


SPARSE_STEP = """
import sys
import numpy as np
import torch
import torch.distributed as dist
from torchrec import KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from terarec.config import EmbeddingConfig
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.factory import shardable_pooled_embeddings
from terarec.models.inputs import ModelInputs
from terarec.train import distributed

distributed.init_process_group()
embedding = EmbeddingConfig(optimizer=sys.argv[1], learning_rate=0.5)
tables = shardable_pooled_embeddings(ModelInputs(vocabularies={"f": ExactVocabulary(np.arange(1, 11))},
                                                 embedding=embedding), 8)
sharders = [EmbeddingBagCollectionSharder()]
planner = EmbeddingShardingPlanner(topology=Topology(world_size=distributed.world_size(), compute_device="cpu"),
                                   constraints=distributed.table_constraints(tables, [sys.argv[2]], 4))
model = DistributedModelParallel(tables, device=torch.device("cpu"), plan=planner.collective_plan(
    tables, sharders, dist.GroupMember.WORLD), sharders=sharders)

def local_weights():  # this process's shards (none for a table-wise table another process holds)
    return [shard.tensor.clone() for key, value in model.state_dict().items() if "weight" in key
            for shard in value.local_shards()]

before = local_weights()
ids = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([3]), lengths=torch.tensor([1]))
model(ids).values().sum().backward()  # every process: gradient 1 on each column of id 3's row
change = torch.zeros(1, dtype=torch.float64)
for after, earlier in zip(local_weights(), before):
    change += (after - earlier).double().sum()
dist.all_reduce(change)
largest = torch.tensor([max([float(weights.abs().max()) for weights in before] or [0.0])])
dist.all_reduce(largest, op=dist.ReduceOp.MAX)
if distributed.rank() == 0:
    print(f"CHANGE {float(change)}")
    print(f"LARGEST_INITIAL {float(largest)}")
distributed.end_process_group()
"""


@pytest.mark.slow  # launches jobs of 2 processes
@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_a_sharded_sgd_table_steps_by_the_mean_of_the_processes_gradients(tmp_path: Path, sharding: str) -> None:
    """TorchRec averages a sharded table's gradient over the processes (as DDP does the dense
    part's), so SGD keeps its one-process rate: one step moves the row by -lr x 1 per column.
    The sharded table starts at the one-process scale (std 0.01), not TorchRec's +-1/sqrt(rows)."""
    script = tmp_path / "sparse_step.py"
    script.write_text(SPARSE_STEP)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), "sgd", sharding], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, _failure(done.stderr)
    change = float(next(line for line in done.stdout.splitlines() if line.startswith("CHANGE ")).split()[1])
    assert change == pytest.approx(-0.5 * 8, rel=1e-5)  # 8 columns, lr 0.5, mean gradient 1
    largest = float(next(line for line in done.stdout.splitlines() if line.startswith("LARGEST_INITIAL ")).split()[1])
    assert 0 < largest <= SHARDED_INIT_BOUND  # 10 rows: TorchRec's default would reach 1/sqrt(10) = 0.32
