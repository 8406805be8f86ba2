"""A tiny synthetic-ctr dataset shared by the scaling tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.data.prepare import write_dataset
from terarec.data.sources.synthetic_ctr import load_synthetic_ctr


@pytest.fixture(scope="package")
def tiny_ctr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 rows, 4 fields of 3..6 values, order-2/3 teacher; random 80/10/10 split."""
    folder = tmp_path_factory.mktemp("scaling") / "tiny"
    data = load_synthetic_ctr("-", num_rows=600, num_fields=4, min_cardinality=3, max_cardinality=6,
                              num_terms=8, orders=[2, 3], order_weights=[1.0, 1.0], seed=3)
    write_dataset(data, folder, progress=False)
    return folder
