"""Tests for terarec.scaling.embedding_search: the reward, the candidates, successive halving and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from terarec.config import parse_config
from terarec.scaling.embedding_search import (
    Candidate,
    SuccessiveHalving,
    make_candidates,
    reward,
    search_embeddings,
    widths_below,
)
from terarec.embedding.sized import table_bytes
from terarec.train.experiment import load_config
from terarec.train.tasks import build_task
from tests.train.test_train import _ctr_config


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_reward_charges_only_bytes_over_the_budget() -> None:
    assert reward(0.9, 500, 1000, 2.0) == 0.9
    assert reward(0.9, 1000, 1000, 2.0) == 0.9
    assert reward(0.9, 1100, 1000, 2.0) == pytest.approx(0.9 - 2.0 * 0.1)
    assert widths_below(16) == [16, 8, 4] and widths_below(10) == [10, 4]


def test_candidates_hold_the_baselines_and_draws_under_the_budget() -> None:
    rows = {"user": 1000, "item": 5000, "city": 20}
    cost = {"uniform-d32": 10**9}

    def bytes_of(candidate: Candidate) -> int:  # a stand-in: rows x mean width
        widths = {n: candidate.dims.get(n, 32) for n in rows}
        for name, band in candidate.band_widths.items():
            widths[name] = sum(band) / len(band) if band else 32
        return cost.get(candidate.name, int(sum(rows[n] * widths[n] * 4 for n in rows)))

    budget = 0.5 * bytes_of(Candidate("all", "uniform"))
    candidates = make_candidates(rows, 32, 4, budget, count=5, seed=1, bytes_of=bytes_of)
    names = [c.name for c in candidates]
    assert names[:8] == ["uniform-d32", "uniform-d16", "uniform-d8", "model-d16", "model-d8", "rule-a0.25",
                         "rule-a0.5", "rule-a1"]
    assert candidates[1].dims == {"user": 16, "item": 16, "city": 16}
    assert (candidates[3].model_dim, candidates[3].dims, candidates[0].model_dim) == (16, {}, None)
    assert sorted(candidates[5].band_widths) == ["item", "user"]  # city is under min_rows
    drawn = [c for c in candidates if c.kind == "search"]
    assert len(drawn) == 5 and all(bytes_of(c) <= budget for c in drawn)
    for candidate in drawn:
        assert "city" not in candidate.band_widths
        for band in candidate.band_widths.values():
            assert len(band) == 4 and band == sorted(band, reverse=True)
    again = make_candidates(rows, 32, 4, budget, count=5, seed=1, bytes_of=bytes_of)
    assert [c.dims for c in again] == [c.dims for c in candidates]


def test_a_model_width_candidate_has_no_projections_and_half_the_bytes(ctr_data: Path, tmp_path: Path) -> None:
    config = _ctr_config(ctr_data, tmp_path, "data.sparse=[user_id, item_id, device]",
                         "model={name: embedding_mlp, embedding_dim: 16, hidden: [32]}")
    uniform = table_bytes(build_task(config).model)
    half_model = Candidate("model-d8", "model", model_dim=8)
    narrowed = half_model.configure(config, num_bands=4)
    assert narrowed.model["embedding_dim"] == 8 and config.model["embedding_dim"] == 16  # a copy
    assert table_bytes(build_task(narrowed).model) * 2 == uniform  # tables only: no d x w projections
    # Tables 8 wide under the 16-wide model pay a 16 x 8 projection per feature on top of half the tables.
    projected = Candidate("uniform-d8", "uniform", dims={n: 8 for n in ("user_id", "item_id", "device")})
    assert table_bytes(build_task(projected.configure(config, 4)).model) == uniform // 2 + 3 * 16 * 8 * 4
    # Its overrides (what bench/embedding_search.py trains) narrow the model the same way.
    again = load_config(None, ["name=xor", "task=ctr", "model={name: embedding_mlp, embedding_dim: 16}",
                               *half_model.overrides(4)])
    assert again.model["embedding_dim"] == 8 and again.embedding.dims == {}


@pytest.mark.slow
def test_successive_halving_trains_the_better_half_longer_and_writes_its_choice(ctr_data: Path, tmp_path: Path) -> None:
    config = _ctr_config(ctr_data, tmp_path, "data.sparse=[user_id, item_id, device]",
                         "model={name: embedding_mlp, embedding_dim: 16, hidden: [32]}", "train.patience=3")
    result, files = search_embeddings(config, tmp_path / "search", budget_share=0.5, count=1, rungs=2, eta=2,
                                      num_bands=2, progress=False)
    assert len(result.candidates) == 9  # 3 uniform, 2 model widths, 3 rule, 1 drawn
    uniform = next(c for c in result.candidates if c.name == "uniform-d16")
    assert uniform.bytes == result.uniform_bytes and result.budget_bytes == result.uniform_bytes // 2
    assert next(c for c in result.candidates if c.name == "model-d8").bytes == result.budget_bytes
    by_epochs = sorted(c.epochs for c in result.candidates)
    assert by_epochs == [1, 1, 1, 1, 1, 2, 2, 2, 2]  # 9 // 2 = 4 go on to the second rung
    longer = [c for c in result.candidates if c.epochs == 2]
    rewards = {c.name: reward(c.history[0][1], c.bytes, result.budget_bytes, 1.0) for c in result.candidates}
    assert min(rewards[c.name] for c in longer) >= max(rewards[c.name] for c in result.candidates if c.epochs == 1)
    assert result.chosen in longer and result.reward(result.chosen) == max(result.reward(c) for c in longer)

    chosen = parse_config(files["config"])
    assert chosen.embedding.dims == result.chosen.dims
    assert chosen.model["embedding_dim"] == (result.chosen.model_dim or 16)
    # The candidates ran without early stopping or checkpoints; the written config keeps the user's settings.
    assert (chosen.train.patience, chosen.train.checkpoint) == (config.train.patience, config.train.checkpoint)
    table = json.loads(files["candidates"].read_text())
    assert table["chosen"] == result.chosen.name and len(table["candidates"]) == 9
    assert files["plot"].stat().st_size > 10_000
    # The written config builds the chosen tables.
    assert table_bytes(build_task(chosen).model) == result.chosen.bytes


def test_only_names_existing_candidates(ctr_data: Path, tmp_path: Path) -> None:
    config = _ctr_config(ctr_data, tmp_path, "model={name: embedding_mlp, embedding_dim: 16, hidden: [32]}")
    with pytest.raises(ValueError, match="--only: no candidates named model-d2 .*model-d8"):
        search_embeddings(config, tmp_path / "search", count=0, only=["model-d8", "model-d2"], progress=False)


def test_a_candidate_resumed_after_others_repeats_its_run_alone(ctr_data: Path, tmp_path: Path) -> None:
    # Dropout draws from the global random state: the other candidate's rung must not change the survivor's.
    config = _ctr_config(ctr_data, tmp_path,
                         "model={name: embedding_mlp, embedding_dim: 8, hidden: [32], dropout: 0.5}")

    def search(candidates: list[Candidate], folder: str) -> Candidate:
        halving = SuccessiveHalving(config, budget_bytes=10**9, eta=2, min_epochs=1, rungs=2,
                                    work_dir=tmp_path / folder)
        return halving.run(candidates, progress=False).chosen

    narrow = Candidate("uniform-d4", "uniform", dims={"item_id": 4})
    together = search([Candidate("uniform-d8", "uniform"), narrow], "a")
    alone = search([Candidate(together.name, "uniform", dims=dict(together.dims))], "b")
    assert together.epochs == 2 and together.history == alone.history
