"""Fixtures shared by test packages: small prepared datasets with a learnable signal."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from tests.train.test_train import _ctr_events, _sequence_events


@pytest.fixture(scope="module")
def ctr_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctr") / "ds"
    data = SourceData(
        "xor", "test", "events", [_ctr_events()], sparse=["user_id", "item_id", "device"], labels=["click"]
    )
    write_dataset(data, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def seq_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seq") / "ds"
    data = SourceData("groups", "test", "events", [_sequence_events()], sparse=["item_id"], labels=["click"])
    write_dataset(data, folder, progress=False)
    return folder
