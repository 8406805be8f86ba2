"""The end-to-end demo: synthetic data -> time split -> four models -> metrics table and run folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from terarec.train.experiment import load_config

# (run name, task, model, extra overrides): a baseline and a learned model for each task kind.
DEMO_RUNS: list[tuple[str, str, str, list[str]]] = [
    ("ctr-popularity", "ctr", "popularity", []),
    ("ctr-embedding_mlp", "ctr", "embedding_mlp", ["data.batch_size=1024"]),
    ("seq-most_popular", "sequential", "most_popular", ["data.keep_if=click"]),
    ("seq-bag_of_items", "sequential", "bag_of_items", ["data.keep_if=click", "data.batch_size=128"]),
]


def run_demo(out: str | Path, events: int = 300_000, epochs: int = 3, console: Console | None = None) -> dict:
    """Run the demo into ``out`` and return {run name: test metrics}."""
    from terarec.data.prepare import write_dataset
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig
    from terarec.train.loop import _json_safe, train

    console = console or Console()
    out = Path(out)
    started = time.perf_counter()
    data_dir = out / "data"
    synth = SyntheticConfig(num_events=events, num_users=max(200, events // 60), num_items=max(500, events // 30))
    console.rule("[bold]1. synthetic data")
    meta = write_dataset(load_synthetic(synth), data_dir, SplitConfig(method="time"), overwrite=True)
    console.print(f"{meta.num_rows:,} events, {meta.stats.get('num_users', 0):,} users, "
                  f"{meta.stats.get('num_items', 0):,} items; time split {meta.split['counts']}")
    results: dict[str, dict] = {}
    for index, (name, task, model, extra) in enumerate(DEMO_RUNS, start=2):
        console.rule(f"[bold]{index}. {name}")
        config = load_config(None, [f"name={name}", f"task={task}", f"model.name={model}",
                                    f"data.path={data_dir}", f"run_dir={out / 'runs'}",
                                    f"train.epochs={epochs}", "eval.ks=[10,50,200]", *extra])
        result = train(config, progress=True)
        results[name] = {"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, "test": result.test}
    seconds = time.perf_counter() - started
    for kind, keys in (("ctr", ["auc", "logloss", "gauc"]), ("seq", ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"])):
        table = Table(title=f"test metrics: {'CTR (click)' if kind == 'ctr' else 'next clicked item, full catalogue'}")
        table.add_column("model")
        for key in keys:
            table.add_column(key, justify="right")
        for name, record in results.items():
            if name.startswith(kind):
                table.add_row(name.split("-", 1)[1], *[f"{record['test'][k]:.4f}" for k in keys])
        console.print(table)
    summary = {"seconds": round(seconds, 1), "events": meta.num_rows, "runs": results}
    (out / "demo.json").write_text(json.dumps(_json_safe(summary), indent=2))
    console.print(f"demo finished in {seconds:.0f}s; summary in {out / 'demo.json'}")
    return summary
