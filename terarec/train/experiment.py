"""Loading an experiment config: parsed and typed (``terarec.config``), then checked against the
model registry and the cross specs, so a mistake is reported before any data is read.

The checks live here, above models and features, because ``terarec.config`` is the bottom
layer and may not import them.

Example:
    >>> cfg = load_config(None, ["task=ctr", "model={name: dlrm, embedding_dim: 8}"])
    >>> cfg.model["embedding_dim"]
    8
"""

from __future__ import annotations

from pathlib import Path

from terarec.config import ExperimentConfig, parse_config
from terarec.features.crosses import crosses_from_config
from terarec.models import check_model_options


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an ExperimentConfig from YAML (or defaults when ``path`` is None) plus overrides, checked
    by ``check_config``."""
    config = parse_config(path, overrides)
    check_config(config)
    return config


def check_config(config: ExperimentConfig) -> None:
    """Raise ``ConfigError`` naming the field if the model's options or the crosses do not fit."""
    check_model_options(config)
    crosses_from_config(config.data.crosses, "data.crosses")
