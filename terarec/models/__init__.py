"""The model registry: a config's ``model.name`` -> the model class (one file per model).

Every model class has a ``Config`` dataclass (its options, with defaults), a ``task``
(``ctr`` or ``sequential``) and is built as ``cls(config, features)`` where ``features`` is a
``terarec.models.inputs.ModelInputs``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from terarec.config import ConfigError, ExperimentConfig, from_dict

MODELS: dict[str, str] = {
    "popularity": "terarec.models.popularity:ItemPopularity",
    "most_popular": "terarec.models.popularity:MostPopular",
    "embedding_mlp": "terarec.models.embedding_mlp:EmbeddingMLP",
    "dlrm": "terarec.models.dlrm:DLRM",
    "dcnv2": "terarec.models.dcnv2:DCNv2",
    "deepfm": "terarec.models.deepfm:DeepFM",
    "mmoe": "terarec.models.mmoe:MMoE",
    "wukong": "terarec.models.wukong:Wukong",
    "bag_of_items": "terarec.models.bag_of_items:BagOfItems",
    "din": "terarec.models.din:DIN",
    "dien": "terarec.models.dien:DIEN",
    "sim": "terarec.models.sim:SIM",
    "hstu": "terarec.models.hstu:HSTU",
    "hstu_ranking": "terarec.models.hstu_ranking:HSTURanking",
    "sasrec": "terarec.models.sasrec:SASRec",
    "bert4rec": "terarec.models.bert4rec:BERT4Rec",
    "gru4rec": "terarec.models.gru4rec:GRU4Rec",
}


def model_class(name: str) -> type:
    """The class registered under ``name``; an unknown name is an error naming the nearest."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))}){hint}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_model_options(config: ExperimentConfig) -> Any:
    """Check ``config.model`` against the named model's Config dataclass and return that Config."""
    options = dict(config.model)
    name = options.pop("name", None)
    if name is None:
        raise ConfigError("model.name is missing")
    cls = model_class(name)
    if cls.task != config.task:
        raise ConfigError(f"model '{name}' serves task '{cls.task}', but task is '{config.task}'")
    return from_dict(cls.Config, options, "model")
