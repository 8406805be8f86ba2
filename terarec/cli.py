"""The ``terarec`` command: prepare data, train, evaluate, sweep model sizes, run the demo."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from terarec.runtime import keep_freed_memory, prefer_passive_waiting, show_progress

# Before any command imports torch (the package's __init__ did it too; this keeps the CLI's
# default independent of it): OpenMP threads sleep instead of spinning on a shared machine.
prefer_passive_waiting()
keep_freed_memory()

app = typer.Typer(help="terarec: industrial-scale recommendation on TorchRec.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Make and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

# Options of every command that computes (predict takes the same two).
Threads = Annotated[int, typer.Option(
    "--threads", min=0, help="Threads for torch and pyarrow (0 = the CPUs this process may use: affinity and cgroup quota).")]
Progress = Annotated[Optional[bool], typer.Option(
    "--progress/--no-progress", help="Progress bars (default: only when stderr is a terminal).", show_default=False)]

SPLIT_HELP = "leave_one_out | time | random | given (default: leave_one_out for events, random for CTR rows, given where the source has one)"


def _quiet_libraries() -> None:
    # TorchRec's import makes torch.fx log a warning meant for its own developers.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    # TorchRec's deprecation notices about its own defaults (storage reservation, DDP buffer
    # arguments), printed by every process of a distributed run: nothing a terarec user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("terarec").setLevel(logging.INFO)


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}")  # messages may hold [brackets]
    raise typer.Exit(code=2)


def _split_config(method: Optional[str], valid: float, test: float, seed: int):
    from terarec.data.splits import SplitConfig

    return None if method is None else SplitConfig(method=method.replace("-", "_"), valid_fraction=valid,
                                                    test_fraction=test, seed=seed)


def _key_values(items: list[str]) -> dict:
    """``-o key=value`` options as a mapping (values parsed as YAML, dashes in keys as underscores)."""
    import yaml

    options = {}
    for item in items:
        if "=" not in item:
            _fail(ValueError(f"--option '{item}' is not key=value"))
        key, value = item.split("=", 1)
        try:
            options[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            _fail(ValueError(f"--option '{item}': the value is not valid YAML ({error})"))
    return options


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(Path("data/synthetic"), help="Folder to write the prepared dataset to."),
    events: int = typer.Option(500_000, help="Approximate number of events."),
    users: int = typer.Option(5_000, help="Number of users."),
    items: int = typer.Option(10_000, help="Number of items."),
    seed: int = typer.Option(0, help="Seed of the generator (and of a random split)."),
    split: str = typer.Option("time", help=SPLIT_HELP),
    valid_fraction: float = typer.Option(0.1, help="Share of rows for validation (time / random splits)."),
    test_fraction: float = typer.Option(0.1, help="Share of rows for test (time / random splits)."),
    ranking_history: int = typer.Option(0, help="Also write each row's N earlier events as hist_* lists, an "
                                              "'action' and a 'long_watch' label (HSTU ranking, DIN); 0 = none."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset folder that terarec wrote."),
    option: list[str] = typer.Option([], "--option", "-o", help="Derived columns, as for data prepare: history=\\[item_id,category], history_length=50, weak_semantic=\\[...], unified=\\[...]."),
    days: int = typer.Option(0, help="Daily mode: write N days as one Parquet partition per day (day-0000.parquet, "
                                     "...) for `terarec stream`; --events, --users and --items are spread evenly "
                                     "over the days (users and items arriving per day: --users / N, --items / N). "
                                     "0 = one prepared dataset."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Generate the built-in synthetic interaction log and write it as a prepared dataset.

    Users with drifting interests, Zipf-popular items with categories and prices, context
    (hour, device), and click / like / watch-time labels that depend on affinity, feature
    crosses and recent history. With --days: a log arriving day by day, new users and items
    every day, items ageing out (terarec.data.sources.synthetic_daily)."""
    _quiet_libraries()
    from terarec.data.derive import Derivations
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.runtime import configure_threads

    configure_threads(threads)
    if days:
        _daily_synth(out, days, events, users, items, seed, overwrite)
        return

    try:
        options = _key_values(option)
        derive = Derivations.from_options(options)
        if options:
            raise ValueError(f"data synth: unknown --option {sorted(options)}; it takes history, history_length, "
                             "weak_semantic and unified")
        config = SyntheticConfig(num_users=users, num_items=items, num_events=events, seed=seed)
        started = time.perf_counter()
        data = load_synthetic(config)
        if ranking_history < 0:
            raise ValueError(f"--ranking-history: expected a number of events >= 0, got {ranking_history}")
        if ranking_history:
            from terarec.data.ranking import synthetic_ranking_source

            history_columns = ["click", "like", "watch_time", "category", "hour", "device"]
            data = synthetic_ranking_source(data, ranking_history, history_columns)
        meta = write_dataset(data, out, _split_config(split, valid_fraction, test_fraction, seed), overwrite=overwrite,
                             derive=derive, progress=show_progress(progress))
    except (ValueError, OSError) as error:
        _fail(error)
    console.print(f"wrote {meta.num_rows:,} events to {out} in {time.perf_counter() - started:.1f}s; "
                  f"split {meta.split['counts']}")


