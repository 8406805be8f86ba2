"""FLOPs per example against hand counts: an MLP, Wukong's optimized FM and blocks, whole models."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from terarec.config import ExperimentConfig, from_dict
from terarec.layers.fm import (
    FactorizationMachineBlock,
    LinearCompressBlock,
    OptimizedFM,
)
from terarec.layers.mlp import MLP
from terarec.models.wukong import WukongLayer
from terarec.scaling.flops import TRAIN_FACTOR, ctr_model_cost, forward_flops


def mlp_flops(widths: list[int]) -> int:
    """2 * in * out per Linear (a multiply and an add per weight); biases and ReLUs not counted."""
    return sum(2 * a * b for a, b in itertools.pairwise(widths))


def fm_flops(n: int, d: int, k: int) -> int:
    """X^T Y: (d x n)(n x k) is 2 n d k; X (X^T Y): (n x d)(d x k) is 2 n d k more."""
    return 2 * n * d * k + 2 * n * d * k


def layer_flops(n: int, d: int, n_f: int, n_l: int, k: int, hidden: list[int]) -> int:
    fmb = fm_flops(n, d, k) + mlp_flops([n * k, *hidden, n_f * d])
    lcb = 2 * n_l * n * d  # W_L (n_L x n) times X (n x d)
    residual = 2 * (n_f + n_l) * n * d if n != n_f + n_l else 0  # projection where the count changes
    return fmb + lcb + residual


def test_mlp_is_two_flops_per_weight() -> None:
    assert forward_flops(MLP(8, [16, 4], out_features=1), torch.zeros(5, 8)) == mlp_flops([8, 16, 4, 1])


def test_optimized_fm_hand_count() -> None:
    n, d, k = 10, 16, 4
    assert forward_flops(OptimizedFM(n, k), torch.zeros(3, n, d)) == fm_flops(n, d, k) == 4 * n * d * k


def test_fm_block_and_lcb_hand_counts() -> None:
    n, d, n_f, k = 10, 16, 6, 4
    block = FactorizationMachineBlock(n, d, n_f, k, hidden=[32])
    assert forward_flops(block, torch.zeros(2, n, d)) == fm_flops(n, d, k) + mlp_flops([n * k, 32, n_f * d])
    assert forward_flops(LinearCompressBlock(n, 5), torch.zeros(2, n, d)) == 2 * 5 * n * d


@pytest.mark.parametrize("n", [10, 12])
def test_wukong_layer_is_the_sum_of_its_blocks(n: int) -> None:
    layer = WukongLayer(n, 16, num_fm_embeddings=6, num_lcb_embeddings=6, fm_rank=4, fmb_mlp=[32])
    assert forward_flops(layer, torch.zeros(2, n, 16)) == layer_flops(n, 16, 6, 6, 4, [32])


def test_whole_wukong_excludes_the_lookup_and_trains_at_three_times(tiny_ctr: Path) -> None:
    # 4 sparse fields, no dense ones: X_0 is 4 x d, then l layers of n_F + n_L, then the top MLP.
    options = {"name": "wukong", "embedding_dim": 8, "num_layers": 2, "num_fm_embeddings": 3,
               "num_lcb_embeddings": 2, "fm_rank": 2, "fmb_mlp": [16], "top_mlp": [12]}
    config = from_dict(ExperimentConfig, {"task": "ctr", "data": {"path": str(tiny_ctr)}, "model": options})
    cost = ctr_model_cost(config)
    expected = layer_flops(4, 8, 3, 2, 2, [16]) + layer_flops(5, 8, 3, 2, 2, [16]) + mlp_flops([5 * 8, 12, 1])
    assert cost.forward_flops == expected
    assert cost.train_flops == TRAIN_FACTOR * expected
    assert cost.gflops == pytest.approx(expected / 1e9)


def test_dlrm_cost_is_its_top_mlp(tiny_ctr: Path) -> None:
    # No dense features: the top MLP sees 4 embeddings of d and their 6 pairwise dots. The dots
    # themselves are one batched product X X^T: 2 * n * n * d per example.
    options = {"name": "dlrm", "embedding_dim": 8, "top_mlp": [16]}
    config = from_dict(ExperimentConfig, {"task": "ctr", "data": {"path": str(tiny_ctr)}, "model": options})
    cost = ctr_model_cost(config)
    assert cost.forward_flops == mlp_flops([4 * 8 + 6, 16, 1]) + 2 * 4 * 4 * 8
