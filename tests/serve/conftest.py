"""Small trained runs shared by the serving tests: one synthetic log, a sequential HSTU, an HSTU
ranking and a Wukong CTR run (one epoch each, tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from terarec.data.prepare import write_dataset
from terarec.data.ranking import synthetic_ranking_source
from terarec.data.sources.synthetic import SyntheticConfig, load_synthetic
from terarec.data.splits import SplitConfig
from terarec.train.experiment import load_config
from terarec.train.loop import train

HISTORY = 8
RUNS = {
    "retrieval": ("sequential", "{name: hstu, embedding_dim: 16, num_layers: 1, max_length: 8, num_negatives: 16}",
                  ["data.keep_if=click", "data.max_length=8", "data.batch_size=64"]),
    "ranking": ("ranking", "{name: hstu_ranking, embedding_dim: 16, max_events: 8, item_features: [category, hour, "
                "device], user_features: [age_bucket, gender], head_mlp: [8], tasks: {click: binary, like: binary, "
                "watch_time: regression}}",
                ["data.actions=[click, like, watch_time]", "data.labels=[click, like, long_watch]",
                 "data.max_length=8", "data.batch_size=64"]),
    "ctr": ("ctr", "{name: wukong, embedding_dim: 8, num_layers: 1, fmb_mlp: [16], top_mlp: [16]}",
            ["data.sparse=[user_id, item_id, category, hour, device, age_bucket, gender]", "data.dense=[price]",
             "data.dense_transform=log1p", "data.labels=[click]", "data.batch_size=256"]),
}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'data': dataset folder, 'retrieval' | 'ranking' | 'ctr': run folder}."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("serve-runs")
    data = synthetic_ranking_source(load_synthetic(SyntheticConfig(num_users=80, num_items=150, num_events=4000)),
                                    HISTORY, ["click", "like", "watch_time", "category", "hour", "device"])
    write_dataset(data, root / "data", SplitConfig(method="time"), progress=False)
    found = {"data": root / "data"}
    for name, (task, model, extra) in RUNS.items():
        config = load_config(None, [f"name={name}", f"task={task}", f"model={model}", f"data.path={root / 'data'}",
                                    f"run_dir={root}", "train.epochs=1", "train.threads=1", "eval.ks=[10]", *extra])
        found[name] = train(config, progress=False, run_dir=root / name).run_dir
    torch.set_num_threads(threads)
    return found
