"""Tests for terarec.eval.protocols and ranking evaluation under them, on data where targets repeat.

The fixture gives users histories drawn with replacement from a small catalogue, so many
valid / test targets repeat an item the user already had, and histories are longer than the
small ``max_length`` windows used below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import terarec.eval.protocols as protocols
from terarec.config import ConfigError, EvalConfig
from terarec.train.experiment import load_config
from terarec.data.sequence_dataset import SequenceDataset, SequenceSpec
from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.eval.evaluate import evaluate_ranking
from terarec.eval.protocols import PROTOCOLS, exclude_seen, exclusion_mask, rank_targets, sampled_negatives
from terarec.features.hashing import hash_ints
from terarec.embedding.exact_vocabulary import ExactVocabulary

NUM_ITEMS = 40  # raw item ids 1..40 -> catalogue rows 1..40 (row 0: unknown ids)
NUM_USERS = 60


def repeat_histories(seed: int = 0) -> dict[int, list[int]]:
    """user -> items oldest first, drawn with replacement (repeats, repeated targets included)."""
    rng = np.random.default_rng(seed)
    return {user: rng.integers(1, NUM_ITEMS + 1, int(rng.integers(4, 30))).tolist() for user in range(NUM_USERS)}


def write_events(folder: Path, histories: dict[int, list[int]]) -> Path:
    users = [u for u, items in histories.items() for _ in items]
    items = [i for h in histories.values() for i in h]
    timestamps = [t for h in histories.values() for t in range(len(h))]
    table = pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                      "timestamp": pa.array(timestamps, pa.int64())})
    write_dataset(SourceData("repeats", "test", "events", [table]), folder, progress=False)  # leave-one-out
    return folder


def without_repeated_targets(histories: dict[int, list[int]]) -> dict[int, list[int]]:
    """The same histories, each test target that repeats an earlier item replaced by an unseen one."""
    out = {}
    for user, items in histories.items():
        *before, target = items
        if target in before:
            target = min(set(range(1, NUM_ITEMS + 1)) - set(before))
        out[user] = before + [target]
    return out


@pytest.fixture(scope="module")
def histories() -> dict[int, list[int]]:
    return repeat_histories()


@pytest.fixture(scope="module")
def repeat_folder(tmp_path_factory: pytest.TempPathFactory, histories: dict[int, list[int]]) -> Path:
    return write_events(tmp_path_factory.mktemp("repeats") / "ds", histories)


@pytest.fixture(scope="module")
def fresh_folder(tmp_path_factory: pytest.TempPathFactory, histories: dict[int, list[int]]) -> Path:
    return write_events(tmp_path_factory.mktemp("fresh") / "ds", without_repeated_targets(histories))


class UserScores(torch.nn.Module):
    """Scores that depend on the user only (not on the history window, not on the target)."""

    def __init__(self) -> None:
        super().__init__()
        self.vocabulary = ExactVocabulary(hash_ints(np.arange(1, NUM_ITEMS + 1), "item_id"))

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vocabulary(ids)

    def score_catalogue(self, batch) -> torch.Tensor:
        rows = torch.arange(self.vocabulary.num_rows, dtype=torch.float64)
        scores = torch.round(torch.sin(batch.user_ids.double().unsqueeze(1) * 1.7 + rows * 0.37), decimals=1)
        scores[:, 0] = -torch.inf  # ties on purpose: rounding to 0.1
        return scores


def test_fixture_has_repeated_targets_and_long_histories(histories: dict[int, list[int]]) -> None:
    repeated = sum(items[-1] in items[:-1] for items in histories.values())
    assert 10 <= repeated <= NUM_USERS - 10
    assert max(len(items) for items in histories.values()) > 20
    fresh = without_repeated_targets(histories)
    assert not any(items[-1] in items[:-1] for items in fresh.values())


# ----------------------------------------------------------------------------- must show


@pytest.mark.parametrize("protocol", ["exclude_history", "allow_repeats"])
def test_candidates_do_not_depend_on_whether_the_target_repeats(
    repeat_folder: Path, fresh_folder: Path, histories: dict[int, list[int]], protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scores a user's target is ranked among are the same whether or not the target is one
    of the user's earlier items: the candidate set never looks at the target."""
    ranked: dict[str, dict[int, torch.Tensor]] = {}
    recorded: list[torch.Tensor] = []
    real_rank = protocols.rank_of_targets

    def spy(scores, targets):
        recorded.append(scores.clone())
        return real_rank(scores, targets)

    monkeypatch.setattr(protocols, "rank_of_targets", spy)
    model = UserScores()
    for name, folder in (("repeats", repeat_folder), ("fresh", fresh_folder)):
        recorded.clear()
        batches = list(SequenceDataset(folder, "test", SequenceSpec(max_length=3), batch_size=16))
        evaluate_ranking(model, batches, [5], protocol)
        users = torch.cat([b.user_ids for b in batches]).tolist()
        ranked[name] = dict(zip(users, torch.cat(recorded)))
    assert sorted(ranked["repeats"]) == sorted(ranked["fresh"]) == sorted(histories)
    for user in histories:
        assert torch.equal(ranked["repeats"][user], ranked["fresh"][user]), user
    if protocol == "exclude_history":  # a repeated target is not among them: a miss
        for user, items in histories.items():
            if items[-1] in items[:-1]:
                target_row = int(model.item_rows(torch.from_numpy(hash_ints(np.array([items[-1]]), "item_id")))[0])
                assert ranked["repeats"][user][target_row] == -torch.inf


