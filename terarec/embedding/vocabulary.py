"""Managed vocabulary: raw 64-bit ids into a bounded table, with admission, eviction and re-initialised rows.

A drop-in for ``ExactVocabulary`` in ``terarec.embedding.collection.remap``: ``vocab(ids)``
returns int64 table rows, ``num_rows`` sizes the table (``capacity + 1``) and row 0 is the
default row. The contract is the exact vocabulary's: an admitted id has a row of its own until
it is evicted; an id not (yet) admitted, or unknown at evaluation, goes to row 0 and is counted.
No id is ever silently mapped to another id's row.

How an id gets, keeps and loses a row (training mode only; evaluation is read-only):

- **Lookup**: an open-addressing hash table in torch tensors (``slot_keys``, ``slot_rows``;
  ``2**k >= 2 x capacity`` slots, load factor at most 0.5 when full, linear probing, Fibonacci
  hashing of the id to its home slot). A batch is probed in vectorised rounds: every id reads
  its home slot (most settle there: their id, or an empty slot), the rest read the following
  slots in windows of 4, 16, 64, ... until they meet their id or an empty slot. Evicted slots
  become tombstones (probes pass them, inserts reuse them; those that end a cluster are
  emptied at once, as no probe passes them); the table is rebuilt from
  ``row_ids`` (a sort by home slot and a running maximum) before live + tombstone slots would
  pass 65% of the table, so every probe ends at an empty slot.
- **Admission** of an id that missed:
  ``admit="count"``: once it has been seen ``min_count`` times while without a row. Counts
  live in a count-min sketch (``sketch_depth`` rows of ``sketch_width`` int32 counters,
  multiply-shift hashes, plain updates; ``terarec.embedding.sketch``) that is halved every
  ``sketch_window`` additions, so an id must gather its count within about that many missed
  lookups. A count-min sketch never underestimates; it overestimates by the mass of the ids colliding with it: per row the
  expected excess is at most ``N / width`` (N = the count the sketch holds, between
  ``sketch_window`` right after a halving and ``2 x sketch_window`` just before one), so by
  Markov's inequality ``P(estimate >= true + 1) <= (N / width) ** depth``. With the defaults
  (width ``>= 4 x capacity``, window = width / 4, depth 4) that is between ``0.25**4 = 0.4%``
  and ``0.5**4 = 6%``; measured: 0.2% of 2.6M never-repeated ids were admitted with
  ``min_count=2`` at capacity 100k. An overestimate only admits an id a little early.
  ``min_count <= 1`` admits on first sight and keeps no sketch.
  ``admit="probability"``: an id is admitted iff its 64-bit mix
  (``terarec.features.mixing.mix64`` of the id xor the seed), read as a number in
  [0, 1), is below ``admit_probability``: the same id is always admitted or always not, and
  about that share of distinct ids ever gets a row.
- **Eviction** (``terarec.embedding.eviction``) when the free rows run out: the worst
  ``evict_fraction`` of the capacity (at least what the batch needs) is freed at once, so the O(capacity) selection is paid once per
  many admissions (exactly the lowest scores: a threshold read off a sample of 65,536 scores,
  then ``torch.topk`` over the rows at or below it). ``evict="lfu"``: lowest decayed count (counts halve every
  ``count_half_life`` looked-up ids); ``"lru"``: oldest last-seen step; ``"ttl"``: after every
  training lookup the rows whose last-seen event time is older than ``ttl_seconds`` are freed,
  and if the table is still full the oldest are evicted as in LRU. Rows looked up in the current
  batch are never evicted by it, so one batch never sees a row change owner.
- **Re-initialisation**: a freed row reassigned to a new id still holds the old id's weights
  and optimizer state. ``last_new_rows`` lists the rows assigned in the last call;
  ``reinitialize(weight, optimizer_state)`` resets them (weights ~ N(0, std), optimizer state
  rows to ``state_value``). ``attach(weight, optimizer_state)`` makes every training call do it
  before returning rows, which is what a model whose forward remaps and looks up in one go
  (``PooledEmbeddings``) needs::

      vocab = ManagedVocabulary(capacity=1_000_000, min_count=2)
      emb = PooledEmbeddings({"item_id": vocab}, 16)
      weight = emb.tables.embedding_bags["t_item_id"].weight
      optimizer = torch.optim.Adagrad([weight])     # or the engine's fused row-wise Adagrad state
      vocab.attach(weight, optimizer.state[weight])  # the dict is read at every call
      for features, labels in loader:                # each forward admits, evicts, re-initialises
          loss = loss_fn(head(emb(features)), labels)
          loss.backward(); optimizer.step(); optimizer.zero_grad()

  Without ``attach``: ``rows = vocab(ids)``, then ``vocab.reinitialize(weight, state)`` before the
  table is read with those rows (``last_new_rows`` holds only the last call's rows). Evaluation
  needs nothing: it assigns no rows.
- **Counters** (int64 buffers): ``unknown_count`` (every lookup answered with row 0, training
  or evaluation), ``not_admitted_count`` (its training-mode part: ids that missed and were not
  admitted), ``admitted_count`` (ids given a row), ``evicted_count`` (rows freed, TTL included).
- **Checkpoints**: ``row_ids``, ``row_counts``, ``row_last_seen``, the free-row stack, the
  sketch, the clock and the counters are persistent buffers (plain tensors, loadable with
  ``torch.load(weights_only=True)``); the hash table is rebuilt from ``row_ids`` on load, so a
  restored vocabulary maps every id to the same row and goes on admitting in the same order.

Memory per row of capacity: hash table 32 B at a power-of-two capacity (16 B key + row per slot,
2 slots per row; up to 64 B after rounding up), id 8 B, row -> slot 8 B, decayed count 4 B,
last seen 8 B, free stack 8 B: 68 B; count admission with ``min_count > 1`` adds the sketch,
64 B (depth 4 x width 4 x capacity x int32; a narrower ``sketch_width`` trades memory for error).

Why not TorchRec's ``MCHManagedCollisionModule`` (torchrec 1.8, measured on this 2-core CPU
with the Zipf(1.1) stream of ``bench/vocabulary.py``, 10M distinct ids into capacity 1M):

- Speed: it keeps ids in a sorted array and, at every eviction interval, runs ``torch.unique``
  over the window's ids and re-sorts the whole capacity-sized table (``argsort`` of capacity +
  new ids). Admitting new ids in the batch that brings them (``eviction_interval=1``) gave
  0.53M ids/s with batches of 65,536 and 3.3M ids/s with batches of 1M; longer intervals are
  faster only because new ids wait for a row meanwhile: ``eviction_interval=16`` with batches
  of 65,536 gave 3.9M ids/s with 19% of lookups on the default row, ``eviction_interval=4``
  with batches of 1M 4.8M ids/s with 36% (instead of 1.2%). All below the 5M ids/s needed;
  this module does 6.8-7.7M ids/s on the same stream with batches of 65,536 and 12.5M with
  batches of 1M, evicting 3.3M rows on the way (``bench/vocabulary.py``).
- Semantics: its admission is per window (an id enters if its count *within the window*
  beats the resident minimum; there is no count threshold across windows), its probabilistic
  filter draws ``torch.rand`` per window (not deterministic per id), LFU counts never decay,
  LRU/"distance" policies work on iteration counters (no TTL by event time), the default row
  is the last row (``zch_size - 1``), and evicted rows are reported by ``evict()`` as a running
  set rather than per call. Its id -> row mapping itself is exact (no wrong rows).

This module keeps its shape: ``remap`` (read-only lookup), ``evict`` (free rows by the
policy), ``forward`` (profile + remap in training), buffers for state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch
from torch import nn

from terarec.embedding import sketch
from terarec.embedding.eviction import EMPTY, NEVER_SEEN, lowest_rows, make_policy
from terarec.features.mixing import GOLDEN, as_int64, mix64
from terarec.embedding.exact_vocabulary import DEFAULT_ROW

TOMBSTONE = -(2**63) + 1  # slot held an evicted id: probes pass it, inserts may reuse it
_FIBONACCI = as_int64(GOLDEN)  # Fibonacci hashing of ids to home slots
_MAX_PROBE_ROUNDS = 1 << 16
_REBUILD_LOAD = 0.65  # rebuild the hash table when live + tombstone slots pass this share


def _window_offsets(round_: int) -> torch.Tensor:
    """Slots read in probe round ``round_`` after the current one: 4, 16, 64, 256, then 1024."""
    return torch.arange(1, (4 << 2 * min(round_, 4)) + 1)


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, value))))


def _state_tensors(optimizer_state) -> Iterable[torch.Tensor]:
    if optimizer_state is None:
        return
    if isinstance(optimizer_state, torch.Tensor):
        yield optimizer_state
    elif isinstance(optimizer_state, Mapping):
        for value in optimizer_state.values():
            yield from _state_tensors(value)
    elif isinstance(optimizer_state, (list, tuple)):
        for value in optimizer_state:
            yield from _state_tensors(value)
    else:
        raise TypeError(
            f"optimizer_state: expected a tensor, or a dict / list of tensors, got {type(optimizer_state).__name__}"
        )


class ManagedVocabulary(nn.Module):
    """Bounded 64-bit id -> row map with admission and eviction; unknown / not admitted ids -> row 0 (counted).

    Args:
        capacity: rows for admitted ids (the table has ``capacity + 1`` rows; row 0 is the default).
        admit: ``"count"`` (an id gets a row once seen ``min_count`` times) or ``"probability"``
            (a seeded hash admits each id with probability ``admit_probability``, always the same way).
        min_count: count admission: sightings needed (1 = on first sight, no sketch kept).
        admit_probability: probability admission: share of ids admitted.
        evict: ``"lfu"`` (lowest decayed count), ``"lru"`` (oldest last seen: step, or event time
            when lookups carry timestamps) or ``"ttl"``
            (last-seen event time older than ``ttl_seconds``; oldest first when still full).
        ttl_seconds: TTL eviction: age at which a row is freed, in the units of the timestamps
            given to ``forward`` (seconds), or in training steps when lookups carry no timestamps.
        evict_fraction: share of the capacity freed at once when the table is full (amortises
            the O(capacity) selection).
        count_half_life: LFU: row counts halve every this many looked-up ids (default 8 x capacity;
            0 = no decay).
        sketch_width, sketch_depth: the count-min sketch of count admission (width rounded up to
            a power of two; default width 4 x capacity).
        sketch_window: count admission: the sketch is halved after this many additions
            (default width / 4, so at most half the counters' worth of sightings between halvings).
        seed: seeds the admission hash and the sketch hashes.

    Example:
        >>> vocab = ManagedVocabulary(capacity=2, min_count=2)
        >>> vocab(torch.tensor([7, 8, 7])).tolist()   # 7 reaches 2 sightings within this batch
        [1, 0, 1]
        >>> vocab(torch.tensor([8, 9, 7])).tolist(), int(vocab.not_admitted_count)
        ([2, 0, 1], 2)
        >>> _ = vocab.eval(); vocab(torch.tensor([9, 7])).tolist(), int(vocab.unknown_count)
        ([0, 1], 3)
    """

    def __init__(
        self,
        capacity: int,
        *,
        admit: Literal["count", "probability"] = "count",
        min_count: int = 1,
        admit_probability: float = 1.0,
        evict: Literal["lfu", "lru", "ttl"] = "lfu",
        ttl_seconds: float | None = None,
        evict_fraction: float = 0.02,
        count_half_life: int | None = None,
        sketch_width: int | None = None,
        sketch_depth: int = 4,
        sketch_window: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if capacity < 1 or capacity >= 2**40:
            raise ValueError(f"ManagedVocabulary: capacity must be in [1, 2**40), got {capacity}")
        if admit not in ("count", "probability"):
            raise ValueError(f"ManagedVocabulary: admit must be 'count' or 'probability', got {admit!r}")
        if evict == "ttl" and (ttl_seconds is None or ttl_seconds <= 0):
            raise ValueError(f"ManagedVocabulary: evict='ttl' needs ttl_seconds > 0, got {ttl_seconds}")
        if not 0.0 <= admit_probability <= 1.0:
            raise ValueError(f"ManagedVocabulary: admit_probability must be in [0, 1], got {admit_probability}")
        if not 0.0 < evict_fraction <= 1.0:
            raise ValueError(f"ManagedVocabulary: evict_fraction must be in (0, 1], got {evict_fraction}")
        if not 1 <= sketch_depth <= len(sketch.MULTIPLIERS):
            raise ValueError(
                f"ManagedVocabulary: sketch_depth must be in [1, {len(sketch.MULTIPLIERS)}], got {sketch_depth}"
            )
        self.capacity = int(capacity)
        self.admit = admit
        self.min_count = int(min_count)
        self.admit_probability = float(admit_probability)
        self.evict_policy = evict
        self.ttl_seconds = ttl_seconds
        self.evict_batch = max(1, math.ceil(evict_fraction * capacity))
        self.count_half_life = 8 * capacity if count_half_life is None else int(count_half_life)
        self.policy = make_policy(evict, self.count_half_life, ttl_seconds)
        self.seed = int(seed)
        self._admit_threshold = round(admit_probability * (1 << 24))

        uses_sketch = admit == "count" and self.min_count > 1
        width = _next_power_of_two(sketch_width or max(4 * capacity, 4096)) if uses_sketch else 0
        self.sketch_window = int(sketch_window or max(1, width // 4))

        num_slots = _next_power_of_two(2 * capacity)
        self.slot_bits = int(math.log2(num_slots))
        # The hash table: derived from row_ids, rebuilt on load, so not saved.
        self.register_buffer("slot_keys", torch.full((num_slots,), EMPTY, dtype=torch.int64), persistent=False)
        self.register_buffer("slot_rows", torch.zeros(num_slots, dtype=torch.int64), persistent=False)
        self.register_buffer("row_slot", torch.full((capacity + 1,), -1, dtype=torch.int64), persistent=False)
        self._tombstones = 0

        self.register_buffer("row_ids", torch.full((capacity + 1,), EMPTY, dtype=torch.int64))
        self.register_buffer("row_counts", torch.zeros(capacity + 1, dtype=torch.float32))
        self.register_buffer("row_last_seen", torch.full((capacity + 1,), NEVER_SEEN, dtype=torch.int64))
        # Free rows as a stack: rows free_rows[:free_count]; popped from the top, so a fresh
        # vocabulary hands out rows 1, 2, 3, ...
        self.register_buffer("free_rows", torch.arange(capacity, 0, -1, dtype=torch.int64))
        self.register_buffer("free_count", torch.tensor(capacity, dtype=torch.int64))
        self.register_buffer("sketch", torch.zeros((sketch_depth if uses_sketch else 0, width), dtype=torch.int32))
        self.register_buffer("sketch_additions", torch.zeros((), dtype=torch.int64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("clock", torch.zeros((), dtype=torch.int64))
        self.register_buffer("ids_since_decay", torch.zeros((), dtype=torch.int64))
        for name in ("unknown_count", "not_admitted_count", "admitted_count", "evicted_count"):
            self.register_buffer(name, torch.zeros((), dtype=torch.int64))
        self.last_new_rows = torch.zeros(0, dtype=torch.int64)
        self._event_time: int | None = None
        self._attached: list = []  # [(weight, optimizer_state, std, state_value)]: plain list, not registered
        self.register_load_state_dict_post_hook(ManagedVocabulary._after_load)

    # ------------------------------------------------------------------ sizes and helpers

    @property
    def num_rows(self) -> int:
        """Rows a table needs: the capacity plus the default row 0."""
        return self.capacity + 1

    @property
    def num_admitted(self) -> int:
        """Rows now held by an id."""
        return self.capacity - int(self.free_count)

    def held(self) -> torch.Tensor:
        """(num_rows,) bool: the rows now held by an id (never row 0)."""
        return self.row_ids != EMPTY

    def extra_repr(self) -> str:
        admit = f"min_count={self.min_count}" if self.admit == "count" else f"p={self.admit_probability}"
        return f"capacity={self.capacity}, admit={self.admit}({admit}), evict={self.evict_policy}"

    def _home_slots(self, ids: torch.Tensor) -> torch.Tensor:
        # Fibonacci hashing: the top slot_bits bits of id * 2^64 / phi (arithmetic shift, then mask).
        return ((ids * _FIBONACCI) >> (64 - self.slot_bits)) & ((1 << self.slot_bits) - 1)

    # ------------------------------------------------------------------ hash table

    def _probe(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ids (0 where absent), read-only."""
        mask = (1 << self.slot_bits) - 1
        slots = self._home_slots(ids)
        keys = self.slot_keys.index_select(0, slots)
        hit = keys == ids
        rows = self.slot_rows.index_select(0, slots).mul_(hit)
        # Empty and tombstone slots hold row 0, so an id equal to a sentinel reads row 0.
        pending = hit.logical_or_(keys == EMPTY).logical_not_().nonzero().squeeze(1)
        if pending.numel() == 0:
            return rows
        # The ids not settled by their home slot read the next slots in windows of 4, 16, 64, ...
        # (contiguous, so a window costs about one cache miss): the longest probe chain costs a
        # few rounds, not one round per slot. Rows of `state`: position in the batch, last slot
        # read, id; filtered together (one nonzero per filter).
        state = torch.stack([pending, slots.index_select(0, pending), ids.index_select(0, pending)])
        for round_ in range(_MAX_PROBE_ROUNDS):
            positions, last_slots, query = state
            window = (last_slots.unsqueeze(1) + _window_offsets(round_)) & mask  # (m, W)
            keys = self.slot_keys.index_select(0, window.view(-1)).view(window.shape)
            match = keys == query.unsqueeze(1)
            # An id is never stored past an empty slot of its chain, so a match in the window is it.
            found_any = match.any(1)
            found = found_any.nonzero().squeeze(1)
            if found.numel():
                at = match.index_select(0, found).to(torch.uint8).argmax(1, keepdim=True)
                found_slots = window.index_select(0, found).gather(1, at).squeeze(1)
                rows.index_copy_(0, positions.index_select(0, found), self.slot_rows.index_select(0, found_slots))
            going = (keys == EMPTY).any(1).logical_or_(found_any).logical_not_().nonzero().squeeze(1)
            if going.numel() == 0:
                return rows
            state = torch.stack([positions, window[:, -1], query]).index_select(1, going)
        raise RuntimeError("ManagedVocabulary: hash table probe did not terminate (corrupt state?)")

    def _insert(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        """Put distinct ids, known to be absent and none a sentinel value, into the table with their rows."""
        mask = (1 << self.slot_bits) - 1
        # Rows of `state`: index into ids, the slot before the next window to read.
        state = torch.stack([torch.arange(ids.numel()), self._home_slots(ids) - 1])
        for round_ in range(_MAX_PROBE_ROUNDS):
            if state.shape[1] == 0:
                return
            pending, last_slots = state
            window = (last_slots.unsqueeze(1) + _window_offsets(round_)) & mask
            current = self.slot_keys.index_select(0, window.view(-1)).view(window.shape)
            free = current <= TOMBSTONE  # empty or tombstone: no stored id is a sentinel value
            first = free.to(torch.uint8).argmax(1, keepdim=True)
            target = window.gather(1, first).squeeze(1)
            has_free = free.any(1)
            taking = has_free.nonzero().squeeze(1)
            takers, taken = pending.index_select(0, taking), target.index_select(0, taking)
            # Several ids may pick one free slot: one write lands, and its id is the winner.
            taker_ids = ids.index_select(0, takers)
            was_tombstone = self.slot_keys.index_select(0, taken) == TOMBSTONE
            self.slot_keys.index_put_((taken,), taker_ids)
            won = (self.slot_keys.index_select(0, taken) == taker_ids).nonzero().squeeze(1)
            winners, won_slots = takers.index_select(0, won), taken.index_select(0, won)
            winner_rows = rows.index_select(0, winners)
            self.slot_rows.index_copy_(0, won_slots, winner_rows)
            self.row_slot.index_copy_(0, winner_rows, won_slots)
            # Each slot written has exactly one winner: the tombstones reused are the winners' ones.
            self._tombstones -= int(was_tombstone.index_select(0, won).sum())
            if won.numel() == pending.numel():
                return
            # Losers go on after the slot they lost; ids with no free slot in view, after the window.
            placed = torch.zeros(pending.numel(), dtype=torch.bool).index_fill_(0, taking.index_select(0, won), True)
            going = placed.logical_not_().nonzero().squeeze(1)
            next_slots = torch.where(has_free, target, window[:, -1])
            state = torch.stack([pending, next_slots]).index_select(1, going)
        raise RuntimeError("ManagedVocabulary: hash table insert did not terminate (table full?)")

    def _rebuild(self) -> None:
        """Rebuild the hash table from row_ids (after loading, or when tombstones pile up)."""
        self.slot_keys.fill_(EMPTY)
        self.slot_rows.zero_()
        self.row_slot.fill_(-1)
        self._tombstones = 0
        held = (self.row_ids != EMPTY).nonzero().squeeze(1)
        held = held[held != DEFAULT_ROW]
        if held.numel() == 0:
            return
        # Linear probing into an empty table, all at once: sorted by home slot, the i-th id lands
        # on max(its home, the slot of the id before + 1), a running maximum.
        keys = self.row_ids.index_select(0, held)
        home, order = torch.sort(self._home_slots(keys))
        index = torch.arange(home.numel())
        slots = torch.cummax(home - index, 0).values + index
        fits = slots < self.slot_keys.numel()
        placed, placed_slots = order[fits], slots[fits]
        self.slot_keys.index_copy_(0, placed_slots, keys.index_select(0, placed))
        placed_rows = held.index_select(0, placed)
        self.slot_rows.index_copy_(0, placed_slots, placed_rows)
        self.row_slot.index_copy_(0, placed_rows, placed_slots)
        wrapped = order[~fits]  # ran past the last slot: they wrap around to the first free ones
        if wrapped.numel():
            self._insert(keys.index_select(0, wrapped), held.index_select(0, wrapped))

    @staticmethod
    def _after_load(module: ManagedVocabulary, incompatible_keys) -> None:
        module._rebuild()

    # ------------------------------------------------------------------ admission

    def _sketch_add_and_estimate(self, ids: torch.Tensor) -> torch.Tensor:
        """Add one sighting per id occurrence to the count-min sketch; return each id's estimate."""
        estimate = sketch.add_and_estimate(self.sketch, ids, self.seed)
        self.sketch_additions += ids.numel()
        if int(self.sketch_additions) >= self.sketch_window:
            sketch.halve(self.sketch)
            self.sketch_additions.zero_()
        return estimate

    def _admitted_by_hash(self, ids: torch.Tensor) -> torch.Tensor:
        keyed = ids.contiguous().numpy().view(np.uint64) ^ np.uint64(self.seed & (2**64 - 1))
        top24 = mix64(keyed) >> np.uint64(40)  # the mixed id's top 24 bits, a number in [0, 2^24)
        return torch.from_numpy(top24.astype(np.int64) < self._admit_threshold)

    # ------------------------------------------------------------------ eviction

    def _free(self, rows: torch.Tensor) -> None:
        if rows.numel() == 0:
            return
        slots = self.row_slot.index_select(0, rows)
        self.slot_keys.index_fill_(0, slots, TOMBSTONE)
        self.slot_rows.index_fill_(0, slots, 0)
        self._tombstones += rows.numel()
        self._clear_cluster_tails(slots)
        self.row_slot.index_fill_(0, rows, -1)
        self.row_ids.index_fill_(0, rows, EMPTY)
        self.row_counts.index_fill_(0, rows, 0.0)
        self.row_last_seen.index_fill_(0, rows, NEVER_SEEN)
        top = int(self.free_count)
        self.free_rows[top : top + rows.numel()] = rows
        self.free_count += rows.numel()
        self.evicted_count += rows.numel()

    def _clear_cluster_tails(self, tombstones: torch.Tensor) -> None:
        """Empty the tombstones that end a cluster (the next slot is empty), and so on backwards.

        No probe passes such a slot: a key beyond it would have needed the empty slot after it
        to be taken. Emptying them keeps tombstones, and so rebuilds, rarer.
        """
        mask = (1 << self.slot_bits) - 1
        candidates = tombstones
        for _ in range(_MAX_PROBE_ROUNDS):
            tails = candidates[self.slot_keys.index_select(0, (candidates + 1) & mask) == EMPTY]
            if tails.numel() == 0:
                return
            self.slot_keys.index_fill_(0, tails, EMPTY)
            self._tombstones -= tails.numel()
            before = (tails - 1) & mask
            candidates = before[self.slot_keys.index_select(0, before) == TOMBSTONE]

    @torch.no_grad()
    def evict(self, num_rows: int | None = None, protected_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Free ``num_rows`` rows (default ``evict_fraction`` of the capacity) chosen by the policy.

        LFU frees the lowest decayed counts, LRU and TTL the oldest last-seen times. Rows in
        ``protected_rows`` (the current batch's) and free rows are never chosen. Returns the rows.
        """
        num_rows = self.evict_batch if num_rows is None else int(num_rows)
        scores = self.policy.scores(self)
        evictable = self.row_ids != EMPTY  # not the free rows, nor the default row 0
        if protected_rows is not None and protected_rows.numel():
            evictable.index_fill_(0, protected_rows, False)
        victims = lowest_rows(scores, evictable, num_rows, self.seed * 1_000_003 + int(self.step))
        self._free(victims)
        return victims

    # ------------------------------------------------------------------ lookups

    @torch.no_grad()
    def remap(self, ids: torch.Tensor) -> torch.Tensor:
        """Read-only lookup: rows of admitted ids, row 0 (counted in unknown_count) for the rest."""
        flat = self._check_ids(ids)
        rows = self._probe(flat) if flat.numel() else torch.zeros(0, dtype=torch.int64)
        self.unknown_count += (rows == DEFAULT_ROW).sum()
        return rows.view(ids.shape)

    def set_event_time(self, timestamp: int | None) -> None:
        """Event time for the coming lookups that carry no ``timestamps`` (e.g. through ``remap``); None = steps."""
        self._event_time = None if timestamp is None else int(timestamp)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, timestamps: torch.Tensor | int | None = None) -> torch.Tensor:
        """Rows of 64-bit ids. Training: admits, evicts, counts; evaluation: ``remap`` (read-only).

        Args:
            ids: int64 ids, any shape.
            timestamps: event times (seconds) of the ids (same shape) or one for the batch; used by
                TTL. Without them, the last ``set_event_time`` value, else the step counter.
        """
        if not self.training:
            self.last_new_rows = torch.zeros(0, dtype=torch.int64)
            return self.remap(ids)
        flat = self._check_ids(ids)
        if isinstance(timestamps, torch.Tensor) and timestamps.dim() > 0 and timestamps.shape != ids.shape:
            raise ValueError(
                f"ManagedVocabulary: timestamps shape {tuple(timestamps.shape)} != ids shape {tuple(ids.shape)}"
            )
        self.step += 1
        if timestamps is None and self._event_time is not None:
            timestamps = self._event_time
        if timestamps is None:
            self.clock.copy_(self.step)
        elif isinstance(timestamps, torch.Tensor) and timestamps.dim() > 0:
            if timestamps.numel():
                self.clock.clamp_(min=int(timestamps.max()))
        else:
            self.clock.clamp_(min=int(timestamps))
        if flat.numel() == 0:
            self.last_new_rows = torch.zeros(0, dtype=torch.int64)
            return flat.view(ids.shape)

        rows = self._probe(flat)
        missed = (rows == DEFAULT_ROW).nonzero().squeeze(1)
        new_rows = torch.zeros(0, dtype=torch.int64)
        new_prior = None
        if missed.numel():
            missed_ids = flat.index_select(0, missed)
            admitted = missed_ids > TOMBSTONE  # sentinel values are never admitted (they stay on row 0)
            estimate = None
            if self.admit == "probability":
                admitted &= self._admitted_by_hash(missed_ids)
            elif self.min_count > 1:
                estimate = self._sketch_add_and_estimate(missed_ids)
                admitted &= estimate >= self.min_count
            if bool(admitted.any()):
                positions = missed[admitted]
                new_ids, inverse, occurrences = torch.unique(
                    missed_ids[admitted], return_inverse=True, return_counts=True
                )
                granted = self._take_rows(new_ids.numel(), protected_rows=rows)
                if granted.numel() < new_ids.numel():  # table full of protected rows: the most seen first
                    order = torch.argsort(occurrences, descending=True, stable=True)
                    row_of_new = torch.zeros(new_ids.numel(), dtype=torch.int64)
                    row_of_new[order[: granted.numel()]] = granted
                    chosen = order[: granted.numel()]
                else:
                    row_of_new, chosen = granted, None
                placed_ids = new_ids if chosen is None else new_ids[chosen]
                if self._tombstones + self.num_admitted > _REBUILD_LOAD * self.slot_keys.numel():
                    self._rebuild()  # before inserting: keeps empty slots, so every probe ends
                self._insert(placed_ids, granted)
                self.row_ids.index_copy_(0, granted, placed_ids)
                rows.index_copy_(0, positions, row_of_new.index_select(0, inverse))
                self.admitted_count += granted.numel()
                new_rows = granted
                if estimate is not None:  # count the sightings that earned the row (this batch's come below)
                    prior = torch.zeros(new_ids.numel(), dtype=torch.float32)
                    prior.scatter_reduce_(0, inverse, estimate[admitted].float(), "amax", include_self=False)
                    prior = (prior - occurrences).clamp_(min=0)
                    new_prior = prior if chosen is None else prior[chosen]
            not_admitted = int((rows.index_select(0, missed) == DEFAULT_ROW).sum())
            self.not_admitted_count += not_admitted
            self.unknown_count += not_admitted

        self.policy.record(self, rows, flat.numel(), timestamps, new_rows, new_prior)
        expired = self.policy.expired_rows(self)
        if expired is not None:
            self._free(expired)
        self.last_new_rows = new_rows
        for weight, optimizer_state, std, state_value in self._attached:
            self.reinitialize(weight, optimizer_state, std=std, state_value=state_value)
        return rows.view(ids.shape)

    def _take_rows(self, wanted: int, protected_rows: torch.Tensor) -> torch.Tensor:
        """Pop up to ``wanted`` free rows, evicting a batch of rows first if there are too few."""
        if int(self.free_count) < wanted:
            self.evict(max(self.evict_batch, wanted - int(self.free_count)), protected_rows=protected_rows)
        count = min(wanted, int(self.free_count))
        top = int(self.free_count)
        taken = self.free_rows[top - count : top].flip(0).clone()
        self.free_count -= count
        return taken

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64:
            kind = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise TypeError(f"ManagedVocabulary: ids must be an int64 tensor, got {kind}")
        return ids.reshape(-1)

    # ------------------------------------------------------------------ re-initialisation

    @torch.no_grad()
    def reinitialize(
        self,
        table_weight: torch.Tensor,
        optimizer_state=None,
        std: float = 0.01,
        rows: torch.Tensor | None = None,
        state_value: float = 0.0,
    ) -> torch.Tensor:
        """Reset the rows assigned in the last call (or ``rows``): weights ~ N(0, std), optimizer state rows.

        Args:
            table_weight: the table, (num_rows, dim).
            optimizer_state: a tensor, or a dict / list of tensors (e.g. ``optimizer.state[weight]``);
                every tensor whose first dimension is the table's rows gets those rows set to
                ``state_value`` (row-wise Adagrad's per-row sum, Adam's moments); others (step
                counters) are left alone.
            std: standard deviation of the new weights.
            rows: rows to reset (default ``last_new_rows``).
            state_value: value for the optimizer state rows (e.g. Adagrad's initial accumulator).
        Returns:
            The rows reset.
        """
        rows = self.last_new_rows if rows is None else rows
        if table_weight.shape[0] != self.num_rows:
            raise ValueError(f"reinitialize: table has {table_weight.shape[0]} rows, vocabulary needs {self.num_rows}")
        if rows.numel() == 0:
            return rows
        fresh = torch.randn((rows.numel(), *table_weight.shape[1:]), dtype=torch.float32) * std
        table_weight.index_copy_(0, rows, fresh.to(table_weight.dtype))
        for state in _state_tensors(optimizer_state):
            if state.dim() >= 1 and state.shape[0] == table_weight.shape[0]:
                state.index_fill_(0, rows, state_value)
        return rows

    def attach(
        self, table_weight: torch.Tensor, optimizer_state=None, std: float = 0.01, state_value: float = 0.0
    ) -> None:
        """Re-initialise newly assigned rows of this table (and optimizer state) on every training call."""
        if table_weight.shape[0] != self.num_rows:
            raise ValueError(f"attach: table has {table_weight.shape[0]} rows, vocabulary needs {self.num_rows}")
        self._attached.append((table_weight, optimizer_state, std, state_value))
