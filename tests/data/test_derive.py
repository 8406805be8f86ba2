"""Derived columns for any events source, through `terarec data prepare -o ...` on a tiny events CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from terarec.cli import app
from terarec.data.derive import Derivations
from terarec.data.errors import DataError
from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.features.crosses import CrossSpec
from terarec.features.hashing import hash_array, null_id
from terarec.features.mixing import fold_ids
from terarec.features.weak_semantic import weak_semantic_keys

runner = CliRunner()
DAY = 86_400

# user, item, time (days), category, city, click; rows out of order on purpose
ROWS = [
    (1, 10, 0, "a", "paris", 1),
    (1, 11, 1, "a", "paris", 0),
    (2, 10, 0, "b", "rome", 1),
    (1, 12, 2, "b", "lyon", 1),
    (1, 13, 2, "a", "lyon", 1),
    (2, 14, 5, "b", "rome", 0),
    (1, 15, 3, "c", "paris", 1),
    (2, 15, 6, "a", "oslo", 1),
]


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    lines = ["user_id,item_id,timestamp,category,city,click"]
    lines += [f"{u},{i},{t * DAY},{c},{city},{k}" for u, i, t, c, city, k in ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(tmp_path: Path, *options: str) -> tuple[pa.Table, dict]:
    out = tmp_path / "out"
    args = ["data", "prepare", "events", str(_csv(tmp_path)), "--out", str(out), "--split", "random",
            "-o", "sparse=[category, city]", "-o", "labels=[click]"]
    for option in options:
        args += ["-o", option]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    return pq.read_table(out / meta["parts"][0]), meta


def _earlier(user: int, day: int) -> list[tuple]:
    """The user's rows with a strictly earlier time, oldest first (ties in file order)."""
    return sorted((row for row in ROWS if row[0] == user and row[2] < day), key=lambda row: row[2])


def test_history_option_adds_aligned_lists_of_earlier_events(tmp_path: Path) -> None:
    table, meta = _prepare(tmp_path, "history=[item_id, category]", "history_length=2")
    for row in table.to_pylist():
        earlier = _earlier(row["user_id"], row["timestamp"] // DAY)[-2:]
        assert row["hist_item_id"] == [r[1] for r in earlier]
        assert row["hist_category"] == [r[3] for r in earlier]
    assert meta["sparse"][-2:] == ["hist_item_id", "hist_category"]


def test_weak_semantic_option_stores_the_cross_ids(tmp_path: Path) -> None:
    spec = "weak_semantic=[{name: fav_cat_x_item, columns: [category, item_id], window_days: 2, history_where: click}]"
    table, meta = _prepare(tmp_path, spec)
    cross = CrossSpec("fav_cat_x_item", "weak_semantic", ["category", "item_id"], window_days=2)
    expected = weak_semantic_keys(table, cross, history_mask=table.column("click").to_numpy() > 0)
    np.testing.assert_array_equal(table.column("fav_cat_x_item").to_numpy(), expected)
    ids = dict(zip(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()), expected.tolist()))

    def crossed(category: str, item: int) -> int:
        return int(fold_ids("fav_cat_x_item", [hash_array(pa.array([category]), "category"),
                                               hash_array(pa.array([item]), "item_id")])[0])

    assert ids[(1, 10)] == ids[(2, 10)] == null_id("fav_cat_x_item")  # first events: no history
    assert ids[(1, 11)] == crossed("a", 11)
    # user 1 at day 3: day 0 is too old, day 1 was not clicked; day 2 has b then a (file order):
    # a tie, and the most recent wins
    assert ids[(1, 15)] == crossed("a", 15)
    # user 2 at day 6: day 5 (b) was not clicked and day 0 is too old: no history
    assert ids[(2, 15)] == null_id("fav_cat_x_item")
    assert "fav_cat_x_item" in meta["sparse"]


def test_unified_option_writes_the_merged_series(tmp_path: Path) -> None:
    table, meta = _prepare(tmp_path, "unified=[city]")
    assert meta["side_tables"]["unified"] == "unified.parquet"
    series = pq.read_table(tmp_path / "out" / "unified.parquet")
    assert "city" in table.column_names  # the main table keeps its columns
    user1 = series.filter(pc.equal(series["user_id"], 1))
    assert user1["series"].to_pylist() == ["city", "main", "main", "city", "main", "main", "city", "main"]
    assert [c for c in user1["city"].to_pylist() if c] == ["paris", "lyon", "paris"]
    assert user1.filter(pc.equal(user1["series"], "main"))["item_id"].to_pylist() == [10, 11, 12, 13, 15]
    assert series.filter(pc.equal(series["series"], "main")).num_rows == len(ROWS)
    assert "split" in series.column_names


def test_options_mix_with_loader_options_and_errors_name_the_option(tmp_path: Path) -> None:
    options = {"history": ["item_id"], "history_length": 3, "sparse": ["genre"]}
    derive = Derivations.from_options(options)
    assert derive.history == ["item_id"] and options == {"sparse": ["genre"]}
    assert Derivations.from_options({"history_length": 3}).history == []  # movielens's own option stays
    with pytest.raises(DataError, match="history_length"):
        Derivations.from_options({"history": ["item_id"], "history_length": 0})
    with pytest.raises(DataError, match="weak_semantic"):
        Derivations.from_options({"weak_semantic": "fav"})
    with pytest.raises(ValueError, match="window_days"):
        Derivations.from_options({"weak_semantic": [{"name": "w", "columns": ["a", "b"], "window_days": -1}]})

    csv = _csv(tmp_path)
    result = runner.invoke(app, ["data", "prepare", "events", str(csv), "--out", str(tmp_path / "o"),
                                 "-o", "history=[genre]"])
    assert result.exit_code == 2 and "genre" in result.output
    assert not (tmp_path / "o").exists()
    rows = SourceData(name="rows", source="test", kind="ctr", chunks=[pa.table({"label": [1.0], "user": [1]})])
    with pytest.raises(DataError, match="events table"):
        write_dataset(rows, tmp_path / "c", derive=Derivations(unified=["user"]), progress=False)


def test_synth_takes_the_same_options(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--events", "2000", "--users", "50",
                                 "--items", "100", "-o", "history=[item_id, click]", "-o", "history_length=5"])
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    table = pq.read_table(out / meta["parts"][0], columns=["hist_item_id", "hist_click"])
    assert max(len(items) for items in table["hist_item_id"].to_pylist()) == 5
    assert "hist_item_id" in meta["sparse"] and "hist_click" not in meta["sparse"]
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "b"), "-o", "negatives=2"])
    assert bad.exit_code == 2 and "negatives" in bad.output


def test_a_ctr_run_trains_on_the_derived_columns(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    result = runner.invoke(app, [
        "data", "synth", "--out", str(data), "--events", "3000", "--users", "100", "--items", "200",
        "-o", "history=[item_id]", "-o", "history_length=10",
        "-o", "weak_semantic=[{name: fav_cat_x_item, columns: [category, item_id], window_days: 7}]",
    ])
    assert result.exit_code == 0, result.output
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "derived", "task": "ctr", "run_dir": str(tmp_path / "runs"),
        "data": {"path": str(data), "batch_size": 256, "labels": ["click"],
                 "sparse": ["user_id", "item_id", "hist_item_id"],
                 "crosses": [{"name": "fav_cat_x_item", "kind": "weak_semantic", "columns": ["category", "item_id"]}]},
        "model": {"name": "embedding_mlp", "hidden": [16]},
    }))
    result = runner.invoke(app, ["train", str(config), "train.epochs=1", "--no-progress"])
    assert result.exit_code == 0, result.output
