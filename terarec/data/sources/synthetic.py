"""The built-in synthetic data set: an ``events`` table with known, learnable structure.

It is the project's default data set: tiny configs make test fixtures, large ones (10M+
events) benchmark the training stack. The table is produced in chunks of whole users, each
chunk sorted by (user_id, timestamp), so memory is O(chunk) whatever the total size.

Generative story (benchmarks and tests rely on it; the constants are module-level below)
-------------------------------------------------------------------------------------------

Catalogue (``item_table``), item ids ``0 .. num_items-1`` (0-based):

* categories have Zipf sizes (weight ``1/rank``); every category holds at least one item.
  Item ids are shuffled, so an id says nothing about its category.
* each category has a unit centre in an ``interest_dim``-dimensional latent space; an
  item's latent vector is its category centre plus Gaussian noise (``ITEM_SPREAD``),
  normalised to unit length.
* item popularity is Zipf (``zipf_exponent``) over a random ranking of the items.
* price is lognormal with a per-category log-mean (some categories are expensive).
* each item has a hidden click bias: ``W_POPULARITY`` x (0.5 - log(popularity rank) /
  log(num_items)), from +1.8 for the top item to -1.8 for the last, plus N(0, 0.3) noise
  (popular items are clicked more); and a hidden ``quality`` used by like and watch time.

Users (``user_table``), user ids ``0 .. num_users-1``:

* ``age_bucket`` (0..6), ``gender`` (``f``/``m``/``u``), and an activity level (lognormal,
  sigma ``ACTIVITY_SIGMA``, capped at ``ACTIVITY_CAP`` x the mean). Event counts are a
  multinomial split of ``num_events`` by activity (each user gets >= 1 event when
  ``num_events >= num_users``), so the total is exactly ``num_events`` (column
  ``num_events`` of the user table).
* a latent interest: unit vector near one or two favourite categories (drawn by category
  size), shifted a little by age and gender. It drifts as a Brownian random walk: between two
  events ``dt`` days apart each coordinate moves by N(0, drift^2 * dt / interest_dim), i.e. a
  step of norm ~``drift`` per day.
* a primary device (``ios`` 40%, ``android`` 45%, ``web`` 15%), used for 85% of its events.

Events (one row per impression), per user in time order:

* timestamps: ``EPOCH`` (2023-11-15 00:00 UTC) + seconds within ``days`` days; the times of a
  user's events are uniform order statistics warped by a diurnal profile (quiet at night,
  busy in the evening). ``hour = (timestamp // 3600) % 24`` (UTC).
* the item: with probability ``P_PERSIST`` (0.5), once the user has clicked anything, it is
  drawn from the category of the user's previous *clicked* item (by popularity within that
  category). Otherwise with probability ``P_POPULAR`` it is drawn by global Zipf popularity,
  else by current interest: the category maximising ``(interest + noise) . centre`` (a random
  utility choice, noise ``QUERY_NOISE``), then an item of that category by popularity.
* no re-consumption: a user never clicks the same item twice (as in movie or product logs, so
  a next-item target is never in the user's click history). An item the user already clicked
  is redrawn from the same source (its category, or the whole catalogue for a popularity
  draw): once more by popularity, then up to ``REDRAWS - 1`` times uniformly; the first draw
  that is new to the user is shown. When all of them were clicked (a user who has exhausted
  a small category), the first draw stays as an impression with click probability 0, so it is
  a neutral or skipped row: about 1% of rows when users have ~100 events and 2,000 items,
  far fewer in larger catalogues. The memory of clicked items is exact (every click of the
  chunk, kept in a hash set of (user, item) keys).
* click ~ Bernoulli(sigmoid(logit)) with
  ``logit = CLICK_BIAS + W_AFFINITY * <interest(t), item vector> + item click bias``
  ``+ category x hour`` (each category has a peak hour, amplitude 0.6-1.2: a cosine over the day)
  ``+ device x price quartile`` (expensive items click on ios, cheap ones on android/web)
  ``+ age_bucket x category`` (N(0, 0.5) table, centred per category)
  ``+ W_HISTORY if the item's category is among the user's last 3 clicked categories``,
  and 0 (no click) for an item the user already clicked (see above).
  The cross terms are (near) centred over each factor, so first-order (one-hot) models
  cannot represent them. Overall CTR is about 17-21% (it depends a little on the config; it
  drops when users have more events than the catalogue has items they have not clicked).
* like (only when clicked) ~ Bernoulli(sigmoid(LIKE_BIAS + W_LIKE_AFFINITY * affinity +
  0.6 * quality + age x category + gender x category)), its own tables unrelated to the click
  crosses: about a third of clicks are liked.
* watch_time (seconds, only when clicked) ~ lognormal(mean log WATCH_LOG_MEAN + 1.2 *
  affinity + 0.3 * quality, sigma 0.5): grows with affinity.
* skip (explicit negative, only when not clicked): the user dismissed the item quickly,
  ~ Bernoulli(sigmoid(SKIP_BIAS - 3 * affinity)); a not-clicked, not-skipped row is a neutral
  impression.

Determinism: the catalogue comes from ``SeedSequence(seed).spawn(3)[0]``, the user table
from ``[1]`` and chunk ``k`` (users ``k*users_per_chunk ..``) from ``[2].spawn(k+1)[k]`` i.e.
``SeedSequence(seed, spawn_key=(2, k))`` (its redraws from ``spawn_key=(2, k, 0)``), so any
chunk can be made alone, in any order, with the same result. The catalogue, user attributes
and per-user event counts do not depend on ``users_per_chunk``; the event draws do (a user's
events depend on the chunk it falls in).

Generation is vectorised over the users of a chunk with one loop over the event index (users
sorted by activity, so the active ones are a prefix), popularity draws use alias tables (O(1);
``terarec.data.sampling.alias_tables``), the clicked (user, item) pairs live in a bucketed hash
set (``terarec.data.sampling.KeySet``: one gather and compare per lookup, no probing loop), and
the Gaussian noise of the interest walk and query comes from a per-chunk pool of
``NOISE_POOL`` vectors (a random row per event): about 1-2M events per second on one core.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from terarec.data.sampling import KeySet, alias_tables, seeded_rng
from terarec.data.sources.base import SourceData

EPOCH = 1_700_006_400  # 2023-11-15 00:00:00 UTC: midnight, so hour = (timestamp // 3600) % 24
SECONDS_PER_DAY = 86_400

DEVICES = ("ios", "android", "web")
DEVICE_P = (0.40, 0.45, 0.15)
P_PRIMARY_DEVICE = 0.85
GENDERS = ("f", "m", "u")
GENDER_P = (0.48, 0.47, 0.05)
NUM_AGE_BUCKETS = 7
AGE_P = (0.06, 0.20, 0.24, 0.20, 0.14, 0.10, 0.06)
NUM_PRICE_BUCKETS = 4
# relative activity per hour of day (UTC)
HOUR_ACTIVITY = (
    0.45, 0.30, 0.20, 0.15, 0.15, 0.20, 0.35, 0.60, 0.80, 0.85, 0.85, 0.90,
    1.00, 0.95, 0.90, 0.90, 0.95, 1.05, 1.20, 1.40, 1.50, 1.45, 1.20, 0.80,
)  # fmt: skip

ITEM_SPREAD = 0.6  # item vector = centre + ITEM_SPREAD * N(0, I/dim), normalised
INTEREST_NOISE = 0.5  # initial interest = centre_a + 0.6 centre_b + INTEREST_NOISE * N(0, I/dim)
AGE_SHIFT = 0.35
GENDER_SHIFT = 0.25
ACTIVITY_SIGMA = 1.0
ACTIVITY_CAP = 25.0
P_PERSIST = 0.5
P_POPULAR = 0.35
QUERY_NOISE = 0.8
# CLICK_BIAS, W_POPULARITY and W_HISTORY are set for a log without repeat clicks (repeats used
# to carry much of the popularity and history signal, and of the clicks)
CLICK_BIAS = -3.7
W_AFFINITY = 3.0
W_POPULARITY = 3.6
ITEM_BIAS_NOISE = 0.3
W_HISTORY = 1.3
CAT_HOUR_AMPLITUDE = (0.6, 1.2)
AGE_CAT_SD = 0.5
# device x price quartile (cheapest .. most expensive); columns sum to ~0 over devices
DEVICE_PRICE = (
    (-0.35, -0.10, 0.15, 0.50),  # ios
    (0.25, 0.10, -0.10, -0.35),  # android
    (0.10, 0.00, -0.05, -0.15),  # web
)
LIKE_BIAS = -2.0
W_LIKE_AFFINITY = 2.0
W_LIKE_QUALITY = 0.6
LIKE_CROSS_SD = 0.6
WATCH_LOG_MEAN = 3.0
WATCH_SIGMA = 0.5
SKIP_BIAS = -0.5
NOISE_POOL = 1 << 16
# an item the user already clicked is redrawn from the same category (or the catalogue): once
# by popularity, then uniformly, REDRAWS draws in all
REDRAWS = 3
FEW_USERS = 128  # steps with at most this many users look the first draw and redraws up at once

SPARSE = ["user_id", "item_id", "category", "hour", "device", "age_bucket", "gender"]
DENSE = ["price"]
LABELS = ["click", "like", "watch_time"]

EVENTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("timestamp", pa.int64()),
        ("hour", pa.int64()),
        ("device", pa.string()),
        ("category", pa.int64()),
        ("price", pa.float32()),
        ("age_bucket", pa.int64()),
        ("gender", pa.string()),
        ("click", pa.float32()),
        ("like", pa.float32()),
        ("watch_time", pa.float32()),
        ("skip", pa.float32()),
    ]
)
ITEMS_SCHEMA = pa.schema([("item_id", pa.int64()), ("category", pa.int64()), ("price", pa.float32())])
USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("age_bucket", pa.int64()),
        ("gender", pa.string()),
        ("num_events", pa.int64()),
    ]
)

_CATALOGUE, _USERS, _CHUNKS = 0, 1, 2


@dataclass
class SyntheticConfig:
    """Size and shape of the synthetic data set (see the module docstring for the model).

    Args:
        num_users: users (ids 0..num_users-1).
        num_items: items (ids 0..num_items-1).
        num_events: total events; split over users by activity, so exact (see ``user_table``).
        num_categories: item categories (<= num_items).
        interest_dim: dimension of the latent space of items and user interests.
        zipf_exponent: item popularity exponent (0 = uniform).
        days: time span of the events.
        drift: how far user interests move per day (norm of a one-day random-walk step).
        seed: master seed (non-negative int).
        users_per_chunk: users per generated chunk (a chunk holds their whole histories); peak
            memory is about 300 bytes per event of a chunk, and bigger chunks generate faster.
    """

    num_users: int = 5_000
    num_items: int = 10_000
    num_events: int = 500_000
    num_categories: int = 64
    interest_dim: int = 16
    zipf_exponent: float = 1.1
    days: int = 60
    drift: float = 0.05
    seed: int = 0
    users_per_chunk: int = 20_000

    def validate(self) -> "SyntheticConfig":
        """Raise ValueError naming the first bad field; return self."""
        for name in ("num_users", "num_items", "num_events", "num_categories", "interest_dim", "days",
                     "users_per_chunk"):  # fmt: skip
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"SyntheticConfig.{name} must be a positive integer, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"SyntheticConfig.seed must be a non-negative integer, got {self.seed!r}")
        for name in ("zipf_exponent", "drift"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"SyntheticConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.num_categories > self.num_items:
            raise ValueError(
                f"SyntheticConfig.num_categories ({self.num_categories}) must not exceed "
                f"num_items ({self.num_items}): every category holds at least one item"
            )
        return self


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class _Catalogue:
    """Items, categories and the hidden tables of the click / like model."""

    def __init__(self, config: SyntheticConfig) -> None:
        rng = seeded_rng(config.seed, _CATALOGUE)
        n_items, n_cats, dim = config.num_items, config.num_categories, config.interest_dim

        cat_w = 1.0 / np.arange(1, n_cats + 1)
        self.cat_weight = cat_w / cat_w.sum()
        self.cat_cdf = np.cumsum(self.cat_weight)
        self.cat_cdf[-1] = 1.0
        sizes = 1 + rng.multinomial(n_items - n_cats, self.cat_weight)
        self.category = rng.permutation(np.repeat(np.arange(n_cats, dtype=np.int64), sizes))

        self.centres = _unit(rng.standard_normal((n_cats, dim))).astype(np.float32)
        noise = rng.standard_normal((n_items, dim)) * (ITEM_SPREAD / math.sqrt(dim))
        self.vectors = _unit(self.centres[self.category] + noise).astype(np.float32)

        ranks = rng.permutation(n_items) + 1.0
        pop = ranks ** (-float(config.zipf_exponent))
        self.popularity = pop / pop.sum()

        log_price_mean = rng.normal(3.0, 0.7, n_cats)
        price = np.exp(log_price_mean[self.category] + rng.normal(0.0, 0.4, n_items))
        self.price = np.maximum(np.round(price, 2), 0.01).astype(np.float32)
        edges = np.quantile(self.price, [0.25, 0.5, 0.75])
        self.price_bucket = np.searchsorted(edges, self.price, side="right").astype(np.int64)

        # popularity part of the click bias: linear in log rank, from +W/2 (top item) to -W/2
        pop_score = 0.5 - np.log(ranks) / max(math.log(n_items), 1.0)
        self.click_bias = (W_POPULARITY * pop_score + ITEM_BIAS_NOISE * rng.standard_normal(n_items)).astype(
            np.float32
        )
        self.quality = rng.standard_normal(n_items).astype(np.float32)

        # O(1) popularity draws: alias tables, global and within each category (items sorted by it)
        self.pop_prob, self.pop_alias = alias_tables(self.popularity, np.array([0, n_items]))
        self.by_cat = np.argsort(self.category, kind="stable")
        self.cat_start = np.concatenate([[0], np.cumsum(sizes)])
        self.cat_size = sizes.astype(np.float64)
        self.cat_prob, self.cat_alias = alias_tables(self.popularity[self.by_cat], self.cat_start)
        self.cat_alias = self.by_cat[self.cat_alias]  # alias slots -> item ids
        # one more "category", number n_cats: the whole catalogue by global popularity (its slots
        # are n_items + item id), so one call draws a mix of in-category and popular items
        self.cat_start = np.append(self.cat_start, 2 * n_items)
        self.cat_size = np.append(self.cat_size, float(n_items))
        self.by_cat = np.concatenate([self.by_cat, np.arange(n_items)])
        self.cat_prob = np.concatenate([self.cat_prob, self.pop_prob])
        self.cat_alias = np.concatenate([self.cat_alias, self.pop_alias])

        # hidden cross tables (flattened for fast lookups)
        peak = rng.integers(0, 24, n_cats)
        amp = rng.uniform(*CAT_HOUR_AMPLITUDE, n_cats)
        hours = np.arange(24)
        self.cat_hour = (amp[:, None] * np.cos(2 * np.pi * (hours[None, :] - peak[:, None]) / 24)).astype(
            np.float32
        )  # [category, hour]
        age_cat = rng.normal(0.0, AGE_CAT_SD, (NUM_AGE_BUCKETS, n_cats))
        self.age_cat = (age_cat - age_cat.mean(axis=0, keepdims=True)).astype(np.float32)  # [age, category]
        self.device_price = np.asarray(DEVICE_PRICE, dtype=np.float32)  # [device, price bucket]
        self.like_age_cat = rng.normal(0.0, LIKE_CROSS_SD, (NUM_AGE_BUCKETS, n_cats)).astype(np.float32)
        self.like_gender_cat = rng.normal(0.0, LIKE_CROSS_SD / 2, (len(GENDERS), n_cats)).astype(np.float32)
        self.like_gender_cat[GENDERS.index("u")] = 0.0

        # demographic shifts of the interest vector: age interpolates between two directions
        young, old = _unit(rng.standard_normal((2, dim)))
        t = np.linspace(0.0, 1.0, NUM_AGE_BUCKETS)[:, None]
        self.age_shift = (AGE_SHIFT * ((1 - t) * young + t * old)).astype(np.float32)
        self.gender_shift = (GENDER_SHIFT * _unit(rng.standard_normal((len(GENDERS), dim)))).astype(np.float32)
        self.gender_shift[GENDERS.index("u")] = 0.0

    def table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [pa.array(np.arange(len(self.category), dtype=np.int64)), pa.array(self.category),
             pa.array(self.price)],  # fmt: skip
            schema=ITEMS_SCHEMA,
        )

    def draw_in_category(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """An item of each given category, by popularity within it (u uniform in [0, 1), and
        category ``num_categories`` stands for the whole catalogue); the arrays broadcast."""
        x = u * self.cat_size[category]
        slot = x.astype(np.int64)
        x -= slot
        slot += self.cat_start[category]
        return np.where(x < self.cat_prob[slot], self.by_cat[slot], self.cat_alias[slot])

    def draw_uniform_in_category(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Like ``draw_in_category``, but uniformly within the category."""
        return self.by_cat[self.cat_start[category] + (u * self.cat_size[category]).astype(np.int64)]

    def draw_popular(self, u: np.ndarray) -> np.ndarray:
        """Items by global popularity (u uniform in [0, 1))."""
        x = u * len(self.pop_prob)
        slot = x.astype(np.int64)
        x -= slot
        return np.where(x < self.pop_prob[slot], slot, self.pop_alias[slot])