def _daily_synth(out: Path, days: int, events: int, users: int, items: int, seed: int, overwrite: bool) -> None:
    from terarec.data.sources.synthetic_daily import DailyConfig, write_daily

    started = time.perf_counter()
    try:
        if days < 0:
            raise ValueError(f"--days: expected a number of days >= 0, got {days}")
        config = DailyConfig(days=days, events_per_day=max(1, events // days), new_users_per_day=max(1, users // days),
                             new_items_per_day=max(1, items // days), seed=seed)
        written = write_daily(config, out, overwrite=overwrite)
    except (ValueError, OSError) as error:
        _fail(error)
    console.print(f"wrote {len(written)} daily partitions of {config.events_per_day:,} events to {out} in "
                  f"{time.perf_counter() - started:.1f}s")


@data_app.command("prepare")
def data_prepare(
    source: str = typer.Argument(..., help="movielens | amazon | frappe | frappe-splits | criteo | events | synthetic-ctr"),
    path: Path = typer.Argument(..., help="The raw file or folder, in the source's published format."),
    out: Path = typer.Option(..., help="Folder to write the prepared dataset to."),
    split: Optional[str] = typer.Option(None, help=SPLIT_HELP),
    valid_fraction: float = typer.Option(0.1, help="Share of rows for validation (time / random splits)."),
    test_fraction: float = typer.Option(0.1, help="Share of rows for test (time / random splits)."),
    seed: int = typer.Option(0, help="Seed of a random split and of frappe's negative sampling."),
    on_bad_line: str = typer.Option("error", help="error: stop at the first malformed record, naming file and line; skip: skip such records and report how many."),
    option: list[str] = typer.Option([], "--option", "-o", help="A loader option as key=value (YAML value), e.g. -o format=pairs, -o negatives=2, -o sparse=\\[genre]; for any events source also history=\\[item_id,category] history_length=50, weak_semantic=\\[{name: fav_x_item, columns: \\[category, item_id], window_days: 30}], unified=\\[age_bucket] (docs/data.md)."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset folder that terarec wrote."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Read a public or generic dataset in its own format and write the canonical Parquet tables.

    Loader options (-o key=value; values are YAML; a mistyped key names the nearest one):

    \b
    movielens      like_threshold=4 (add label 'like' = rating >= 4), features=true (join the
                   user / movie columns as sparse features), history_length=N (earlier items,
                   ratings and genres of each event, the last N)
    amazon         format=auto|sequence|pairs (auto: decided from the whole file)
    frappe         negatives=2 (sampled per log), seed=N (default: --seed)
    frappe-splits  (none)
    criteo         chunk_rows=500000 (rows per streamed chunk)
    events         user_column=user_id, item_column=item_id, time_column=timestamp,
                   sparse=\\[a, b], dense=\\[c], labels=\\[click] (one name is a list of one),
                   delimiter=','
    synthetic-ctr  PATH is a YAML of these, or '-': num_rows, num_fields, min_cardinality,
                   max_cardinality, num_terms, orders, order_weights, term_mean, decay,
                   interaction_scale, first_order_scale, bias, seed, rows_per_chunk
    any events     derived columns: history, history_length, weak_semantic, unified
                   (docs/data.md)

    --overwrite replaces only a folder that is empty or that terarec wrote (it holds the
    .terarec-dataset marker and nothing but dataset files); anything else is refused."""
    _quiet_libraries()
    from terarec.data.derive import Derivations
    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source
    from terarec.runtime import configure_threads

    configure_threads(threads)

    options = _key_values(option)
    if source == "frappe":
        options.setdefault("seed", seed)
    try:
        derive = Derivations.from_options(options)
        data = load_source(source, str(path), on_bad_line=on_bad_line, **options)
        meta = write_dataset(data, out, _split_config(split, valid_fraction, test_fraction, seed), overwrite=overwrite,
                             derive=derive, progress=show_progress(progress))
    except (ValueError, OSError, TypeError) as error:
        _fail(error)
    console.print(f"wrote {meta.num_rows:,} rows ({meta.kind}) to {out}; stats {meta.stats}; "
                  f"split {meta.split['method']} {meta.split['counts']}")


def _cell(value: object) -> str:
    """A metric as a table cell: floats to 4 places; counts and names (the protocol) as they are."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_metrics(title: str, rows: list[tuple[str, dict]]) -> None:
    """One row per metric, one column per split: names stay readable however many metrics a run has."""
    keys: list[str] = []
    for _, metrics in rows:
        keys += [k for k in metrics if k not in keys and k != "count"]
    table = Table(title=title)
    table.add_column("metric")
    for name, _ in rows:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_row(key, *[_cell(metrics.get(key, "")) for _, metrics in rows])
    console.print(table)


@app.command("train", context_settings={"allow_extra_args": False})
def train_command(
    config: Optional[Path] = typer.Argument(None, help="Experiment YAML, e.g. configs/frappe/wukong.yaml (not with --resume)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.epochs=3 data.batch_size=4096."),
    resume: Optional[Path] = typer.Option(None, help="Continue a stopped run folder from its last saved state (mid-epoch too)."),
    data: Optional[Path] = typer.Option(None, help="With --resume: the run's dataset at another path."),
    threads: Threads = 0,
    progress: Progress = None,
    nproc: int = typer.Option(0, "--nproc", min=0, help="Processes on this host (torchrun; 0 = one process, no torchrun). "
                              "Tables are sharded by TorchRec, the rest under DDP; see docs/distributed.md."),
    nnodes: str = typer.Option("1", "--nnodes", help="Hosts (torchrun's --nnodes, e.g. 2 or 1:4)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This host's rank (torchrun's --node-rank)."),
    rdzv_endpoint: str = typer.Option("", "--rdzv-endpoint", help="HOST:PORT every host reaches (several hosts)."),
    rdzv_backend: str = typer.Option("c10d", "--rdzv-backend", help="torchrun's rendezvous backend."),
    rdzv_id: str = typer.Option("", "--rdzv-id", help="A job id shared by the hosts (several hosts)."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="Restart failed workers this many times; "
                                     "they resume from the run's last saved state."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="The run folder (default: a new one under run_dir); "
                                           "several hosts: give the same shared folder on each."),
) -> None:
    """Train the config's model; writes a run folder (config, status, logs, metrics.json, checkpoints).

    A run stopped part way (killed, out of time) keeps its last state: `terarec train --resume RUN`
    continues it and ends as the uninterrupted run would have. --threads N overrides the config's
    train.threads. --nproc N trains on N processes (and --nnodes, --rdzv-endpoint on several hosts);
    --threads is then per process (default: the host's CPUs divided among its processes)."""
    _quiet_libraries()
    from terarec.config import ConfigError
    from terarec.data.errors import DataError
    from terarec.train import distributed
    from terarec.train.experiment import load_config
    from terarec.embedding.factory import check_shardable
    from terarec.train.loop import new_run_dir, resume as resume_run, train, write_status

    try:
        if resume is not None and (config is not None or overrides):
            raise ConfigError("--resume continues a run with its saved config: give no config file or overrides")
        if resume is None and config is None:
            raise ConfigError("give an experiment config (e.g. configs/frappe/wukong.yaml) or --resume RUN")
        cfg = None if config is None else load_config(
            config, [*(overrides or []), *([f"train.threads={threads}"] if threads else [])])
        if distributed.in_worker():
            result = distributed.train_worker(cfg, resume or run_dir, progress=progress, data_path=data)
            if distributed.launched_rank() != 0:  # the group is gone by now: torchrun's RANK says who we were
                return
        elif nproc > 0 or nnodes != "1" or (resume is not None and distributed.latest_state(resume) is not None):
            if cfg is not None and cfg.task == "ctr":
                check_shardable(cfg.embedding)  # before any process starts: one clear error, not one per rank
            folder = resume or run_dir or (new_run_dir(cfg) if nnodes == "1" else None)
            command = ["train", *([str(config), *(overrides or [])] if resume is None else ["--resume", str(resume)]),
                       *(["--run-dir", str(folder)] if folder is not None and resume is None else []),
                       *(["--data", str(data)] if data is not None else []), "--no-progress"]
            arguments = distributed.launch_arguments(max(nproc, 1), nnodes, node_rank, rdzv_endpoint, rdzv_backend,
                                                     rdzv_id, max_restarts)
            try:
                distributed.launch(arguments, command, max(nproc, 1), threads)
            except RuntimeError as error:
                if folder is not None and folder.exists():
                    write_status(folder, "failed", str(error))
                raise
            return  # rank 0 printed the result
        elif resume is not None:
            result = resume_run(resume, progress=progress, data_path=data, threads=threads or None)
        else:
            result = train(cfg, progress=progress, run_dir=run_dir)
    except (ConfigError, DataError, FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(error)
    _print_metrics(f"{result.run_dir.name}: best epoch {result.best_epoch}", [("valid", result.valid), ("test", result.test)])
    console.print(f"run folder: {result.run_dir}")


@app.command("stream", context_settings={"allow_extra_args": False})
def stream_command(
    config: Optional[Path] = typer.Argument(None, help="Streaming experiment YAML, e.g. configs/stream/wukong.yaml (not with --resume)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. stream.max_chunks=3 data.path=data/daily."),
    resume: Optional[Path] = typer.Option(None, help="Continue a stopped streaming run after its last committed chunk."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Train on time-ordered chunks (data.path: a folder of Parquet partitions, in name order) in one pass.

    Each chunk is evaluated before it is trained on (progressive validation, chunks.csv and
    curves.png), the managed vocabularies admit and expire ids in event time, and after each chunk
    the run commits its state with the chunk's name and writes an embedding delta for the server
    (docs/streaming.md). A killed run continues with `terarec stream --resume RUN`."""
    _quiet_libraries()
    from terarec.config import ConfigError
    from terarec.data.errors import DataError
    from terarec.stream.loop import resume_stream, stream
    from terarec.train.experiment import load_config

    try:
        if resume is not None:
            if config is not None or overrides:
                raise ConfigError("--resume continues a run with its saved config: give no config file or overrides")
            result = resume_stream(resume, progress=progress, threads=threads or None)
        else:
            if config is None:
                raise ConfigError("give a streaming config (e.g. configs/stream/wukong.yaml) or --resume RUN")
            cfg = load_config(config, [*(overrides or []), *([f"train.threads={threads}"] if threads else [])])
            result = stream(cfg, progress=progress)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        _fail(error)
    if result.chunks:
        last = result.chunks[-1]
        _print_metrics(f"{len(result.chunks)} chunks; the last, {last['name']}, before training on it",
                       [("progressive", last["valid"])])
    console.print(f"run folder: {result.run_dir}")


@app.command("eval")
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `terarec train`."),
    split: str = typer.Option("test", help="train | valid | test"),
    data: Optional[Path] = typer.Option(None, help="The run's dataset at another path (default: where it was trained)."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Evaluate a run's best checkpoint on one split, from any directory."""
    _quiet_libraries()
    from terarec.data.errors import DataError
    from terarec.runtime import configure_threads
    from terarec.train.loop import load_task

    configure_threads(threads)
    try:
        task = load_task(run_dir, data_path=data)
        metrics = task.evaluate(split, progress=show_progress(progress))
    except (ValueError, FileNotFoundError, DataError) as error:
        _fail(error)
    _print_metrics(f"{run_dir.name} on {split}", [(split, metrics)])
    typer.echo(json.dumps(metrics))


@app.command("predict")
def predict_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `terarec train`."),
    input: Path = typer.Option(..., "--input", help="Parquet rows to score (CTR: feature columns; ranking: impressions "
                                                   "with hist_* columns; sequential: events of the users to recommend for)."),
    out: Path = typer.Option(..., help="Parquet file to write: the input's columns plus one score column per label "
                                       "(sequential: user_id, items, scores)."),
    batch_size: int = typer.Option(4096, help="Rows (users) per batch."),
    k: int = typer.Option(10, help="Sequential runs: items recommended per user."),
    tables: str = typer.Option("fp32", help="fp32, or int8: row-wise int8 copies of the pooled tables (CTR models; a quarter of the memory)."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Score a Parquet file with a run's best model, in batches, with no training data at hand."""
    _quiet_libraries()
    from terarec.data.errors import DataError
    from terarec.serve.predictor import Predictor

    try:
        predictor = Predictor.from_run(run_dir, threads=threads, tables=tables)
        rows = predictor.predict_file(input, out, batch_size=batch_size, k=k, progress=show_progress(progress))
    except (ValueError, FileNotFoundError, DataError) as error:
        _fail(error)
    console.print(f"wrote {rows:,} rows to {out}")


@app.command("export")
def export_command(
    runs: list[Path] = typer.Argument(..., help="Run folders: one sequential run (retrieval) and / or one CTR or "
                                                "ranking run (ranking)."),
    out: Path = typer.Option(..., help="The bundle folder to write."),
    index: str = typer.Option("auto", help="Retrieval index: auto (HNSW for large catalogues), exact or hnsw."),
    data: Optional[Path] = typer.Option(None, help="The ranking run's dataset, read for item features "
                                                   "(default: the run's data.path)."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle folder."),
    threads: Threads = 0,
) -> None:
    """Export trained runs as a serving bundle (safetensors, faiss index, checksummed manifest)."""
    _quiet_libraries()
    from terarec.data.errors import DataError
    from terarec.serve.bundle import export_bundle, load_bundle

    try:
        path = export_bundle(runs, out, index=index, data_path=data, overwrite=overwrite, threads=threads)
        bundle = load_bundle(path, threads=threads)
    except (ValueError, FileNotFoundError, FileExistsError, DataError) as error:
        _fail(error)
    parts = ", ".join(f"{role}: {part.predictor.config.model['name']}" for role, part in bundle.parts.items())
    console.print(f"wrote bundle {path} ({parts}; version {bundle.version})")
    if bundle.index_info:
        console.print(f"retrieval index: {bundle.index_info}")


@app.command("delta")
def delta_command(
    bundle: Path = typer.Argument(..., help="The served bundle folder."),
    run: Path = typer.Argument(..., help="A later checkpoint's run folder (same config and vocabulary sizes)."),
    out: Path = typer.Option(..., help="The delta folder to write."),
    after: list[Path] = typer.Option([], help="Deltas already applied to the served bundle, in order."),
) -> None:
    """Write an embedding delta: the rows of the run's part that changed since the bundle (and ``--after`` deltas)."""
    _quiet_libraries()
    from terarec.serve.delta import make_delta

    try:
        path = make_delta(bundle, run, out, after=after)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(error)
    console.print(f"wrote delta {path}")


@app.command("serve")
def serve_command(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `terarec export`."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="Server processes, each with the bundle loaded."),
    max_batch: int = typer.Option(32, min=1, help="Queries answered together (1: no batching)."),
    max_wait_ms: float = typer.Option(2.0, min=0, help="A batch closes once no query has come for this long (at most 5x this after its first)."),
    queue_size: int = typer.Option(256, min=1, help="Queries waiting at most; beyond, 503 with Retry-After."),
    num_candidates: int = typer.Option(256, min=1, help="Items retrieved for ranking."),
    threads: int = typer.Option(0, "--threads", min=0, help="Threads of the compute thread (torch, faiss; 0 = the CPUs "
                                "this process may use less one, which the event loop keeps; at least 1)."),
    lanes: int = typer.Option(1, min=1, help="Compute threads answering batches at once (each with --threads threads)."),
) -> None:
    """Serve a bundle over HTTP: /v1/recommend, /v1/score, /healthz, /readyz, /metrics, /admin/reload."""
    _quiet_libraries()
    from terarec.serve.bundle import BundleError
    from terarec.serve.server import ServerSettings, serve

    settings = ServerSettings(bundle=bundle, max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
                              num_candidates=num_candidates, threads=threads, lanes=lanes)
    try:
        serve(settings, host=host, port=port, workers=workers)
    except (BundleError, ValueError, FileNotFoundError) as error:
        _fail(error)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="The demo's own folder (new, empty, or an earlier demo's)."),
    events: int = typer.Option(150_000, help="Synthetic events to generate."),
    epochs: int = typer.Option(2, help="Training epochs of the learned models."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Run the end-to-end demo on built-in synthetic data.

    Generates an interaction log, splits it by time, trains Wukong (CTR), HSTU (retrieval) and
    HSTU ranking beside baselines, prints their test metrics, then loads a Predictor from the
    HSTU run folder alone and prints the top 10 items for one user."""
    _quiet_libraries()
    from terarec.demo import run_demo

    try:
        run_demo(out, events=events, epochs=epochs, threads=threads, progress=progress,
                 console=console)
    except ValueError as error:
        _fail(error)


@app.command("plan")
def plan_command(
    config: Path = typer.Argument(..., help="A memory plan YAML: tables (name, rows, dim, dtype, optimizer) and host_memory_gb."),
    host_memory_gb: Optional[float] = typer.Option(None, "--host-memory-gb", "--host-memory", help="Memory per host in GiB (overrides the file)."),
    hosts: Optional[int] = typer.Option(None, min=1, help="Hosts to shard over: adds the sharding plan (table -> ranks, bytes per rank, all-to-all bytes, step time)."),
    nproc_per_host: int = typer.Option(1, min=1, help="Processes (ranks) per host; each gets host memory x headroom / this."),
    network_gbps: float = typer.Option(100.0, help="Network bandwidth per host, Gb/s each way."),
    sharding: str = typer.Option("auto", help="auto | table_wise | column_wise | row_wise (TorchRec's sharding types; row_wise needs --device gpu)."),
    device: str = typer.Option("cpu", help="cpu | gpu: which sharding types TorchRec offers and the default memory bandwidth."),
    batch_size: int = typer.Option(4096, min=1, help="Examples per rank per step."),
    memory_gbps: Optional[float] = typer.Option(None, help="Random-access memory bandwidth per rank, GB/s (default: 6 cpu, measured here; 1000 gpu, assumed)."),
    comm_bytes: int = typer.Option(4, min=1, help="Bytes per pooled-embedding value on the wire (4 fp32; 2 with fp16 QComms)."),
    column_shard_dim: Optional[int] = typer.Option(None, min=1, help="Smallest column-wise shard (TorchRec's min_partition)."),
) -> None:
    """Print the memory an embedding plan needs (weights, ids, optimizer state, hash map) and the hosts it takes.

    With --hosts, also shard the tables over hosts x nproc-per-host ranks: the TorchRec
    sharding type of each table and its ranks, bytes per rank, all-to-all bytes per step, an
    estimated step time (its assumptions printed beneath) and the hosts the plan needs."""
    import dataclasses

    from rich.console import Console as WideConsole

    from terarec.config import ConfigError
    from terarec.embedding.planner import load_plan, report_table
    from terarec.embedding.sharding_plan import plan_sharding, sharding_report

    try:
        plan = load_plan(config)
        if host_memory_gb is not None:
            plan = dataclasses.replace(plan, host_memory_gb=host_memory_gb)  # checks it again
        sharded = None if hosts is None else plan_sharding(
            plan, hosts * nproc_per_host, sharding, nproc_per_host=nproc_per_host, batch_size=batch_size,
            device=device, network_gbps=network_gbps, memory_gbps=memory_gbps, comm_bytes=comm_bytes,
            column_shard_dim=column_shard_dim)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        _fail(error)
    wide = WideConsole(width=max(console.width, 130))
    wide.print(report_table(plan))
    for part in [] if sharded is None else sharding_report(sharded):
        wide.print(part)


@app.command("search-embeddings")
def search_embeddings_command(
    config: Path = typer.Argument(..., help="Experiment YAML of a CTR model, e.g. configs/frappe/dlrm.yaml."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. data.path=data/frappe."),
    budget_bytes: int = typer.Option(0, help="Memory budget of the tables in bytes (0: --budget-share of the uniform tables)."),
    budget_share: float = typer.Option(0.5, help="Without --budget-bytes: the budget as a share of the uniform d-wide tables."),
    out: Path = typer.Option(Path("runs/search-embeddings"), help="Folder for chosen.yaml, candidates.json, pareto.png."),
    candidates: int = typer.Option(6, help="Random draws from the space, beside the uniform and frequency-rule candidates."),
    cost_weight: float = typer.Option(1.0, help="lambda: reward = valid metric - lambda * max(0, bytes / budget - 1)."),
    bands: int = typer.Option(4, help="Frequency bands of a banded feature."),
    eta: int = typer.Option(2, help="Successive halving: 1/eta of the candidates go on, trained eta times longer."),
    min_epochs: int = typer.Option(1, help="Epochs of the first rung."),
    rungs: int = typer.Option(3, help="Rungs of successive halving."),
    only: str = typer.Option("", help="Comma-separated candidate names to train (default all), e.g. model-d16,rule-a0.5."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Search per-feature and per-band embedding widths (Neural Input Search's reward, successive halving).

    Every candidate (uniform widths, the frequency rule, random draws under the budget) trains
    --min-epochs; the best 1/eta by reward train eta times longer, for --rungs rungs. Writes
    OUT/chosen.yaml (the config with the chosen embedding: section), OUT/candidates.json and
    OUT/pareto.png (validation metric against table bytes)."""
    _quiet_libraries()
    from terarec.config import ConfigError
    from terarec.data.errors import DataError
    from terarec.scaling.embedding_search import search_embeddings
    from terarec.train.experiment import load_config

    try:
        cfg = load_config(config, [*(overrides or []), *([f"train.threads={threads}"] if threads else [])])
        result, files = search_embeddings(cfg, out, budget_bytes, budget_share, candidates, cost_weight, bands, eta,
                                          min_epochs, rungs, progress=progress is not False,
                                          only=[name for name in only.split(",") if name] or None)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        _fail(error)
    table = Table(title=f"embedding sizes (budget {result.budget_bytes:,} bytes, uniform {result.uniform_bytes:,})")
    for column in ("candidate", "table bytes", f"valid {result.metric}", "epochs", "reward"):
        table.add_column(column, justify="right")
    for candidate in sorted(result.candidates, key=result.reward, reverse=True):
        table.add_row(candidate.name + (" *" if candidate is result.chosen else ""), f"{candidate.bytes:,}",
                      f"{candidate.metric:.5f}", str(candidate.epochs), f"{result.reward(candidate):.5f}")
    console.print(table)
    for what, path in files.items():
        console.print(f"{what}: {path}")


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="Sweep YAML: model families and their sizes, e.g. configs/scaling/sweep.yaml."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides for every point, e.g. data.path=data/scaling train.threads=1."),
    out: Optional[Path] = typer.Option(None, help="Sweep folder (default: the spec's out); an existing one is resumed."),
    threads: Threads = 0,
    progress: Progress = None,
) -> None:
    """Train every model size of a sweep on the same data and steps, then fit LogLoss = a + b * C^-alpha.

    Records GFLOPs/example, parameters, test LogLoss and AUC and wall time per point in
    OUT/results.json; a stopped sweep resumes without redoing finished points. Writes
    OUT/fit.json and OUT/scaling.png."""
    _quiet_libraries()
    from terarec.config import ConfigError
    from terarec.data.errors import DataError
    from terarec.scaling.sweep import load_sweep, run_sweep, summarize

    try:
        spec = load_sweep(config, [*(overrides or []), *([f"train.threads={threads}"] if threads else [])])
        folder = out or Path(spec.out)
        run_sweep(spec, folder, log=console.print, progress=progress)
        summary = summarize(folder)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as error:
        _fail(error)
    _print_fits(summary)
    console.print(f"sweep folder: {folder}")


@app.command("sweep-plot")
def sweep_plot_command(
    out: Path = typer.Argument(..., help="A sweep folder written by `terarec sweep`."),
) -> None:
    """Fit the finished points of a sweep folder again; rewrite its fit.json and scaling.png."""
    from terarec.scaling.sweep import summarize

    try:
        summary = summarize(out)
    except (ValueError, FileNotFoundError) as error:
        _fail(error)
    _print_fits(summary)


def _print_fits(summary: dict) -> None:
    table = Table(title=f"LogLoss = a + b * GFLOPs^-alpha (Bayes floor {summary.get('floor') or 'unknown'})")
    for column in ("family", "points", "GFLOPs span", "best LogLoss", "monotone", "a", "alpha", "R^2", "gain per 4x"):
        table.add_column(column, justify="right")
    for name, family in summary["families"].items():
        fit = family["fit"] or {}
        cells = [f"{fit[k]:.4f}" if k in fit else "" for k in ("a", "alpha", "r2")]
        gain = f"{fit['gain_per_4x']:.5f} ({100 * fit['relative_gain_per_4x']:.2f}%)" if fit else ""
        table.add_row(name, str(family["points"]), f"{family['gflops_span']:.0f}x", f"{family['logloss_best']:.5f}",
                      str(family["monotone"]), *cells, gain)
    console.print(table)
    if summary.get("plot"):
        console.print(f"chart: {summary['plot']}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
