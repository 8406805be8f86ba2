"""The synthetic source: determinism, the events schema, and the signal its models rely on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from terarec.data.schema import check_events_table
from terarec.data.sources.synthetic import (
    EPOCH,
    SyntheticConfig,
    SyntheticGenerator,
    item_table,
    load_synthetic,
    user_table,
)

SMALL = SyntheticConfig(
    num_users=300, num_items=400, num_events=6_000, num_categories=12, days=10, users_per_chunk=64, seed=3
)
# the signal tests: ~100k events, few categories so category x hour cells are well filled
SIGNAL = SyntheticConfig(num_users=1_000, num_items=2_000, num_events=100_000, num_categories=16, seed=7)

EXPECTED_COLUMNS = {
    "user_id": pa.int64(),
    "item_id": pa.int64(),
    "timestamp": pa.int64(),
    "hour": pa.int64(),
    "device": pa.string(),
    "category": pa.int64(),
    "price": pa.float32(),
    "age_bucket": pa.int64(),
    "gender": pa.string(),
    "click": pa.float32(),
    "like": pa.float32(),
    "watch_time": pa.float32(),
    "skip": pa.float32(),
}


def _chunks(config: SyntheticConfig) -> list[pa.Table]:
    return list(load_synthetic(config).chunks)


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


@pytest.fixture(scope="module")
def small_chunks() -> list[pa.Table]:
    return _chunks(SMALL)


@pytest.fixture(scope="module")
def signal_events() -> dict[str, np.ndarray]:
    return _columns(pa.concat_tables(_chunks(SIGNAL)))


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_tables(small_chunks):
    again = load_synthetic(SMALL)
    assert pa.concat_tables(small_chunks).equals(pa.concat_tables(list(again.chunks)))
    assert again.side_tables["items"].equals(item_table(SMALL))
    assert again.side_tables["users"].equals(user_table(SMALL))


def test_different_seed_gives_different_tables(small_chunks):
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    assert not pa.concat_tables(small_chunks).equals(pa.concat_tables(_chunks(other)))
    assert not item_table(SMALL).equals(item_table(other))


def test_chunks_can_be_made_alone_in_any_order(small_chunks):
    gen = SyntheticGenerator(SMALL)
    assert gen.num_chunks == len(small_chunks) == 5
    for k in reversed(range(gen.num_chunks)):
        assert gen.chunk(k).equals(small_chunks[k])
    with pytest.raises(IndexError):
        gen.chunk(gen.num_chunks)


def test_chunk_size_changes_neither_catalogue_nor_users_nor_counts(small_chunks):
    one_chunk = SyntheticConfig(**{**SMALL.__dict__, "users_per_chunk": 10_000})
    assert item_table(one_chunk).equals(item_table(SMALL))
    assert user_table(one_chunk).equals(user_table(SMALL))
    (whole,) = _chunks(one_chunk)
    counts_a = np.bincount(pa.concat_tables(small_chunks)["user_id"].to_numpy(), minlength=SMALL.num_users)
    counts_b = np.bincount(whole["user_id"].to_numpy(), minlength=SMALL.num_users)
    np.testing.assert_array_equal(counts_a, counts_b)


# ---------------------------------------------------------------- schema


def test_source_data_fields():
    data = load_synthetic(SMALL)
    assert (data.name, data.source, data.kind, data.sorted_by_user) == ("synthetic", "synthetic", "events", True)
    assert data.sparse == ["user_id", "item_id", "category", "hour", "device", "age_bucket", "gender"]
    assert data.dense == ["price"]
    assert data.labels == ["click", "like", "watch_time"]
    assert set(data.side_tables) == {"items", "users"}
    assert data.side_tables["users"].column_names[:3] == ["user_id", "age_bucket", "gender"]


def test_columns_and_types(small_chunks):
    for chunk in small_chunks:
        assert {f.name: f.type for f in chunk.schema} == EXPECTED_COLUMNS
        assert check_events_table(chunk).equals(chunk)
        for name in chunk.column_names:
            assert chunk[name].null_count == 0, name


def test_sorted_whole_users_per_chunk(small_chunks):
    seen: set[int] = set()
    for k, chunk in enumerate(small_chunks):
        users = chunk["user_id"].to_numpy()
        ts = chunk["timestamp"].to_numpy()
        du, dt = np.diff(users), np.diff(ts)
        assert (du >= 0).all()
        assert (dt[du == 0] >= 0).all()
        ids = set(np.unique(users).tolist())
        assert not ids & seen, "a user appears in two chunks"
        seen |= ids
        assert min(ids) >= k * SMALL.users_per_chunk and max(ids) < (k + 1) * SMALL.users_per_chunk


def test_row_total_matches_the_user_table(small_chunks):
    users = user_table(SMALL)
    assert users["user_id"].to_pylist() == list(range(SMALL.num_users))
    assert sum(c.num_rows for c in small_chunks) == SMALL.num_events == users["num_events"].to_numpy().sum()
    counts = np.bincount(pa.concat_tables(small_chunks)["user_id"].to_numpy(), minlength=SMALL.num_users)
    np.testing.assert_array_equal(counts, users["num_events"].to_numpy())
    assert counts.min() >= 1 and counts.max() > 5 * np.median(counts)  # activity varies widely


def test_values(small_chunks):
    d = _columns(pa.concat_tables(small_chunks))
    ts = d["timestamp"]
    assert ts.min() >= EPOCH and ts.max() < EPOCH + SMALL.days * 86_400
    np.testing.assert_array_equal(d["hour"], (ts // 3600) % 24)
    assert d["item_id"].min() >= 0 and d["item_id"].max() < SMALL.num_items
    assert d["category"].min() >= 0 and d["category"].max() < SMALL.num_categories
    assert set(d["device"]) == {"ios", "android", "web"}
    assert set(d["gender"]) <= {"f", "m", "u"}
    assert d["age_bucket"].min() >= 0 and d["age_bucket"].max() <= 6
    assert (d["price"] > 0).all()
    for label in ("click", "like", "skip"):
        assert set(np.unique(d[label])) <= {0.0, 1.0}
    click = d["click"] == 1
    assert (d["like"][~click] == 0).all(), "like without click"
    assert (d["watch_time"][~click] == 0).all() and (d["watch_time"][click] > 0).all()
    assert (d["skip"][click] == 0).all()
    users = user_table(SMALL)
    np.testing.assert_array_equal(d["age_bucket"], users["age_bucket"].to_numpy()[d["user_id"]])
    np.testing.assert_array_equal(d["gender"], np.asarray(users["gender"].to_pylist())[d["user_id"]])


def test_item_table_matches_events(small_chunks):
    items = item_table(SMALL)
    assert items.column_names == ["item_id", "category", "price"]
    assert items["item_id"].to_pylist() == list(range(SMALL.num_items))
    category, price = items["category"].to_numpy(), items["price"].to_numpy()
    assert set(category.tolist()) == set(range(SMALL.num_categories))  # no empty category
    d = _columns(pa.concat_tables(small_chunks))
    np.testing.assert_array_equal(d["category"], category[d["item_id"]])
    np.testing.assert_array_equal(d["price"], price[d["item_id"]])


def test_tiny_configs():
    # fewer events than users (some users have none), one item per category, one day
    config = SyntheticConfig(num_users=50, num_items=5, num_events=20, num_categories=5, days=1, users_per_chunk=7)
    chunks = _chunks(config)
    assert sum(c.num_rows for c in chunks) == 20
    assert all(c.num_rows > 0 for c in chunks)
    config = SyntheticConfig(num_users=1, num_items=1, num_events=1, num_categories=1, interest_dim=1)
    (chunk,) = _chunks(config)
    assert chunk.num_rows == 1 and chunk["item_id"].to_pylist() == [0]


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_users", 0),
        ("num_items", -1),
        ("num_events", 0),
        ("num_categories", 0),
        ("interest_dim", 0),
        ("days", 0),
        ("users_per_chunk", 0),
        ("num_users", 2.5),
        ("seed", -1),
        ("drift", -0.1),
        ("zipf_exponent", float("nan")),
        ("num_categories", 20_000),
    ],
)
def test_bad_config_names_the_field(field, value):
    config = SyntheticConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        load_synthetic(config)
    with pytest.raises(ValueError, match=field):
        item_table(config)


# ---------------------------------------------------------------- signal


def test_rates(signal_events):
    click, like = signal_events["click"] == 1, signal_events["like"] == 1
    assert 0.10 <= click.mean() <= 0.30
    assert 0.15 <= like[click].mean() <= 0.60
    assert 0.05 <= (signal_events["skip"] == 1).mean() <= 0.40


def _split(n: int) -> np.ndarray:
    return np.random.default_rng(0).random(n) < 0.5


def test_item_popularity_predicts_clicks(signal_events):
    y, item = signal_events["click"], signal_events["item_id"]
    train = _split(len(y))
    clicks = np.bincount(item[train], weights=y[train], minlength=SIGNAL.num_items)
    assert roc_auc_score(y[~train], clicks[item[~train]]) > 0.55


def test_category_hour_cross_is_real(signal_events):
    y, c, h = signal_events["click"], signal_events["category"], signal_events["hour"]
    train = _split(len(y))
    aucs = []
    for x in (np.stack([c, h], 1), np.stack([c, h, c * 24 + h], 1)):
        encoder = OneHotEncoder(handle_unknown="ignore").fit(x[train])
        model = LogisticRegression(max_iter=300).fit(encoder.transform(x[train]), y[train])
        aucs.append(roc_auc_score(y[~train], model.predict_proba(encoder.transform(x[~train]))[:, 1]))
    first_order, crossed = aucs
    assert crossed > first_order + 0.02, aucs


def test_device_price_cross(signal_events):
    y, device = signal_events["click"], signal_events["device"]
    price = signal_events["price"]
    cheap, dear = price <= np.quantile(price, 0.25), price >= np.quantile(price, 0.75)
    ios, android = device == "ios", device == "android"
    assert y[ios & dear].mean() > y[android & dear].mean() + 0.05
    assert y[android & cheap].mean() > y[ios & cheap].mean() + 0.03


def _click_history(users: np.ndarray, categories: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: category among the user's last 3 clicked ones; clicked earlier but not in the last 3."""
    last3 = np.zeros(len(users), dtype=bool)
    older = np.zeros(len(users), dtype=bool)
    previous_user, clicked = -1, []
    for i, (user, category, click) in enumerate(zip(users.tolist(), categories.tolist(), clicks.tolist())):
        if user != previous_user:
            previous_user, clicked = user, []
        last3[i] = category in clicked[-3:]
        older[i] = not last3[i] and category in clicked
        if click:
            clicked.append(category)
    return last3, older


