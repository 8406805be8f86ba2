"""The end-to-end demo: synthetic events -> time split -> CTR, retrieval and ranking runs -> top 10 -> served.

One synthetic log (with each row's earlier events as ``hist_*`` lists) serves three task kinds:
Wukong against the popularity baseline for click-through, HSTU against most-popular for
next-item retrieval, and HSTU ranking (interleaved items and actions, multi-task heads). Each run
is an ordinary experiment through the trainer; at the end a ``Predictor`` loaded from the HSTU
retrieval run folder alone prints the top 10 items for one user; last, the HSTU and Wukong runs
are exported as one bundle, served on 127.0.0.1, asked a few requests and stopped.

The demo writes only inside its own folder (``--out``, default ``runs/demo``): a folder it made
carries a ``.terarec-demo`` marker, and any other non-empty folder is refused rather than
overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from terarec.train.experiment import load_config

MARKER = ".terarec-demo"
HISTORY = 20  # events of history per row / per training window

# (run name, task, model options, extra overrides): a baseline and a learned model per task kind.
# The demo's click sequences are short (about 8 per user), so an HSTU retrieval epoch takes about
# a second: it gets ten times the epochs of the other models.
RETRIEVAL_EPOCHS = 10
DEMO_RUNS: list[tuple[str, str, str, list[str]]] = [
    ("ctr-popularity", "ctr", "{name: popularity}", []),
    ("ctr-wukong", "ctr", "{name: wukong, embedding_dim: 16, num_layers: 2, fmb_mlp: [64], top_mlp: [64]}",
     ["data.batch_size=1024", "data.sparse=[user_id, item_id, category, hour, device, age_bucket, gender]",
      "data.dense=[price]", "data.dense_transform=log1p", "data.labels=[click]"]),
    ("seq-most_popular", "sequential", "{name: most_popular}", ["data.keep_if=click"]),
    ("seq-hstu", "sequential", f"{{name: hstu, embedding_dim: 32, num_layers: 2, max_length: {HISTORY}, "
     "num_negatives: 128}", ["data.keep_if=click", "data.batch_size=128", f"data.max_length={HISTORY}",
                            "train.learning_rate=0.002"]),
    ("rank-hstu_ranking", "ranking", f"{{name: hstu_ranking, embedding_dim: 32, max_events: {HISTORY}, "
     "item_features: [category, hour, device], user_features: [age_bucket, gender], head_mlp: [32], "
     "tasks: {click: binary, like: binary, watch_time: regression}}",
     ["data.actions=[click, like, watch_time]", "data.labels=[click, like, long_watch]",
      f"data.max_length={HISTORY}", "data.batch_size=64"]),
]

TABLES = {
    "ctr": ("test metrics: CTR (click)", ["auc", "logloss", "gauc"]),
    "seq": ("test metrics: next clicked item, full catalogue", ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"]),
    "rank": ("test metrics: HSTU ranking, per task", ["click_auc", "like_auc", "long_watch_auc", "mean_auc"]),
}


def claim_folder(out: Path) -> None:
    """Make ``out`` the demo's folder: new, empty, or one an earlier demo made; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"--out {out} holds files the demo did not write; give a new or empty folder "
                         "(the demo never deletes what it did not make)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `terarec demo`; its data/ and runs/ may be replaced by the next demo\n")