class _Users:
    """Per-user attributes that do not depend on chunking: demographics and event counts."""

    def __init__(self, config: SyntheticConfig) -> None:
        rng = seeded_rng(config.seed, _USERS)
        n = config.num_users
        self.age = rng.choice(NUM_AGE_BUCKETS, n, p=AGE_P).astype(np.int64)
        self.gender = rng.choice(len(GENDERS), n, p=GENDER_P).astype(np.int64)
        w = rng.lognormal(0.0, ACTIVITY_SIGMA, n)
        w = np.minimum(w, ACTIVITY_CAP * w.mean())
        p = w / w.sum()
        if config.num_events >= n:
            self.counts = 1 + rng.multinomial(config.num_events - n, p).astype(np.int64)
        else:
            self.counts = rng.multinomial(config.num_events, p).astype(np.int64)

    def table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [pa.array(np.arange(len(self.age), dtype=np.int64)), pa.array(self.age),
             _strings(GENDERS, self.gender), pa.array(self.counts)],  # fmt: skip
            schema=USERS_SCHEMA,
        )


def _strings(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """A string column from codes into a small vocabulary (decoding a dictionary array is fast)."""
    indices = pa.array(codes.astype(np.int32, copy=False))
    return pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string())).cast(pa.string())


def _first_new(clicked: KeySet, user_key: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``draws`` (tries x users): the first item not clicked by the user (whose
    clicked items are ``clicked`` keys ``user_key + item``), else the first item; and whether
    all the column's items were clicked."""
    repeat = clicked.contains(user_key + draws).reshape(draws.shape)
    return draws[repeat.argmin(axis=0), np.arange(draws.shape[1])], repeat.all(axis=0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SyntheticGenerator:
    """Makes the synthetic tables; ``chunk(k)`` is independent of any other chunk.

    Iterating yields the non-empty chunks in order (a chunk is empty only when all its users
    drew no events, possible when num_events < num_users).

    Example:
        >>> gen = SyntheticGenerator(SyntheticConfig(num_users=10, num_items=50, num_events=200,
        ...                                          num_categories=5))
        >>> sum(t.num_rows for t in gen) == gen.num_events == 200
        True
    """

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = (config or SyntheticConfig()).validate()
        self.catalogue = _Catalogue(self.config)
        self.users = _Users(self.config)
        self._hour_grid = self._diurnal_grid()

    @property
    def num_chunks(self) -> int:
        return -(-self.config.num_users // self.config.users_per_chunk)

    @property
    def num_events(self) -> int:
        return int(self.users.counts.sum())

    def item_table(self) -> pa.Table:
        return self.catalogue.table()

    def user_table(self) -> pa.Table:
        return self.users.table()

    def __iter__(self) -> Iterator[pa.Table]:
        for k in range(self.num_chunks):
            lo, hi = self._user_range(k)
            if self.users.counts[lo:hi].sum() > 0:
                yield self.chunk(k)

    def _user_range(self, k: int) -> tuple[int, int]:
        upc = self.config.users_per_chunk
        return k * upc, min(self.config.num_users, (k + 1) * upc)

    @staticmethod
    def _diurnal_grid() -> tuple[np.ndarray, np.ndarray]:
        """(cumulative share of a day's activity, seconds into the day) at each hour boundary."""
        cum = np.concatenate([[0.0], np.cumsum(HOUR_ACTIVITY)])
        return cum / cum[-1], np.arange(25, dtype=np.float64) * 3600.0

    def chunk(self, k: int) -> pa.Table:
        """Events of users ``k*users_per_chunk ..`` (whole histories), sorted by (user_id, timestamp)."""
        if not 0 <= k < self.num_chunks:
            raise IndexError(f"chunk {k} out of range (0..{self.num_chunks - 1})")
        cfg, cat = self.config, self.catalogue
        rng = seeded_rng(cfg.seed, _CHUNKS, k)
        lo, hi = self._user_range(k)
        n_users, dim, n_items, n_cats = hi - lo, cfg.interest_dim, cfg.num_items, cfg.num_categories
        counts = self.users.counts[lo:hi]
        age = self.users.age[lo:hi]
        gender = self.users.gender[lo:hi]
        n_events = int(counts.sum())

        # ---- per-user latent state
        primary = np.searchsorted(np.cumsum(DEVICE_P), rng.random(n_users) * sum(DEVICE_P), side="right")
        primary = np.minimum(primary, len(DEVICES) - 1)
        fav = np.minimum(np.searchsorted(cat.cat_cdf, rng.random((n_users, 2)), side="right"), n_cats - 1)
        z = (
            cat.centres[fav[:, 0]]
            + 0.6 * cat.centres[fav[:, 1]]
            + (INTEREST_NOISE / math.sqrt(dim)) * rng.standard_normal((n_users, dim), dtype=np.float32)
        )
        z = _unit(_unit(z) + cat.age_shift[age] + cat.gender_shift[gender]).astype(np.float32)

        # ---- timestamps, user-major (the output order): uniform order statistics via spacings
        user_of = np.repeat(np.arange(n_users), counts)
        ustart = np.cumsum(counts) - counts
        spacing = np.cumsum(rng.standard_exponential(n_events + n_users))
        seg_end = ustart + counts + np.arange(n_users)  # index of each user's last (extra) spacing
        base = np.where(seg_end - counts > 0, spacing[np.maximum(seg_end - counts - 1, 0)], 0.0)
        total = spacing[seg_end] - base
        frac = (spacing[np.arange(n_events) + user_of] - base[user_of]) / total[user_of]
        # diurnal warp: every day has the same mass; within a day, interpolate the hourly profile
        day_pos = frac * cfg.days
        day = np.floor(day_pos)
        seconds = np.floor(day * SECONDS_PER_DAY + np.interp(day_pos - day, *self._hour_grid))
        seconds = np.minimum(seconds, cfg.days * SECONDS_PER_DAY - 1).astype(np.int64)
        hour = (seconds // 3600) % 24
        dt_days = np.diff(seconds, prepend=0).astype(np.float64)
        dt_days[ustart[counts > 0]] = seconds[ustart[counts > 0]]  # first event: walk from t=0
        dt_days /= SECONDS_PER_DAY
        device = np.where(
            rng.random(n_events) < P_PRIMARY_DEVICE, primary[user_of], rng.integers(0, len(DEVICES), n_events)
        )

        # ---- step-major layout: users sorted by activity (descending), so at step s (their s-th
        # event) the active users are a prefix; events of step s are [off[s], off[s+1])
        order = np.argsort(-counts, kind="stable")
        n_steps = int(counts.max()) if n_users else 0
        n_at = n_users - np.cumsum(np.bincount(counts, minlength=n_steps + 1))[:n_steps]
        off = np.concatenate([[0], np.cumsum(n_at)])
        step = np.repeat(np.arange(n_steps), n_at)
        final = ustart[order[np.arange(n_events) - off[step]]] + step  # step-major -> user-major row
        del step

        hour_sm = hour[final]
        dev_price_sm = device[final] * NUM_PRICE_BUCKETS
        drift_sd = (cfg.drift * np.sqrt(dt_days[final] / dim)).astype(np.float32)
        u_persist = rng.random(n_events, dtype=np.float32) < P_PERSIST
        use_pop = rng.random(n_events, dtype=np.float32) < P_POPULAR
        u_item = rng.random(n_events)
        pop_item = cat.draw_popular(rng.random(n_events))
        u_click = rng.random(n_events)
        click_threshold = (np.log(u_click) - np.log1p(-u_click) - CLICK_BIAS).astype(np.float32)
        del u_click

        # item-level lookups combined for the loop
        cat_of_item = cat.category
        cat_hour = cat.cat_hour.ravel()
        age_cat = cat.age_cat.ravel()
        device_price = cat.device_price.ravel()
        price_bucket = cat.price_bucket
        click_bias = cat.click_bias
        vectors = cat.vectors
        centres_t = np.ascontiguousarray(cat.centres.T)

        w_affinity, w_history = np.float32(W_AFFINITY), np.float32(W_HISTORY)
        state = z[order]
        age_cat_base = age[order] * n_cats
        last = np.full((3, n_users), -1, dtype=np.int64)  # last 3 clicked categories, newest first
        # every (user, item) clicked so far in the chunk, as keys user * n_items + item (users in
        # step-major order: the active users of a step are 0..n-1); exact, however long the history
        user_key = np.arange(n_users, dtype=np.int64) * n_items
        clicked = KeySet(int(n_users * n_items - 1).bit_length(), n_events // 4)
        redraw_rng = seeded_rng(cfg.seed, _CHUNKS, k, 0)
        item_sm = np.empty(n_events, dtype=np.int64)
        aff_sm = np.empty(n_events, dtype=np.float32)
        click_sm = np.empty(n_events, dtype=bool)
        # Gaussian noise for the interest walk (first half) and the interest query (second half),
        # one row per event from a per-chunk pool: random rows of a pool are much cheaper than
        # fresh normals, and a row is reused only ~n_events / NOISE_POOL times among all users
        pool = rng.standard_normal((min(NOISE_POOL, max(n_events, 1)), 2 * dim), dtype=np.float32)
        pool[:, dim:] *= np.float32(QUERY_NOISE / math.sqrt(dim))
        noise_row = rng.integers(0, len(pool), n_events)

        for s in range(n_steps):
            n, a, b = int(n_at[s]), int(off[s]), int(off[s + 1])
            zs = state[:n]
            noise = np.take(pool, noise_row[a:b], axis=0)
            zs += noise[:, :dim] * drift_sd[a:b, None]
            query = noise[:, dim:]
            query += zs
            interest_cat = (query @ centres_t).argmax(axis=1)
            l0, l1, l2 = last[0, :n], last[1, :n], last[2, :n]
            persist = u_persist[a:b] & (l0 >= 0)
            group = np.where(persist, l0, interest_cat)
            item = cat.draw_in_category(group, u_item[a:b])
            pick_pop = use_pop[a:b] & ~persist
            item[pick_pop] = pop_item[a:b][pick_pop]
            group[pick_pop] = n_cats  # the "category" of global popularity draws
            # an item the user already clicked is redrawn from the same group: once by popularity,
            # then uniformly; the first draw new to the user is shown, else the first draw stays
            if n > FEW_USERS:  # look the first draws up, then redraw the clicked ones in 2 stages
                again = clicked.contains(user_key[:n] + item).nonzero()[0]
                for draw, tries in ((cat.draw_in_category, 1), (cat.draw_uniform_in_category, REDRAWS - 1)):
                    if not len(again):
                        break
                    u = redraw_rng.random((tries, len(again)))
                    pick, stale = _first_new(clicked, user_key[again], draw(group[again], u))
                    item[again] = np.where(stale, item[again], pick)
                    again = again[stale]
            else:  # few users: all their draws in one lookup (fewer numpy calls)
                u = redraw_rng.random((REDRAWS, n))
                first = (item[None], cat.draw_in_category(group, u[:1]))
                draws = np.concatenate([*first, cat.draw_uniform_in_category(group, u[1:])])
                item, stale = _first_new(clicked, user_key[:n], draws)
                again = stale.nonzero()[0]
            c = cat_of_item[item]
            aff = np.einsum("ij,ij->i", zs, np.take(vectors, item, axis=0))
            logit = w_affinity * aff
            logit += click_bias[item]
            logit += cat_hour[c * 24 + hour_sm[a:b]]
            logit += age_cat[age_cat_base[:n] + c]
            logit += device_price[dev_price_sm[a:b] + price_bucket[item]]
            logit += w_history * ((c == l0) | (c == l1) | (c == l2))
            click = logit > click_threshold[a:b]
            click[again] = False  # still an item the user clicked: an impression, never a click
            now = click.nonzero()[0]
            clicked.add(user_key[now] + item[now])
            np.copyto(l2, l1, where=click)
            np.copyto(l1, l0, where=click)
            np.copyto(l0, c, where=click)
            item_sm[a:b] = item
            aff_sm[a:b] = aff
            click_sm[a:b] = click

        # ---- back to user-major order, then the per-click targets
        item = np.empty(n_events, dtype=np.int64)
        item[final] = item_sm
        aff = np.empty(n_events, dtype=np.float32)
        aff[final] = aff_sm
        click = np.empty(n_events, dtype=bool)
        click[final] = click_sm
        del item_sm, aff_sm, click_sm, final
        category = cat_of_item[item]
        age_ev = age[user_of]
        gender_ev = gender[user_of]
        quality = cat.quality[item]
        like_logit = (
            LIKE_BIAS
            + W_LIKE_AFFINITY * aff
            + W_LIKE_QUALITY * quality
            + cat.like_age_cat[age_ev, category]
            + cat.like_gender_cat[gender_ev, category]
        )
        like = click & (rng.random(n_events, dtype=np.float32) < _sigmoid(like_logit))
        watch = np.exp(
            WATCH_LOG_MEAN + 1.2 * aff + 0.3 * quality + WATCH_SIGMA * rng.standard_normal(n_events, np.float32)
        )
        watch = np.where(click, np.round(watch, 1), 0.0).astype(np.float32)
        skip = ~click & (rng.random(n_events, dtype=np.float32) < _sigmoid(SKIP_BIAS - 3.0 * aff))

        columns = [
            pa.array(user_of.astype(np.int64) + lo),
            pa.array(item),
            pa.array(seconds + EPOCH),
            pa.array(hour),
            _strings(DEVICES, device),
            pa.array(category),
            pa.array(cat.price[item]),
            pa.array(age_ev),
            _strings(GENDERS, gender_ev),
            pa.array(click.astype(np.float32)),
            pa.array(like.astype(np.float32)),
            pa.array(watch),
            pa.array(skip.astype(np.float32)),
        ]
        return pa.Table.from_arrays(columns, schema=EVENTS_SCHEMA)


def item_table(config: SyntheticConfig | None = None) -> pa.Table:
    """The catalogue: item_id (0-based), category, price."""
    return _Catalogue((config or SyntheticConfig()).validate()).table()


def user_table(config: SyntheticConfig | None = None) -> pa.Table:
    """The users: user_id (0-based), age_bucket, gender, num_events (their row count in the events)."""
    return _Users((config or SyntheticConfig()).validate()).table()


def load_synthetic(config: SyntheticConfig | None = None) -> SourceData:
    """The synthetic events table as a SourceData; chunks are generated lazily, one at a time.

    The config is validated here (ValueError naming the field); the catalogue and the user
    table are built eagerly (they are the side tables), the events only as chunks are consumed.
    """
    gen = SyntheticGenerator(config)
    return SourceData(
        name="synthetic",
        source="synthetic",
        kind="events",
        chunks=iter(gen),
        sparse=list(SPARSE),
        dense=list(DENSE),
        labels=list(LABELS),
        sorted_by_user=True,
        side_tables={"items": gen.item_table(), "users": gen.user_table()},
    )
