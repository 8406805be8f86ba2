"""Tests for terarec.config and terarec.train.experiment: YAML loading, dotted overrides and the errors for bad keys and types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from terarec.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    apply_overrides,
    from_dict,
    to_yaml,
)
from terarec.models import check_model_options
from terarec.train.experiment import load_config

CTR_YAML = """
name: my-ctr
task: ctr
data:
  path: /data/syn
  batch_size: 256
  labels: [click]
model:
  name: embedding_mlp
  embedding_dim: 8
  hidden: [32, 16]
train:
  epochs: 4
  learning_rate: 0.01
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- loading


def test_yaml_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CTR_YAML))
    assert isinstance(config, ExperimentConfig)
    assert config.name == "my-ctr" and config.task == "ctr"
    assert config.data.path == "/data/syn" and config.data.batch_size == 256 and config.data.labels == ["click"]
    assert config.data.sparse is None  # default kept
    assert config.model == {"name": "embedding_mlp", "embedding_dim": 8, "hidden": [32, 16]}
    assert config.train.epochs == 4 and config.train.learning_rate == 0.01
    assert config.train.patience == 2  # default kept
    assert config.eval.ks == [10, 50, 200]


def test_defaults_without_a_file() -> None:
    config = load_config()
    assert config == ExperimentConfig()
    assert config.model == {"name": "embedding_mlp"}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    # Issue 13 item 10: an empty file used to train a default model without a word.
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"{path}.*empty"):
        load_config(path)


def test_explicit_empty_mapping_and_overrides_only_give_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "{}")) == ExperimentConfig()
    assert load_config(None, ["train.epochs=1"]).train.epochs == 1


def test_binary_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=f"{path}: not a YAML text file"):
        load_config(path)
    path.write_bytes(b"name: x\x00\x01\n")  # UTF-8, but characters YAML does not allow
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("override", ["data.batch_size=0", "data.eval_batch_size=-1", "data.max_length=0",
                                      "data.num_workers=-2"])
def test_non_positive_sizes_name_the_field(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0] + ": expected an integer"):
        load_config(None, [override])


def test_to_yaml_round_trip(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CTR_YAML), ["eval.ks=[5]"])
    again = from_dict(ExperimentConfig, yaml.safe_load(to_yaml(config)))
    assert again == config


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


# ----------------------------------------------------------------------------- overrides


def test_dotted_overrides(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, CTR_YAML),
        [
            "train.epochs=7",
            "train.learning_rate=0.5",
            "data.sparse=[user_id, item_id]",  # a list where the file had none
            "eval.ks=[5, 20]",
            "model.hidden=[64]",
            "model.dropout=0.25",  # a model option the file did not set
            "name=other",
            "data.keep_if=click",
        ],
    )
    assert config.train.epochs == 7
    assert config.train.learning_rate == 0.5
    assert config.data.sparse == ["user_id", "item_id"]
    assert config.eval.ks == [5, 20]
    assert config.model["hidden"] == [64] and config.model["dropout"] == 0.25
    assert config.model["embedding_dim"] == 8  # untouched sibling keys survive
    assert config.name == "other"
    assert config.data.keep_if == "click"
    model_config = check_model_options(config)
    assert model_config.hidden == [64] and model_config.embedding_dim == 8 and model_config.dropout == 0.25


def test_override_creates_missing_sections() -> None:
    config = load_config(None, ["train.seed=3", "data.path=/x"])
    assert config.train.seed == 3 and config.data.path == "/x"
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_override_empty_and_null_values() -> None:
    assert apply_overrides({}, ["a="]) == {"a": ""}
    config = load_config(None, ["data.labels=null"])
    assert config.data.labels is None


def test_bad_override_forms() -> None:
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.first=3"])


def test_scientific_notation_floats(tmp_path: Path) -> None:
    # PyYAML reads 1e-3 (no dot) as a string; a float field must still take it.
    config = load_config(write(tmp_path, "train:\n  learning_rate: 1e-3\n"), ["train.weight_decay=1e-6"])
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.train.weight_decay == pytest.approx(1e-6)
    assert isinstance(config.train.learning_rate, float)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "override, key, suggestion",
    [
        ("train.epochz=3", "train.epochz", "epochs"),
        ("data.batchsize=3", "data.batchsize", "batch_size"),
        ("eval.k=[1]", "eval.k", "ks"),
        ("trian.epochs=3", "trian", "train"),
    ],
)
def test_unknown_key_names_key_and_nearest(override: str, key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    message = str(error.value)
    assert f"'{key}'" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learnin_rate'.*learning_rate"):
        load_config(write(tmp_path, "train:\n  learnin_rate: 0.1\n"))


def test_unknown_key_without_near_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match="valid keys: .*epochs"):
        load_config(None, ["train.zzzzzz=1"])


@pytest.mark.parametrize(
    "override, field_name, expected",
    [
        ("train.epochs=abc", "train.epochs", "integer"),
        ("train.epochs=2.5", "train.epochs", "integer"),
        ("train.epochs=true", "train.epochs", "integer"),
        ("train.learning_rate=fast", "train.learning_rate", "number"),
        ("train.checkpoint=3", "train.checkpoint", "true or false"),
        ("data.sparse=user_id", "data.sparse", "list"),
        ("eval.ks=[10, x]", "eval.ks[1]", "integer"),
        ("data.path=[a]", "data.path", "string"),
        ("task=retrieval", "task", "one of"),
        ("data=3", "data", "mapping"),
    ],
)
def test_wrong_type_names_the_field(override: str, field_name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert field_name in str(error.value)
    assert expected in str(error.value)


def test_unknown_model_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, CTR_YAML), ["model.hiden=[4]"])
    assert "'model.hiden'" in str(error.value) and "did you mean 'hidden'" in str(error.value)


def test_model_option_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.embedding_dim: expected an integer"):
        load_config(write(tmp_path, CTR_YAML), ["model.embedding_dim=big"])


def test_unknown_model_name_suggests_nearest() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.name=embeding_mlp"])
    assert "unknown model 'embeding_mlp'" in str(error.value)
    assert "did you mean 'embedding_mlp'" in str(error.value)


def test_missing_model_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.name is missing"):
        load_config(write(tmp_path, "model:\n  embedding_dim: 4\n"))


@pytest.mark.parametrize(
    "overrides, model, model_task",
    [
        (["model={name: bag_of_items}"], "bag_of_items", "sequential"),
        (["task=sequential"], "embedding_mlp", "ctr"),
        (["task=sequential", "model.name=popularity"], "popularity", "ctr"),
    ],
)
def test_task_model_mismatch(overrides: list[str], model: str, model_task: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert f"model '{model}' serves task '{model_task}'" in str(error.value)


def test_sequential_models_load() -> None:
    config = load_config(None, ["task=sequential", "model={name: bag_of_items, embedding_dim: 8}"])
    assert check_model_options(config).embedding_dim == 8
    config = load_config(None, ["task=sequential", "model={name: most_popular}"])
    with pytest.raises(ConfigError, match="model.foo"):
        load_config(None, ["task=sequential", "model={name: most_popular, foo: 1}"])
    assert config.model == {"name": "most_popular"}


def test_from_dict_nested_dataclass() -> None:
    data = from_dict(DataConfig, {"path": "x", "actions": ["click"], "max_length": 5})
    assert data == DataConfig(path="x", actions=["click"], max_length=5)
