"""A synthetic impression log that arrives day by day: new users and items every day, items age out,
interests drift, so a model that stops learning goes stale. One Parquet partition per day.

Generative story (the constants are module-level below)
-------------------------------------------------------

* **Items.** ``new_items_per_day`` items arrive every day (ids count up from 0, so an id says
  when it arrived); day 0 starts with the items of the last ``item_lifetime_days`` days
  (their release days spread over them). An item is shown for ``item_lifetime_days`` days after
  its release, then never again: its id ages out. It has a category (Zipf sizes over
  ``num_categories``), a unit latent vector (its category's centre plus noise), a hidden click
  bias N(0, ``ITEM_BIAS_SD``) and a popularity (lognormal) that fades with age
  (x ``FRESHNESS`` per day).
* **Users.** ``new_users_per_day`` users join every day and stay a geometric number of days
  (mean ``user_lifetime_days``); day 0 starts with the steady-state population. A user has an
  activity (lognormal), a primary device, a hidden click bias and a unit interest vector near a
  favourite category's centre that **drifts**: every day each coordinate moves by
  N(0, drift^2 / interest_dim) and the vector is renormalised (a step of norm ~``drift``).
* **Events** of day d: ``events_per_day`` impressions, users drawn by activity among those alive
  that day, times uniform within the day (each partition sorted by time). The item is drawn,
  with probability ``P_INTEREST``, from the category nearest the user's noisy interest (by
  freshness-weighted popularity within it), else from all live items by the same weights.
* **Click** ~ Bernoulli(sigmoid(``CLICK_BIAS + W_AFFINITY * <interest, item vector>`` + item bias
  + user bias + device x category + a cosine of the hour per category)). The affinity and the
  biases of new ids can only be learned from the days they appear in.

Columns: ``user_id``, ``item_id``, ``category``, ``device``, ``hour``, ``timestamp`` (seconds,
``EPOCH`` + day d's seconds), ``click``.

Determinism: the initial population comes from ``seeded_rng(seed, 0)``, day d's arrivals, drift
and events from ``seeded_rng(seed, 1, d)``; day d depends on days 0..d-1 only through the users'
and items' state, so the days are generated in order (``DailyGenerator.days()``). Memory is the
live population plus one day's events.

Example:
    >>> days = list(DailyGenerator(DailyConfig(days=2, events_per_day=500)).days())
    >>> [table.num_rows for table in days], days[0].column_names[:2]
    ([500, 500], ['user_id', 'item_id'])
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from terarec.data.sampling import seeded_rng
from terarec.data.sources.synthetic import DEVICES, DEVICE_P, EPOCH, SECONDS_PER_DAY

ITEM_BIAS_SD = 0.8
USER_BIAS_SD = 0.5
FRESHNESS = 0.75  # an item's popularity is multiplied by this every day after release
POPULARITY_SIGMA = 1.0
ACTIVITY_SIGMA = 0.8
ITEM_SPREAD = 0.5
INTEREST_NOISE = 0.4
QUERY_NOISE = 0.6
P_INTEREST = 0.6
P_PRIMARY_DEVICE = 0.85
CLICK_BIAS = -2.2
W_AFFINITY = 2.5
DEVICE_CATEGORY_SD = 0.4
HOUR_AMPLITUDE = 0.5

SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("item_id", pa.int64()), ("category", pa.int64()), ("device", pa.string()),
    ("hour", pa.int64()), ("timestamp", pa.int64()), ("click", pa.float32()),
])
SPARSE = ["user_id", "item_id", "category", "device", "hour"]
LABELS = ["click"]
_INITIAL, _DAYS = 0, 1


@dataclass
class DailyConfig:
    """Size and dynamics of the daily synthetic log (see the module docstring).

    Args:
        days: days generated (one partition each).
        events_per_day: impressions per day.
        new_users_per_day: users joining every day.
        new_items_per_day: items released every day.
        user_lifetime_days: mean days a user stays (geometric).
        item_lifetime_days: days an item is shown after its release.
        num_categories: item categories.
        interest_dim: dimension of item vectors and user interests.
        drift: norm of one day's step of a user's interest.
        seed: master seed (non-negative).
    """

    days: int = 30
    events_per_day: int = 100_000
    new_users_per_day: int = 2_000
    new_items_per_day: int = 500
    user_lifetime_days: float = 10.0
    item_lifetime_days: int = 7
    num_categories: int = 32
    interest_dim: int = 16
    drift: float = 0.3
    seed: int = 0

    def validate(self) -> "DailyConfig":
        """Raise ValueError naming the first bad field; return self."""
        for name in ("days", "events_per_day", "new_users_per_day", "new_items_per_day", "item_lifetime_days",
                     "num_categories", "interest_dim"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DailyConfig.{name} must be a positive integer, got {value!r}")
        for name in ("user_lifetime_days", "drift"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"DailyConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.user_lifetime_days < 1:
            raise ValueError(f"DailyConfig.user_lifetime_days must be at least 1, got {self.user_lifetime_days}")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"DailyConfig.seed must be a non-negative integer, got {self.seed!r}")
        return self


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class DailyGenerator:
    """Generates the days in order; see the module docstring for the model.

    Args:
        config: the sizes and dynamics.
    """

    def __init__(self, config: DailyConfig | None = None) -> None:
        self.config = config = (config or DailyConfig()).validate()
        rng = seeded_rng(config.seed, _INITIAL)
        dim, cats = config.interest_dim, config.num_categories
        self.centres = _unit(rng.standard_normal((cats, dim)))
        weights = 1.0 / np.arange(1, cats + 1)
        self.category_p = weights / weights.sum()
        self.device_category = rng.normal(0.0, DEVICE_CATEGORY_SD, (len(DEVICES), cats)).astype(np.float32)
        self.device_category -= self.device_category.mean(axis=0, keepdims=True)
        self.peak_hour = rng.integers(0, 24, cats)
        # the population alive on day 0: items released in the last lifetime, users of a steady state
        lifetime = config.item_lifetime_days
        self._empty_items()
        self._empty_users()
        self._add_items(rng, config.new_items_per_day * lifetime,
                        np.sort(-rng.integers(0, lifetime, config.new_items_per_day * lifetime)))
        self._add_users(rng, round(config.new_users_per_day * config.user_lifetime_days), 0)

    # ---- population

    def _empty_items(self) -> None:
        dim = self.config.interest_dim
        self.item_release = np.zeros(0, np.int64)
        self.item_category = np.zeros(0, np.int64)
        self.item_vectors = np.zeros((0, dim), np.float32)
        self.item_bias = np.zeros(0, np.float32)
        self.item_popularity = np.zeros(0, np.float64)
        self.first_item_id = 0  # ids of items that aged out are dropped from the arrays

    def _empty_users(self) -> None:
        dim = self.config.interest_dim
        self.user_ids = np.zeros(0, np.int64)
        self.user_leave = np.zeros(0, np.int64)
        self.user_interest = np.zeros((0, dim), np.float32)
        self.user_activity = np.zeros(0, np.float64)
        self.user_device = np.zeros(0, np.int64)
        self.user_bias = np.zeros(0, np.float32)
        self.next_user_id = 0

    def _add_items(self, rng: np.random.Generator, count: int, release: np.ndarray) -> None:
        dim = self.config.interest_dim
        category = rng.choice(self.config.num_categories, size=count, p=self.category_p)
        vectors = _unit(self.centres[category] + ITEM_SPREAD * rng.standard_normal((count, dim)) / math.sqrt(dim))
        self.item_release = np.concatenate([self.item_release, release.astype(np.int64)])
        self.item_category = np.concatenate([self.item_category, category])
        self.item_vectors = np.concatenate([self.item_vectors, vectors.astype(np.float32)])
        self.item_bias = np.concatenate([self.item_bias, rng.normal(0, ITEM_BIAS_SD, count).astype(np.float32)])
        self.item_popularity = np.concatenate([self.item_popularity, rng.lognormal(0, POPULARITY_SIGMA, count)])

    def _add_users(self, rng: np.random.Generator, count: int, day: int) -> None:
        dim, config = self.config.interest_dim, self.config
        favourite = rng.choice(config.num_categories, size=count, p=self.category_p)
        interest = _unit(self.centres[favourite] + INTEREST_NOISE * rng.standard_normal((count, dim)) / math.sqrt(dim))
        stay = rng.geometric(1.0 / config.user_lifetime_days, count)
        self.user_ids = np.concatenate([self.user_ids, np.arange(self.next_user_id, self.next_user_id + count)])
        self.next_user_id += count
        self.user_leave = np.concatenate([self.user_leave, day + stay])
        self.user_interest = np.concatenate([self.user_interest, interest.astype(np.float32)])
        self.user_activity = np.concatenate([self.user_activity, rng.lognormal(0, ACTIVITY_SIGMA, count)])
        self.user_device = np.concatenate([self.user_device, rng.choice(len(DEVICES), size=count, p=DEVICE_P)])
        self.user_bias = np.concatenate([self.user_bias, rng.normal(0, USER_BIAS_SD, count).astype(np.float32)])

    def _advance(self, rng: np.random.Generator, day: int) -> None:
        """Day ``day`` begins: users who left and items past their lifetime are dropped, the rest
        of the users' interests drift one day, the day's new users and items arrive."""
        config = self.config
        if day > 0:
            staying = self.user_leave > day
            for name in ("user_ids", "user_leave", "user_interest", "user_activity", "user_device", "user_bias"):
                setattr(self, name, getattr(self, name)[staying])
            step = rng.standard_normal(self.user_interest.shape) * (config.drift / math.sqrt(config.interest_dim))
            self.user_interest = _unit(self.user_interest + step).astype(np.float32)
            self._add_users(rng, config.new_users_per_day, day)
            self._add_items(rng, config.new_items_per_day, np.full(config.new_items_per_day, day))
        live = self.item_release > day - config.item_lifetime_days
        first_live = int(np.argmax(live)) if live.any() else live.size  # releases never decrease along the ids
        for name in ("item_release", "item_category", "item_vectors", "item_bias", "item_popularity"):
            setattr(self, name, getattr(self, name)[first_live:])
        self.first_item_id += first_live

    # ---- events

    def _day(self, rng: np.random.Generator, day: int) -> pa.Table:
        config = self.config
        count = config.events_per_day
        cats = config.num_categories
        user_p = self.user_activity / self.user_activity.sum()
        users = rng.choice(self.user_ids.size, size=count, p=user_p)
        seconds = np.sort(rng.integers(0, SECONDS_PER_DAY, count))
        # items by freshness-weighted popularity, within a category or over all, by inverse CDF
        weight = self.item_popularity * FRESHNESS ** (day - self.item_release)
        by_category = np.argsort(self.item_category, kind="stable")
        cumulative = np.cumsum(weight[by_category])
        bounds = np.searchsorted(self.item_category[by_category], np.arange(cats + 1))
        lower = np.concatenate([[0.0], cumulative])[bounds[:-1]]
        upper = np.concatenate([[0.0], cumulative])[bounds[1:]]
        query = self.user_interest[users] + QUERY_NOISE * rng.standard_normal(
            (count, config.interest_dim)).astype(np.float32) / math.sqrt(config.interest_dim)
        scores = query @ self.centres.T.astype(np.float32)
        scores[:, upper <= lower] = -np.inf  # categories with no live item
        chosen = np.argmax(scores, axis=1)
        by_interest = rng.random(count) < P_INTEREST
        low = np.where(by_interest, lower[chosen], 0.0)
        high = np.where(by_interest, upper[chosen], cumulative[-1])
        position = np.searchsorted(cumulative, low + rng.random(count) * (high - low), side="right")
        items = by_category[np.minimum(position, cumulative.size - 1)]
        category = self.item_category[items]
        primary = rng.random(count) < P_PRIMARY_DEVICE
        device = np.where(primary, self.user_device[users], rng.choice(len(DEVICES), size=count, p=DEVICE_P))
        hour = seconds // 3600
        affinity = np.einsum("ij,ij->i", self.user_interest[users], self.item_vectors[items])
        logit = (CLICK_BIAS + W_AFFINITY * affinity + self.item_bias[items] + self.user_bias[users]
                 + self.device_category[device, category]
                 + HOUR_AMPLITUDE * np.cos(2 * math.pi * (hour - self.peak_hour[category]) / 24))
        click = (rng.random(count) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        return pa.table({
            "user_id": self.user_ids[users], "item_id": items + self.first_item_id, "category": category,
            "device": pa.array(np.asarray(DEVICES, dtype=object)[device], pa.string()), "hour": hour,
            "timestamp": EPOCH + day * SECONDS_PER_DAY + seconds, "click": click,
        }, schema=SCHEMA)

    def days(self) -> Iterator[pa.Table]:
        """Each day's events, day 0 first, sorted by time."""
        for day in range(self.config.days):
            rng = seeded_rng(self.config.seed, _DAYS, day)
            self._advance(rng, day)
            yield self._day(rng, day)


def partition_name(day: int) -> str:
    """The file name of day ``day``: names sort in time order."""
    return f"day-{day:04d}.parquet"


def write_daily(config: DailyConfig, out: str | Path, overwrite: bool = False) -> list[Path]:
    """Write one Parquet partition per day to ``out`` (each written beside itself and renamed into
    place, so a reader following the folder never sees half a day); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("day-*.parquet"))
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds daily partitions ({existing[0].name}, ...); pass overwrite")
    for path in existing:
        path.unlink()
    written = []
    for day, table in enumerate(DailyGenerator(config).days()):
        path = out / partition_name(day)
        staging = out / f".{path.name}.tmp"
        pq.write_table(table, staging, row_group_size=1 << 20)
        staging.replace(path)
        written.append(path)
    return written


__all__ = ["DailyConfig", "DailyGenerator", "LABELS", "SPARSE", "partition_name", "write_daily"]