def test_history_effect(signal_events):
    y, users, categories = signal_events["click"], signal_events["user_id"], signal_events["category"]
    last3, older = _click_history(users, categories, y == 1)
    assert 0.2 < last3.mean() < 0.9
    assert y[last3].mean() > 2 * y[~last3].mean()
    # not just affinity (users click categories they like anyway): for the same (user, category),
    # the click rate is higher while the category is among the last 3 clicked than when it is older
    rows = last3 | older
    pair = np.unique(users[rows] * SIGNAL.num_categories + categories[rows], return_inverse=True)[1]
    recent, label = last3[rows], y[rows]
    n1, n0 = np.bincount(pair, weights=recent), np.bincount(pair, weights=~recent)
    ctr1 = np.bincount(pair, weights=label * recent) / np.maximum(n1, 1)
    ctr0 = np.bincount(pair, weights=label * ~recent) / np.maximum(n0, 1)
    both = (n1 > 0) & (n0 > 0)
    assert both.sum() > 200
    assert np.average(ctr1[both] - ctr0[both], weights=np.minimum(n1, n0)[both]) > 0.03


def test_next_click_stays_in_category(signal_events):
    clicked = signal_events["click"] == 1
    users, categories = signal_events["user_id"][clicked], signal_events["category"][clicked]
    same_user = users[1:] == users[:-1]
    repeat_rate = (categories[1:] == categories[:-1])[same_user].mean()
    share = np.bincount(categories) / len(categories)
    assert repeat_rate > 3 * (share**2).sum()
    assert repeat_rate > 0.5