def test_repeated_target_counts_as_miss_and_is_counted(repeat_folder: Path, histories: dict[int, list[int]]) -> None:
    model = UserScores()
    batches = list(SequenceDataset(repeat_folder, "test", SequenceSpec(max_length=3), batch_size=16))
    metrics = evaluate_ranking(model, batches, [5, NUM_ITEMS], "exclude_history")
    repeated = sum(items[-1] in items[:-1] for items in histories.values())
    assert metrics["repeated_targets"] == repeated and metrics["count"] == NUM_USERS
    assert metrics["protocol"] == "exclude_history"
    # Every repeated target is a miss even at a cut-off as large as the catalogue.
    assert metrics[f"hr@{NUM_ITEMS}"] == pytest.approx((NUM_USERS - repeated) / NUM_USERS)
    allowed = evaluate_ranking(model, batches, [5, NUM_ITEMS], "allow_repeats")
    assert allowed["repeated_targets"] == repeated and allowed[f"hr@{NUM_ITEMS}"] == 1.0


# ----------------------------------------------------------------------------- full history


@pytest.mark.parametrize("split", ["valid", "test"])
def test_seen_items_are_the_full_history_whatever_max_length(
    repeat_folder: Path, histories: dict[int, list[int]], split: str
) -> None:
    item_of_id = {int(h): i for i, h in enumerate(hash_ints(np.arange(NUM_ITEMS + 1), "item_id"))}
    cut = {"valid": 2, "test": 1}[split]  # leave-one-out: the target is the second to last / last event
    for max_length in (1, 3, 100):
        seen, windows = {}, {}
        for batch in SequenceDataset(repeat_folder, split, SequenceSpec(max_length=max_length), batch_size=16):
            seen_lists = torch.split(batch.seen_item_ids.values(), batch.seen_item_ids.lengths().tolist())
            window_lists = torch.split(batch.item_ids.values(), batch.lengths.tolist())
            for user, items, window in zip(batch.user_ids.tolist(), seen_lists, window_lists):
                seen[user] = [item_of_id[int(i)] for i in items]
                windows[user] = [item_of_id[int(i)] for i in window]
        expected = {u: items[: len(items) - cut] for u, items in histories.items() if len(items) > cut}
        assert seen == expected, max_length
        assert windows == {u: items[-max_length:] for u, items in expected.items()}, max_length


def test_seen_items_travel_with_evaluation_batches_only(repeat_folder: Path) -> None:
    batch = next(iter(SequenceDataset(repeat_folder, "test", batch_size=8)))
    moved = batch.to("cpu")
    assert torch.equal(moved.seen_item_ids.values(), batch.seen_item_ids.values())
    assert torch.equal(moved.seen_item_ids.lengths(), batch.seen_item_ids.lengths())
    assert next(iter(SequenceDataset(repeat_folder, "train", batch_size=8))).seen_item_ids is None


def test_metrics_do_not_move_with_max_length(repeat_folder: Path) -> None:
    """A model that ignores the window ranks among the same candidates at every max_length."""
    model = UserScores()
    figures = [
        evaluate_ranking(model, SequenceDataset(repeat_folder, "test", SequenceSpec(max_length=m)), [5, 10])
        for m in (1, 4, 100)
    ]
    assert figures[0] == figures[1] == figures[2]


# ----------------------------------------------------------------------------- brute force


def _random_case(seed: int, batch: int = 24, num_items: int = 30):
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.integers(0, 6, (batch, num_items)).astype(np.float64))  # many ties
    scores[:, 0] = -torch.inf
    targets = torch.from_numpy(rng.integers(1, num_items, batch))
    seen = [rng.integers(0, num_items, int(rng.integers(0, 12))).tolist() for _ in range(batch)]
    for row in range(0, batch, 3):  # a third of the targets repeat
        seen[row].append(int(targets[row]))
    seen_rows = torch.tensor([i for s in seen for i in s], dtype=torch.int64)
    seen_lengths = torch.tensor([len(s) for s in seen])
    return scores, targets, seen, seen_rows, seen_lengths


