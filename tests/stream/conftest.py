"""A small daily log and a streaming config over it, shared by the stream tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from terarec.data.sources.synthetic_daily import DailyConfig, write_daily

DAILY = DailyConfig(days=6, events_per_day=1_500, new_users_per_day=60, new_items_per_day=30, item_lifetime_days=2,
                    user_lifetime_days=3.0, seed=3)

STREAM_CONFIG = {
    "name": "stream", "task": "ctr",
    "data": {"sparse": ["user_id", "item_id", "category", "device"], "dense": [], "labels": ["click"],
             "batch_size": 64, "eval_batch_size": 512},
    # Dropout draws from the global RNG every step: resuming must restore it.
    "model": {"name": "dlrm", "embedding_dim": 8, "bottom_mlp": [8], "top_mlp": [16], "dropout": 0.1},
    "train": {"learning_rate": 0.01, "seed": 4, "threads": 1, "log_every": 1},
    "embedding": {"vocabulary": "managed", "capacity": 150, "eviction": "ttl", "ttl_days": 1.5,
                  "optimizer": "rowwise_adagrad", "learning_rate": 0.05},
    "stream": {"delta_every": 1},
}


SEQUENCE_CONFIG = {
    "name": "sequence-stream", "task": "sequential",
    "data": {"keep_if": "click", "max_length": 12, "batch_size": 16, "eval_batch_size": 64},
    # Dropout draws from the global RNG every step: resuming must restore it.
    "model": {"name": "sasrec", "embedding_dim": 8, "num_layers": 1, "max_length": 12, "dropout": 0.1,
              "num_negatives": 16},
    "train": {"learning_rate": 0.01, "seed": 4, "threads": 1, "log_every": 1},
    "eval": {"ks": [10]},
    "embedding": {"vocabulary": "managed", "capacity": 150, "eviction": "ttl", "ttl_days": 1.5},
    "stream": {"delta_every": 0, "history_ttl_days": 1.5},
}


@pytest.fixture(scope="session")
def daily_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("daily") / "days"
    write_daily(DAILY, folder)
    return folder


def stream_config_file(data: Path, tmp: Path, name: str, base: dict = STREAM_CONFIG, **sections: dict) -> Path:
    """A streaming config over ``data`` writing runs under ``tmp / name``; ``sections`` update ``base``
    (``STREAM_CONFIG``, a ctr stream, or ``SEQUENCE_CONFIG``)."""
    config = json.loads(json.dumps(base))
    for section, values in sections.items():
        config[section].update(values)
    config.update(name=name, run_dir=str(tmp / name))
    config["data"]["path"] = str(data)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