def test_users_do_not_click_an_item_twice(signal_events):
    users, clicked = signal_events["user_id"], signal_events["click"] == 1
    pair = users * SIGNAL.num_items + signal_events["item_id"]  # rows are sorted by (user, time)
    # next-item targets (each user's k-th click, k >= 2) are never among the user's earlier clicks,
    # so full-catalogue ranking with the history excluded is not degenerate (63% when clicks repeated)
    click_pair, click_user = pair[clicked], users[clicked]
    earlier = np.ones(len(click_pair), dtype=bool)
    earlier[np.unique(click_pair, return_index=True)[1]] = False
    target = np.r_[False, click_user[1:] == click_user[:-1]]
    assert target.sum() > 10_000
    assert earlier[target].mean() < 0.01
    # an impression of an item the user clicked before (when its redraws were all clicked too)
    # is rare and never a click
    _, pair_id = np.unique(pair, return_inverse=True)
    first_click = np.full(pair_id.max() + 1, len(pair))
    np.minimum.at(first_click, pair_id[clicked], np.flatnonzero(clicked))
    after_click = np.arange(len(pair)) > first_click[pair_id]
    assert after_click.mean() < 0.03
    assert not clicked[after_click].any()


def test_like_is_a_different_task(signal_events):
    clicked = signal_events["click"] == 1
    like = signal_events["like"][clicked]
    # like given click depends on affinity-related structure: watch time (also affinity-driven) predicts it
    assert roc_auc_score(like, signal_events["watch_time"][clicked]) > 0.55
    assert 0 < like.mean() < 1