def _reference_rank(scores: torch.Tensor, row: int, target: int, candidates: list[int]) -> int:
    return sum(1 for j in candidates if j != target and scores[row, j] >= scores[row, target])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_ranking_protocols_match_bruteforce(seed: int) -> None:
    scores, targets, seen, seen_rows, seen_lengths = _random_case(seed)
    num_items = scores.shape[1]
    for protocol in ("exclude_history", "allow_repeats"):
        ranks, repeated = rank_targets(scores, targets, seen_rows, seen_lengths, protocol)
        for row, target in enumerate(targets.tolist()):
            history = set(seen[row]) - {0}
            assert repeated[row] == (target in history)
            if protocol == "allow_repeats":
                expected = _reference_rank(scores, row, target, list(range(num_items)))
            elif target in history:
                expected = num_items - 1  # not a candidate: last place
            else:
                expected = _reference_rank(scores, row, target, [j for j in range(num_items) if j not in history])
            assert ranks[row] == expected, (protocol, row)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_protocol_matches_bruteforce(seed: int) -> None:
    scores, targets, seen, seen_rows, seen_lengths = _random_case(seed)
    user_ids = torch.arange(100, 100 + len(targets))
    excluded = exclusion_mask(seen_rows, seen_lengths, scores.shape[1])
    negatives = sampled_negatives(user_ids, excluded, targets, 20, seed=7)
    ranks, repeated = rank_targets(scores, targets, seen_rows, seen_lengths, "sampled", user_ids, 20, seed=7)
    for row, target in enumerate(targets.tolist()):
        history = set(seen[row])
        drawn = negatives[row].tolist()
        assert len(drawn) == 20 and not ({0, target} | history) & set(drawn), row
        if target in history:
            assert repeated[row] and ranks[row] == 20
        else:
            assert ranks[row] == sum(1 for j in drawn if scores[row, j] >= scores[row, target]), row


def test_sampled_negatives_are_fixed_per_user_and_seed() -> None:
    scores, targets, _, seen_rows, seen_lengths = _random_case(3)
    user_ids = torch.arange(len(targets)) * 13
    excluded = exclusion_mask(seen_rows, seen_lengths, scores.shape[1])
    whole = sampled_negatives(user_ids, excluded, targets, 50, seed=0)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    shuffled = sampled_negatives(user_ids[order], excluded[order], targets[order], 50, seed=0)
    assert torch.equal(shuffled, whole[order])  # batching and order do not matter
    assert not torch.equal(sampled_negatives(user_ids, excluded, targets, 50, seed=1), whole)


def test_sampled_negatives_cover_the_allowed_items_only() -> None:
    excluded = torch.zeros(1, 8, dtype=torch.bool)
    excluded[0, [2, 5]] = True
    draws = sampled_negatives(torch.tensor([3]), excluded, torch.tensor([7]), 400, seed=0)
    assert set(draws[0].tolist()) == {1, 3, 4, 6}  # not row 0, not seen, not the target
    with pytest.raises(ValueError, match="user 3 has seen every catalogue item"):
        sampled_negatives(torch.tensor([3]), torch.ones(1, 8, dtype=torch.bool), torch.tensor([7]), 5, seed=0)


def test_sampled_evaluation_does_not_depend_on_batch_size(repeat_folder: Path) -> None:
    model = UserScores()
    figures = [
        evaluate_ranking(model, SequenceDataset(repeat_folder, "test", batch_size=size), [5], "sampled", 10, seed=3)
        for size in (7, 64)
    ]
    assert figures[0] == figures[1]
    assert figures[0]["protocol"] == "sampled" and figures[0]["repeated_targets"] > 0


def test_exclude_seen_and_mask() -> None:
    scores = torch.tensor([[-torch.inf, 1.0, 2.0, 3.0], [-torch.inf, 1.0, 2.0, 3.0]])
    masked = exclude_seen(scores, torch.tensor([3, 3, 0, 1]), torch.tensor([2, 2]))
    assert masked.tolist() == [[-torch.inf, 1.0, 2.0, -torch.inf], [-torch.inf, -torch.inf, 2.0, 3.0]]
    assert scores[0, 3] == 3.0  # the input is left as it was
    with pytest.raises(ValueError, match="sum to"):
        exclusion_mask(torch.tensor([1, 2]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="catalogue rows"):
        exclusion_mask(torch.tensor([4]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="protocol must be one of"):
        rank_targets(scores, torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([1, 0]), "full")


# ----------------------------------------------------------------------------- config


def test_eval_protocol_config() -> None:
    assert EvalConfig().protocol == "exclude_history" and PROTOCOLS == ("exclude_history", "allow_repeats", "sampled")
    config = load_config(None, ["eval.protocol=sampled", "eval.num_sampled=50"])
    assert (config.eval.protocol, config.eval.num_sampled) == ("sampled", 50)
    with pytest.raises(ConfigError, match="eval.protocol"):
        load_config(None, ["eval.protocol=full"])
    with pytest.raises(ConfigError, match="protocol: allow_repeats"):
        load_config(None, ["eval.exclude_history=false"])
    with pytest.raises(ConfigError, match="contradicts"):
        load_config(None, ["eval.exclude_history=true", "eval.protocol=allow_repeats"])
    with pytest.raises(ConfigError, match="num_sampled"):
        load_config(None, ["eval.num_sampled=0"])
    old = load_config(None, ["eval.exclude_history=true"])  # a config written before eval.protocol
    assert old.eval.protocol == "exclude_history" and old.eval.exclude_history is None
