"""The ``terarec`` command: prepare data, train, evaluate, sweep model sizes, run the demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="terarec: industrial-scale recommendation on TorchRec.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Make and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

SPLIT_HELP = "leave_one_out | time | random | given (default: leave_one_out for events, random for CTR rows, given where the source has one)"


def _quiet_libraries() -> None:
    # TorchRec's import makes torch.fx log a warning meant for its own developers.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("terarec").setLevel(logging.INFO)


def _fail(error: Exception) -> None:
    err_console.print(f"[bold red]error:[/bold red] {error}")
    raise typer.Exit(code=2)


def _split_config(method: Optional[str], valid: float, test: float, seed: int):
    from terarec.data.splits import SplitConfig

    return None if method is None else SplitConfig(method=method.replace("-", "_"), valid_fraction=valid,
                                                    test_fraction=test, seed=seed)


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
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Generate the built-in synthetic interaction log and write it as a prepared dataset.

    Users with drifting interests, Zipf-popular items with categories and prices, context
    (hour, device), and click / like / watch-time labels that depend on affinity, feature
    crosses and recent history."""
    _quiet_libraries()
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic

    try:
        config = SyntheticConfig(num_users=users, num_items=items, num_events=events, seed=seed)
        started = time.perf_counter()
        meta = write_dataset(load_synthetic(config), out, _split_config(split, valid_fraction, test_fraction, seed),
                             overwrite=overwrite)
    except (ValueError, OSError) as error:
        _fail(error)
    console.print(f"wrote {meta.num_rows:,} events to {out} in {time.perf_counter() - started:.1f}s; "
                  f"split {meta.split['counts']}")


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
    option: list[str] = typer.Option([], "--option", "-o", help="A loader option as key=value (YAML value), e.g. -o format=pairs, -o negatives=2, -o sparse=[genre]."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Read a public or generic dataset in its own format and write the canonical Parquet tables."""
    _quiet_libraries()
    import yaml

    from terarec.data.prepare import write_dataset
    from terarec.data.sources import load_source

    options = {}
    for item in option:
        if "=" not in item:
            _fail(ValueError(f"--option '{item}' is not key=value"))
        key, value = item.split("=", 1)
        options[key.replace("-", "_")] = yaml.safe_load(value)
    if source == "frappe":
        options.setdefault("seed", seed)
    try:
        data = load_source(source, str(path), on_bad_line=on_bad_line, **options)
        meta = write_dataset(data, out, _split_config(split, valid_fraction, test_fraction, seed), overwrite=overwrite)
    except (ValueError, OSError, TypeError) as error:
        _fail(error)
    console.print(f"wrote {meta.num_rows:,} rows ({meta.kind}) to {out}; stats {meta.stats}; "
                  f"split {meta.split['method']} {meta.split['counts']}")


def _cell(value: object) -> str:
    """A metric as a table cell: floats to 4 places; counts and names (the protocol) as they are."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_metrics(title: str, rows: list[tuple[str, dict]]) -> None:
    keys: list[str] = []
    for _, metrics in rows:
        keys += [k for k in metrics if k not in keys and k != "count"]
    table = Table(title=title)
    table.add_column("run")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows:
        table.add_row(name, *[_cell(metrics.get(k, "")) for k in keys])
    console.print(table)


@app.command("train", context_settings={"allow_extra_args": False})
def train_command(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. configs/synthetic/ctr_embedding_mlp.yaml."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.epochs=3 data.batch_size=4096."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train the config's model; writes a run folder (config, log, metrics.json, checkpoint)."""
    _quiet_libraries()
    from terarec.config import ConfigError, load_config
    from terarec.data.errors import DataError
    from terarec.train.loop import train

    try:
        cfg = load_config(config, overrides or [])
        result = train(cfg, progress=progress)
    except (ConfigError, DataError, FileNotFoundError) as error:
        _fail(error)
    _print_metrics(f"{cfg.name}: best epoch {result.best_epoch}", [("valid", result.valid), ("test", result.test)])
    console.print(f"run folder: {result.run_dir}")


@app.command("eval")
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `terarec train`."),
    split: str = typer.Option("test", help="train | valid | test"),
) -> None:
    """Evaluate a run's best checkpoint on one split."""
    _quiet_libraries()
    from terarec.train.loop import evaluate, load_task

    try:
        task = load_task(run_dir)
        metrics = evaluate(task, split, progress=True)
    except (ValueError, FileNotFoundError) as error:
        _fail(error)
    _print_metrics(f"{run_dir.name} on {split}", [(split, metrics)])
    typer.echo(json.dumps(metrics))


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the demo's data and runs."),
    events: int = typer.Option(300_000, help="Synthetic events to generate."),
    epochs: int = typer.Option(3, help="Training epochs of the learned models."),
) -> None:
    """Run the end-to-end demo on built-in synthetic data.

    Generates data, splits it by time, trains a popularity baseline and an embedding model
    for CTR and for next-item retrieval, evaluates them and prints a metrics table."""
    _quiet_libraries()
    from terarec.demo import run_demo

    run_demo(out, events=events, epochs=epochs, console=console)


@app.command("plan")
def plan_command(
    config: Path = typer.Argument(..., help="A memory plan YAML: tables (name, rows, dim, dtype, optimizer) and host_memory_gb."),
    host_memory_gb: Optional[float] = typer.Option(None, help="Memory per host in GiB (overrides the file)."),
) -> None:
    """Print the memory an embedding plan needs (weights, ids, optimizer state, hash map) and the hosts it takes."""
    from rich.console import Console as WideConsole

    from terarec.config import ConfigError
    from terarec.embedding.planner import load_plan, report_table

    try:
        plan = load_plan(config)
        if host_memory_gb is not None:
            plan.host_memory_gb = host_memory_gb
    except (ConfigError, ValueError, FileNotFoundError) as error:
        _fail(error)
    WideConsole(width=max(console.width, 130)).print(report_table(plan))


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="Sweep YAML: model families and their sizes, e.g. configs/scaling/sweep.yaml."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides for every point, e.g. data.path=data/scaling train.threads=1."),
    out: Optional[Path] = typer.Option(None, help="Sweep folder (default: the spec's out); an existing one is resumed."),
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
        spec = load_sweep(config, overrides or [])
        folder = out or Path(spec.out)
        run_sweep(spec, folder, log=console.print)
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
