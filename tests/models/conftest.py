"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """train() sets torch's thread count for the process; give other test modules theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def taste_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Users whose taste only their history reveals (tests.models.test_din.write_taste_dataset)."""
    from tests.models.test_din import write_taste_dataset

    return write_taste_dataset(tmp_path_factory.mktemp("taste") / "ds")
