"""The next-item configs (configs/{ml100k,beauty,video}/{hstu,sasrec,bert4rec,gru4rec}.yaml) load and build."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.models import check_model_options, model_class
from terarec.train.experiment import load_config
from tests.models.sequences import inputs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("dataset", ["ml100k", "beauty", "video"])
@pytest.mark.parametrize("model", ["hstu", "sasrec", "bert4rec", "gru4rec"])
def test_config_builds_its_model(dataset: str, model: str) -> None:
    config = load_config(CONFIGS / dataset / f"{model}.yaml", ["model.embedding_dim=8"])
    assert config.task == "sequential" and config.model["name"] == model
    options = check_model_options(config)
    if hasattr(options, "max_length"):
        assert options.max_length >= config.data.max_length  # training inputs fit the position table
    model_class(model)(options, inputs())
