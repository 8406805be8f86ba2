"""The daily synthetic log: one partition per day, new ids every day, items ageing out, determinism."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from terarec.cli import app
from terarec.data.sources.synthetic import EPOCH, SECONDS_PER_DAY
from terarec.data.sources.synthetic_daily import DailyConfig, DailyGenerator, write_daily

SMALL = DailyConfig(days=6, events_per_day=3_000, new_users_per_day=100, new_items_per_day=40, item_lifetime_days=3,
                    user_lifetime_days=3.0, seed=5)


def test_days_are_time_ordered_and_repeat_with_the_seed() -> None:
    first, second = list(DailyGenerator(SMALL).days()), list(DailyGenerator(SMALL).days())
    assert [a.equals(b) for a, b in zip(first, second)] == [True] * SMALL.days
    for day, table in enumerate(first):
        times = table.column("timestamp").to_numpy()
        assert table.num_rows == SMALL.events_per_day
        assert np.all(np.diff(times) >= 0)
        assert times.min() >= EPOCH + day * SECONDS_PER_DAY and times.max() < EPOCH + (day + 1) * SECONDS_PER_DAY
        assert 0.1 < table.column("click").to_numpy().mean() < 0.6


def test_new_ids_arrive_every_day_and_items_age_out() -> None:
    days = list(DailyGenerator(SMALL).days())
    items = [set(table.column("item_id").to_numpy().tolist()) for table in days]
    users = [set(table.column("user_id").to_numpy().tolist()) for table in days]
    lifetime = SMALL.item_lifetime_days
    for day in range(1, SMALL.days):
        assert items[day] - set().union(*items[:day]), f"day {day} shows no new item"
        assert users[day] - set().union(*users[:day]), f"day {day} has no new user"
    for day in range(SMALL.days - lifetime):
        assert not items[day] & items[day + lifetime], f"an item of day {day} is still shown {lifetime} days later"


def test_synth_days_writes_one_partition_per_day_in_name_order(tmp_path) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--days", "3", "--events", "900", "--users", "150",
                                      "--items", "60", "--out", str(tmp_path / "daily")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "daily").glob("*.parquet"))
    assert [f.name for f in files] == ["day-0000.parquet", "day-0001.parquet", "day-0002.parquet"]
    starts = [pq.read_table(f).column("timestamp").to_numpy().min() for f in files]
    assert starts == sorted(starts) and all(pq.read_metadata(f).num_rows == 300 for f in files)
    with pytest.raises(FileExistsError):
        write_daily(DailyConfig(days=1, events_per_day=10), tmp_path / "daily")
