"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from tests.train.test_train import _ctr_events


@pytest.fixture(scope="module")
def xor_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Click = item parity XOR device, 10% flipped: only an item x device interaction carries it."""
    folder = tmp_path_factory.mktemp("xor") / "ds"
    data = SourceData("xor", "test", "events", [_ctr_events()], sparse=["user_id", "item_id", "device"], labels=["click"])
    write_dataset(data, folder, progress=False)
    return folder
