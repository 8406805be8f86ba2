"""Tests for terarec.embedding.vocabulary.ManagedVocabulary: a bounded 64-bit id -> row map, admission, eviction."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.embedding.collection import PooledEmbeddings, remap
from terarec.embedding.exact_vocabulary import DEFAULT_ROW
from terarec.embedding.vocabulary import TOMBSTONE, ManagedVocabulary
from terarec.features.hashing import hash_ints


def raw_ids(values) -> torch.Tensor:
    """Raw-looking 64-bit ids for small integers."""
    return torch.from_numpy(hash_ints(np.asarray(values, dtype=np.int64), "item_id"))


def check_exact(vocab: ManagedVocabulary, ids: torch.Tensor, rows: torch.Tensor) -> None:
    """Every non-default row belongs to the id looked up; distinct ids never share a row."""
    given = rows != DEFAULT_ROW
    assert torch.equal(vocab.row_ids[rows[given]], ids[given])
    pairs = torch.unique(torch.stack([ids[given], rows[given]]), dim=1)
    assert torch.unique(pairs[1]).numel() == pairs.shape[1] == torch.unique(pairs[0]).numel()


def test_admitted_ids_get_stable_distinct_rows() -> None:
    vocab = ManagedVocabulary(capacity=100)
    ids = raw_ids(range(50))
    rows = vocab(ids)
    assert vocab.num_rows == 101
    assert sorted(rows.tolist()) == list(range(1, 51))  # a fresh vocabulary hands out rows 1, 2, ...
    shuffled = torch.randperm(50)
    assert torch.equal(vocab(ids[shuffled]), rows[shuffled])
    assert torch.equal(vocab(ids.view(5, 10)), rows.view(5, 10))  # any shape
    assert int(vocab.unknown_count) == 0 and int(vocab.admitted_count) == 50
    check_exact(vocab, ids, rows)


def test_not_admitted_ids_go_to_row_zero_and_are_counted() -> None:
    vocab = ManagedVocabulary(capacity=100, min_count=3)
    rows = vocab(raw_ids([1, 2, 3, 1]))
    assert rows.tolist() == [0, 0, 0, 0]
    assert int(vocab.not_admitted_count) == 4 and int(vocab.unknown_count) == 4
    assert int(vocab.admitted_count) == 0 and vocab.last_new_rows.numel() == 0


def test_count_admission_threshold() -> None:
    vocab = ManagedVocabulary(capacity=100, min_count=3)
    a, b = raw_ids([7, 8]).tolist()
    assert vocab(torch.tensor([a])).tolist() == [0]
    assert vocab(torch.tensor([a, b])).tolist() == [0, 0]  # a seen twice, b once
    assert vocab(torch.tensor([a])).tolist() == [1]  # third sighting: admitted in this call
    assert vocab.last_new_rows.tolist() == [1]
    # b reaches 3 inside one batch: every occurrence in it gets the new row.
    assert vocab(torch.tensor([b, a, b])).tolist() == [2, 1, 2]
    assert int(vocab.not_admitted_count) == 3 and int(vocab.admitted_count) == 2


def test_count_admission_many_ids_no_early_admission() -> None:
    # 5,000 ids seen once each in a sketch sized for the capacity: none may be admitted early.
    vocab = ManagedVocabulary(capacity=5_000, min_count=2)
    ids = raw_ids(range(5_000))
    assert int((vocab(ids) != 0).sum()) <= 5  # count-min overestimates are rare at this load
    assert bool((vocab(ids) != 0).all())  # the second sighting admits all of them
    check_exact(vocab, ids, vocab(ids))


def test_probability_admission_is_consistent_per_id_and_about_the_share() -> None:
    ids = raw_ids(range(20_000))
    vocab = ManagedVocabulary(capacity=20_000, admit="probability", admit_probability=0.3, seed=1)
    admitted = vocab(ids) != 0
    assert 0.28 < float(admitted.float().mean()) < 0.32
    for _ in range(3):  # the same ids, again and shuffled: admitted exactly as before
        order = torch.randperm(ids.numel())
        assert torch.equal(vocab(ids[order]) != 0, admitted[order])
    # A fresh vocabulary with the same seed admits the same ids; another seed, other ids.
    same = ManagedVocabulary(capacity=20_000, admit="probability", admit_probability=0.3, seed=1)
    other = ManagedVocabulary(capacity=20_000, admit="probability", admit_probability=0.3, seed=2)
    assert torch.equal(same(ids) != 0, admitted)
    assert not torch.equal(other(ids) != 0, admitted)
    assert int(vocab.not_admitted_count) == 4 * int((~admitted).sum())


def test_lfu_evicts_the_least_frequent() -> None:
    vocab = ManagedVocabulary(capacity=4, evict="lfu", evict_fraction=0.25)
    a, b, c, d, e = raw_ids(range(5)).tolist()
    rows = dict(zip([a, b, c, d], vocab(torch.tensor([a, b, c, d])).tolist()))
    vocab(torch.tensor([a, a, a, b, b, d, d, d]))  # c is now the least frequent
    new_row = vocab(torch.tensor([e])).item()
    assert new_row == rows[c] and vocab.last_new_rows.tolist() == [rows[c]]
    assert int(vocab.evicted_count) == 1
    vocab.eval()
    assert vocab(torch.tensor([a, b, c, d, e])).tolist() == [rows[a], rows[b], 0, rows[d], new_row]


def test_evict_frees_a_batch_of_rows_for_reuse() -> None:
    vocab = ManagedVocabulary(capacity=10, evict="lfu")
    ids = raw_ids(range(10))
    rows = vocab(ids)
    vocab(ids[3:])  # ids 0, 1, 2 are the least frequent
    victims = vocab.evict(3)
    assert sorted(victims.tolist()) == sorted(rows[:3].tolist())
    assert int(vocab.free_count) == 3 and vocab.num_admitted == 7 and int(vocab.evicted_count) == 3
    assert bool((vocab.row_ids[victims] == vocab.row_ids[0]).all())  # freed rows hold no id
    assert vocab.remap(ids).tolist() == [0, 0, 0] + rows[3:].tolist()
    new_rows = vocab(raw_ids([100, 101]))
    assert set(new_rows.tolist()) <= set(victims.tolist()) and vocab.num_admitted == 9
    assert vocab.evict(0).numel() == 0


def test_lru_evicts_the_least_recent() -> None:
    vocab = ManagedVocabulary(capacity=4, evict="lru", evict_fraction=0.25)
    a, b, c, d, e = raw_ids(range(5)).tolist()
    for id_ in (a, b, c, d):
        vocab(torch.tensor([id_]))
    vocab(torch.tensor([a, a, a, a]))  # b is now the least recently seen, though not the least frequent
    vocab(torch.tensor([b]))
    vocab(torch.tensor([c, d]))  # now a is the oldest
    row_a = vocab.remap(torch.tensor([a])).item()
    assert vocab(torch.tensor([e])).item() == row_a
    assert vocab.remap(torch.tensor([a, b, c, d])).tolist()[0] == 0
    assert bool((vocab.remap(torch.tensor([b, c, d])) != 0).all())


def test_ttl_frees_old_rows_by_event_time() -> None:
    vocab = ManagedVocabulary(capacity=10, evict="ttl", ttl_seconds=100)
    a, b, c = raw_ids(range(3)).tolist()
    vocab(torch.tensor([a, b]), timestamps=torch.tensor([1_000, 1_080]))
    row_b = vocab.remap(torch.tensor([b])).item()
    vocab(torch.tensor([c]), timestamps=torch.tensor([1_150]))  # a is 150 s old, b 70 s
    assert int(vocab.evicted_count) == 1
    assert vocab.remap(torch.tensor([a, b])).tolist() == [0, row_b]
    vocab(torch.tensor([c]), timestamps=1_200)  # one time for the whole batch: b is 120 s old
    assert vocab.remap(torch.tensor([b])).item() == 0 and vocab.remap(torch.tensor([c])).item() != 0
    assert int(vocab.clock) == 1_200


def test_ttl_counts_steps_without_timestamps() -> None:
    vocab = ManagedVocabulary(capacity=10, evict="ttl", ttl_seconds=2)
    a, b = raw_ids(range(2)).tolist()
    vocab(torch.tensor([a]))
    for _ in range(3):
        vocab(torch.tensor([b]))
    assert vocab.remap(torch.tensor([a, b])).tolist()[0] == 0
    assert int(vocab.evicted_count) == 1


def test_reassigned_rows_are_reported_and_reinitialised_with_optimizer_state() -> None:
    vocab = ManagedVocabulary(capacity=2, evict="lru", evict_fraction=0.5)
    weight = torch.full((vocab.num_rows, 4), 5.0)
    adagrad_sum = torch.full((vocab.num_rows,), 9.0)  # row-wise Adagrad: one value per row
    adam_state = {"exp_avg": torch.full((vocab.num_rows, 4), 3.0), "step": torch.tensor(17.0)}
    a, b, c = raw_ids(range(3)).tolist()
    vocab(torch.tensor([a, b]))
    assert sorted(vocab.last_new_rows.tolist()) == [1, 2]
    vocab(torch.tensor([b]))
    vocab(torch.tensor([a]))  # no new rows in this call
    assert vocab.last_new_rows.numel() == 0
    row_b = vocab.remap(torch.tensor([b])).item()
    assert vocab(torch.tensor([c])).item() == row_b  # b was least recent: its row goes to c
    assert vocab.last_new_rows.tolist() == [row_b]
    reset = vocab.reinitialize(weight, [adagrad_sum, adam_state], std=0.01)
    assert reset.tolist() == [row_b]
    assert float(weight[row_b].abs().max()) < 0.1 and float(weight[row_b].abs().max()) > 0
    assert adagrad_sum[row_b].item() == 0.0 and float(adam_state["exp_avg"][row_b].abs().sum()) == 0.0
    untouched = [r for r in range(vocab.num_rows) if r != row_b]
    assert bool((weight[untouched] == 5.0).all()) and bool((adagrad_sum[untouched] == 9.0).all())
    assert adam_state["step"].item() == 17.0


def test_attached_table_is_reinitialised_inside_forward() -> None:
    vocab = ManagedVocabulary(capacity=2, evict="lfu", evict_fraction=0.5)
    emb = PooledEmbeddings({"item_id": vocab}, 4)
    weight = emb.tables.embedding_bags["t_item_id"].weight
    state = torch.zeros(vocab.num_rows)
    vocab.attach(weight, state, std=0.01)
    a, b, c = raw_ids(range(3)).tolist()

    def features(ids: list[int]) -> KeyedJaggedTensor:
        return KeyedJaggedTensor(keys=["item_id"], values=torch.tensor(ids), lengths=torch.tensor([len(ids)]))

    emb(features([a, a, b]))
    with torch.no_grad():
        weight.fill_(7.0)
        state.fill_(2.0)
    out = emb(features([c]))  # evicts b (the least frequent), gives its row to c, re-initialises it
    row_c = vocab.remap(torch.tensor([c])).item()
    assert vocab.remap(torch.tensor([b])).item() == 0
    table = weight.detach()
    assert float(table[row_c].abs().max()) < 0.1 and state[row_c].item() == 0.0
    assert torch.allclose(out.values().detach(), table[row_c].unsqueeze(0))  # the lookup saw the new weights
    assert table[vocab.remap(torch.tensor([a])).item()].tolist() == [7.0] * 4


def test_eval_mode_is_read_only() -> None:
    vocab = ManagedVocabulary(capacity=3, min_count=1)
    known = raw_ids([1, 2, 3])
    rows = vocab(known)
    vocab.eval()
    before = {name: tensor.clone() for name, tensor in vocab.state_dict().items() if name != "unknown_count"}
    new = raw_ids([4, 5, 6, 7])
    assert vocab(new).tolist() == [0, 0, 0, 0]
    assert torch.equal(vocab(known), rows)
    assert int(vocab.unknown_count) == 4 and int(vocab.not_admitted_count) == 0
    after = vocab.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert vocab.last_new_rows.numel() == 0


def test_state_dict_round_trip_with_weights_only() -> None:
    config = {"capacity": 64, "min_count": 2, "evict": "lfu", "evict_fraction": 0.1}
    vocab = ManagedVocabulary(**config)
    generator = np.random.default_rng(0)
    for _ in range(20):
        vocab(raw_ids(generator.zipf(1.3, 200) % 500))
    buffer = io.BytesIO()
    torch.save(vocab.state_dict(), buffer)
    buffer.seek(0)
    restored = ManagedVocabulary(**config)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    everything = raw_ids(range(500))
    assert torch.equal(restored.remap(everything), vocab.remap(everything))
    assert int((vocab.remap(everything) != 0).sum()) > 30
    for name in ("admitted_count", "evicted_count", "not_admitted_count", "step"):
        assert int(getattr(restored, name)) == int(getattr(vocab, name))
    # Both go on identically: same admissions, same evictions, same rows.
    for _ in range(10):
        batch = raw_ids(generator.zipf(1.3, 200) % 500)
        assert torch.equal(restored(batch), vocab(batch))


def test_loading_through_a_parent_module_rebuilds_the_map() -> None:
    emb = PooledEmbeddings({"item_id": ManagedVocabulary(capacity=10)}, 4)
    ids = raw_ids(range(8))
    rows = emb.vocabularies["item_id"](ids)
    other = PooledEmbeddings({"item_id": ManagedVocabulary(capacity=10)}, 4)
    other.load_state_dict(emb.state_dict())
    assert torch.equal(other.vocabularies["item_id"].eval()(ids), rows)


def test_hot_id_keeps_its_row_under_churn() -> None:
    vocab = ManagedVocabulary(capacity=1_000, min_count=1, evict="lfu", evict_fraction=0.05)
    hot = raw_ids(range(100))
    hot_rows = vocab(hot)
    fresh = 10_000
    for _ in range(100):  # every batch: the hot ids again, plus 300 ids never seen before
        batch = torch.cat([hot, raw_ids(range(fresh, fresh + 300))])
        fresh += 300
        rows = vocab(batch)
        check_exact(vocab, batch, rows)
        assert torch.equal(rows[:100], hot_rows)
    assert int(vocab.evicted_count) > 20_000


@pytest.mark.parametrize("evict", ["lfu", "lru", "ttl"])
def test_random_stream_is_exact_against_a_reference(evict: str) -> None:
    # Small table, many evictions, tombstones and rebuilds: every answer checked.
    vocab = ManagedVocabulary(capacity=50, min_count=2, evict=evict, ttl_seconds=5, evict_fraction=0.1)
    generator = np.random.default_rng(3)
    owner: dict[int, int] = {}  # row -> id, from the answers seen
    for _ in range(300):  # batch sizes vary, so evictions sometimes free more rows than a batch takes
        batch = raw_ids(generator.zipf(1.2, int(generator.integers(1, 65))) % 300)
        rows = vocab(batch)
        check_exact(vocab, batch, rows)
        for id_, row in zip(batch.tolist(), rows.tolist()):
            if row and owner.get(row) != id_:
                # A row changes owner only through a new assignment reported in last_new_rows.
                assert row in vocab.last_new_rows.tolist()
                owner[row] = id_
        assert vocab.num_admitted == int((vocab.row_ids[1:] != vocab.row_ids[0]).sum())
        # The tombstone count drives rebuilds, which keep empty slots for probes to stop at.
        assert vocab._tombstones == int((vocab.slot_keys == TOMBSTONE).sum())
    before = vocab.remap(raw_ids(range(300)))
    vocab._rebuild()
    assert torch.equal(vocab.remap(raw_ids(range(300))), before)
    assert int(vocab.evicted_count) > 0


def ids_with_home_slot(vocab: ManagedVocabulary, slot: int, count: int) -> torch.Tensor:
    """Distinct ids whose Fibonacci-hash home slot is ``slot`` (inverting id * phi mod 2**64)."""
    inverse = pow(0x9E3779B97F4A7C15, -1, 2**64)
    shift = 64 - vocab.slot_bits
    values = [((((slot << shift) + low) * inverse) % 2**64) for low in range(1, count + 1)]
    return torch.tensor([v - 2**64 if v >= 2**63 else v for v in values], dtype=torch.int64)


def test_probe_chains_wrap_around_the_end_of_the_table() -> None:
    vocab = ManagedVocabulary(capacity=16)  # 32 slots
    last = vocab.slot_keys.numel() - 1
    crowded = torch.cat([ids_with_home_slot(vocab, last, 5), ids_with_home_slot(vocab, 0, 2)])
    assert bool((vocab._home_slots(crowded)[:5] == last).all())
    rows = vocab(crowded)
    assert sorted(rows.tolist()) == list(range(1, 8))
    assert int((vocab.slot_keys[:6] != -(2**63)).sum()) == 6  # 4 wrapped ids + the 2 homed at slot 0
    vocab._rebuild()  # the sorted rebuild wraps the same chains
    assert torch.equal(vocab.remap(crowded), rows)
    vocab.evict(3)  # tombstones inside the wrapped chain: the others are still found past them
    kept = vocab.remap(crowded)
    assert int((kept == 0).sum()) == 3 and torch.equal(kept[kept != 0], rows[kept != 0])


def test_eviction_on_a_large_table_frees_exactly_the_lowest_counts() -> None:
    # From 2**18 rows, victims are picked with a sampled threshold: still exactly the lowest.
    capacity = 1 << 18
    vocab = ManagedVocabulary(capacity=capacity, evict="lfu", evict_fraction=0.02, count_half_life=0)
    ids = torch.arange(1, capacity + 1, dtype=torch.int64)
    vocab(ids)
    vocab.row_counts[1:] = torch.rand(capacity, generator=torch.Generator().manual_seed(0))  # distinct counts
    counts = vocab.row_counts.clone()
    counts[0] = float("inf")
    victims = vocab.evict()
    assert victims.numel() == vocab.evict_batch
    freed_max = float(counts[victims].max())
    kept = torch.ones(capacity + 1, dtype=torch.bool)
    kept[victims] = False
    kept[0] = False
    assert freed_max <= float(counts[kept].min())
    assert int(vocab.free_count) == vocab.evict_batch


def test_sentinel_valued_ids_stay_on_the_default_row() -> None:
    vocab = ManagedVocabulary(capacity=10)
    extremes = torch.tensor([-(2**63), -(2**63) + 1, 2**63 - 1, 0, -1])
    rows = vocab(extremes)
    assert rows[:2].tolist() == [0, 0]  # the two values the hash table reserves
    assert bool((rows[2:] != 0).all()) and torch.unique(rows[2:]).numel() == 3
    assert int(vocab.not_admitted_count) == 2
    assert torch.equal(vocab(extremes), rows)


def test_works_inside_remap_with_a_keyed_jagged_tensor() -> None:
    vocabularies = torch.nn.ModuleDict(
        {"item_id": ManagedVocabulary(capacity=10), "user_id": ManagedVocabulary(capacity=10, min_count=2)}
    )
    items, users = raw_ids([1, 2, 1]), raw_ids([5, 5, 6])
    features = KeyedJaggedTensor(
        keys=["item_id", "user_id"], values=torch.cat([items, users]), lengths=torch.tensor([2, 1, 1, 2])
    )
    remapped = remap(features, vocabularies)
    assert remapped["item_id"].values().tolist() == [1, 2, 1]
    assert remapped["user_id"].values().tolist() == [1, 1, 0]  # 5 seen twice in the batch; 6 once
    assert remapped.lengths().tolist() == [2, 1, 1, 2]
    emb = PooledEmbeddings(dict(vocabularies.items()), 8)
    pooled = emb(features)
    assert pooled.values().shape == (2, 16)


def test_bad_arguments_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        ManagedVocabulary(capacity=10, evict="ttl")
    with pytest.raises(ValueError, match="admit"):
        ManagedVocabulary(capacity=10, admit="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int64"):
        ManagedVocabulary(capacity=10)(torch.tensor([1, 2], dtype=torch.int32))
    vocab = ManagedVocabulary(capacity=10)
    with pytest.raises(ValueError, match="rows"):
        vocab.reinitialize(torch.zeros(5, 4))


def test_probability_admission_pinned_values() -> None:
    # Which ids a probability-admitting vocabulary ever admits is part of a run's state: these
    # are the decisions of the code before the 64-bit mixer was shared (terarec.features.mixing).
    vocab = ManagedVocabulary(100, admit="probability", admit_probability=0.5, seed=3)
    admitted = vocab._admitted_by_hash(torch.arange(-20, 20)).tolist()
    assert [i for i, yes in zip(range(-20, 20), admitted) if yes] == [
        -18, -17, -15, -11, -9, -8, -2, -1, 0, 2, 3, 4, 8, 9, 12, 13, 15, 18,
    ]