def run_demo(out: str | Path, events: int = 150_000, epochs: int = 2, threads: int = 0,
             progress: bool | None = None, console: Console | None = None) -> dict:
    """Run the demo into ``out`` and return {run name: test metrics}.

    ``threads``: torch / pyarrow threads (0 = the CPUs this process may use); ``progress``:
    progress bars (None: only when stderr is a terminal)."""
    from terarec.data.prepare import write_dataset
    from terarec.data.ranking import synthetic_ranking_source
    from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
    from terarec.data.splits import SplitConfig
    from terarec.serve import Predictor
    from terarec.runtime import configure_threads, show_progress
    from terarec.train.loop import _json_safe, train

    console = console or Console()
    out = Path(out)
    claim_folder(out)
    started = time.perf_counter()
    threads = configure_threads(threads)
    data_dir = out / "data"
    synth = SyntheticConfig(num_events=events, num_users=max(200, events // 60), num_items=max(500, events // 30))
    console.rule("[bold]1. synthetic data")
    source = synthetic_ranking_source(load_synthetic(synth), HISTORY,
                                      ["click", "like", "watch_time", "category", "hour", "device"])
    meta = write_dataset(source, data_dir, SplitConfig(method="time"), overwrite=True,
                         progress=show_progress(progress))
    console.print(f"{meta.num_rows:,} events, {meta.stats.get('num_users', 0):,} users, "
                  f"{meta.stats.get('num_items', 0):,} items; time split {meta.split['counts']}")
    results: dict[str, dict] = {}
    for index, (name, task, model, extra) in enumerate(DEMO_RUNS, start=2):
        console.rule(f"[bold]{index}. {name}")
        run_epochs = epochs * (RETRIEVAL_EPOCHS if task == "sequential" else 1)
        config = load_config(None, [f"name={name}", f"task={task}", f"model={model}", f"data.path={data_dir}",
                                    f"run_dir={out / 'runs'}", f"train.epochs={run_epochs}", f"train.threads={threads}",
                                    "train.patience=0", "eval.ks=[10,50,200]", *extra])
        result = train(config, progress=progress)
        results[name] = {"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, "test": result.test}
    for kind, (title, keys) in TABLES.items():
        table = Table(title=title)
        table.add_column("model")
        for key in keys:
            table.add_column(key, justify="right")
        for name, record in results.items():
            if name.startswith(kind):
                table.add_row(name.split("-", 1)[1], *[f"{record['test'][k]:.4f}" for k in keys])
        console.print(table)

    console.rule(f"[bold]{len(DEMO_RUNS) + 2}. a Predictor from the HSTU run folder alone")
    predictor = Predictor.from_run(results["seq-hstu"]["run_dir"], threads=threads)
    user, history = _one_user_history(data_dir)
    items, scores = predictor.recommend(history, k=10)
    console.print(f"user {user}: last clicked items {history[-5:].tolist()}")
    table = Table(title=f"top 10 for user {user} (history excluded)")
    table.add_column("rank", justify="right")
    table.add_column("item_id", justify="right")
    table.add_column("score", justify="right")
    for rank, (item, score) in enumerate(zip(items.tolist(), scores.tolist()), start=1):
        table.add_row(str(rank), str(item), f"{score:.4f}")
    console.print(table)

    console.rule(f"[bold]{len(DEMO_RUNS) + 3}. export HSTU + Wukong as a bundle, serve it on 127.0.0.1")
    served = _serve_and_ask(out / "bundle", results, user, history, threads, console)

    seconds = time.perf_counter() - started
    summary = {"seconds": round(seconds, 1), "events": meta.num_rows, "runs": results,
               "recommendation": {"user_id": user, "items": items.tolist(), "scores": scores.tolist()},
               "served": served}
    (out / "demo.json").write_text(json.dumps(_json_safe(summary), indent=2))
    console.print(f"demo finished in {seconds:.0f}s; summary in {out / 'demo.json'}")
    return summary


def _serve_and_ask(bundle: Path, results: dict, user: int, history, threads: int, console: Console) -> dict:
    """Export the HSTU retrieval and Wukong runs, start the server on 127.0.0.1, send a few requests,
    print the answers and stop the server."""
    import httpx

    from terarec.serve.bundle import export_bundle
    from terarec.serve.server import ServerSettings, running_server

    export_bundle([results["seq-hstu"]["run_dir"], results["ctr-wukong"]["run_dir"]], bundle, overwrite=True,
                  threads=threads)
    recent = [int(item) for item in history[-HISTORY:]]
    requests = {"retrieval + Wukong ranking": {"history": {"items": recent}, "user_id": user, "k": 5},
                "Wukong over given candidates": {"history": {"items": recent}, "user_id": user, "k": 3,
                                                 "candidates": recent[:10], "exclude_seen": False},
                "malformed (k = 0)": {"history": {"items": recent}, "k": 0}}
    answers = {}
    with running_server(ServerSettings(bundle=bundle, threads=threads)) as url:
        console.print(f"serving {bundle} at {url}")
        for name, body in requests.items():
            response = httpx.post(f"{url}/v1/recommend", json=body, timeout=60)
            answers[name] = {"status": response.status_code, **response.json()}
            console.print(f"POST /v1/recommend ({name}) -> {response.status_code} {response.json()}")
        console.print(f"GET /readyz -> {httpx.get(f'{url}/readyz', timeout=10).json()}")
    console.print("server stopped")
    return answers


def _one_user_history(folder: Path):
    """The user with the longest clicked history in the data, and that history (oldest first)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    table = pq.read_table(parts[0], columns=["user_id", "item_id", "timestamp", "click"])
    table = table.filter(pc.greater(table.column("click"), 0))
    users, counts = np.unique(table.column("user_id").to_numpy(), return_counts=True)
    user = int(users[np.argmax(counts)])
    mine = table.filter(pc.equal(table.column("user_id"), user)).sort_by("timestamp")
    return user, mine.column("item_id").to_numpy()
