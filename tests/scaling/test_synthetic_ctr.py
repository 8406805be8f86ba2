"""The synthetic-ctr source: seeded, chunk-independent, and its labels need interactions."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from terarec.config import ConfigError
from terarec.data.sources import load_source
from terarec.data.sources.synthetic_ctr import (
    SyntheticCTRConfig,
    Teacher,
    bayes_logloss,
    synthetic_ctr_config,
)


def _rows(**options) -> pa.Table:
    return pa.concat_tables(list(load_source("synthetic-ctr", "-", num_rows=500, **options).chunks))


def test_same_seed_same_rows_any_chunking() -> None:
    first = _rows(seed=5, rows_per_chunk=500)
    assert first.equals(_rows(seed=5, rows_per_chunk=500))
    assert not first.equals(_rows(seed=6, rows_per_chunk=500))
    # The teacher does not depend on the chunking, so the true CTR of the same values agrees.
    config = synthetic_ctr_config(seed=5)
    values = np.stack([first.column(name).to_numpy() for name in config.field_names])
    again = 1 / (1 + np.exp(-Teacher(synthetic_ctr_config(seed=5, rows_per_chunk=7)).logits(values)))
    assert again == pytest.approx(first.column("true_ctr").to_numpy(), abs=1e-6)


def test_columns_and_roles() -> None:
    data = load_source("synthetic-ctr", "-", num_rows=10, num_fields=3, orders=[2], order_weights=[1.0])
    assert data.kind == "ctr" and data.sparse == ["f00", "f01", "f02"] and data.labels == ["click"]
    table = next(iter(data.chunks))
    assert "true_ctr" in table.column_names and "true_ctr" not in data.sparse + data.dense


def test_pure_order_three_terms_carry_nothing_pairwise() -> None:
    """With centred term tables (term_mean 0) and no first order, the logit given any two
    fields is exactly the bias, yet it varies with all three: only an order-3 model sees it."""
    config = SyntheticCTRConfig(num_fields=3, min_cardinality=3, max_cardinality=5, num_terms=4, orders=[3],
                                order_weights=[1.0], term_mean=0.0, first_order_scale=0.0, bias=-1.0).validate()
    teacher = Teacher(config)
    grid = np.array(list(itertools.product(*(range(size) for size in teacher.cardinalities)))).T  # (3, all rows)
    logits = teacher.logits(grid).reshape(tuple(teacher.cardinalities))
    assert logits.std() > 0.5
    for axis in range(3):  # averaging out one field leaves every pair at the bias
        assert np.allclose(logits.mean(axis=axis), -1.0, atol=1e-5)
    # With a staircase (term_mean > 0) the same terms show up in the pairs as well.
    staircase = Teacher(SyntheticCTRConfig(**{**config.__dict__, "term_mean": 1.0}))
    assert np.abs(staircase.logits(grid).reshape(logits.shape).mean(axis=0) + 1.0).max() > 0.1


def test_bayes_floor_beats_the_base_rate(tiny_ctr: Path) -> None:
    floor = bayes_logloss(tiny_ctr, "train")
    rate = float(np.mean(_rows(num_fields=4, min_cardinality=3, max_cardinality=6, num_terms=8, orders=[2, 3],
                               order_weights=[1.0, 1.0], seed=3).column("click").to_numpy()))
    base = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert 0 < floor < base


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="orders"):
        synthetic_ctr_config(orders=[1, 2], order_weights=[1.0, 1.0])
    config = tmp_path / "data.yaml"
    config.write_text("num_rowz: 10\n")
    with pytest.raises(ConfigError, match="num_rows"):
        synthetic_ctr_config(config)
