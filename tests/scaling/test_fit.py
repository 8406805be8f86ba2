"""The power-law fit recovers a known law; the gain-per-4x convention; the monotone check."""

from __future__ import annotations

import numpy as np
import pytest

from terarec.scaling.fit import fit_power_law, is_monotone


def test_fit_recovers_a_known_law() -> None:
    a, b, alpha = 0.42, 0.003, 0.35
    compute = np.geomspace(1e-5, 1e-2, 8)  # GFLOPs per example
    loss = a + b * compute ** (-alpha)
    fit = fit_power_law(compute, loss)
    assert fit.a == pytest.approx(a, abs=1e-4)
    assert fit.alpha == pytest.approx(alpha, rel=1e-2)
    assert fit.b == pytest.approx(b, rel=2e-2)
    assert fit.r2 > 0.9999
    assert fit.predict(compute) == pytest.approx(loss, abs=1e-6)


def test_fit_with_noise_and_a_floor() -> None:
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e-5, 1e-2, 7)
    loss = 0.45 + 0.01 * (compute / 1e-5) ** (-0.5) + rng.normal(0, 2e-4, compute.size)
    fit = fit_power_law(compute, loss, floor=0.44)
    assert 0.44 <= fit.a <= loss.min()
    assert fit.alpha == pytest.approx(0.5, abs=0.15)
    assert fit.r2 > 0.98


def test_gain_per_4x_reads_the_curve_at_the_largest_compute() -> None:
    compute = np.array([1.0, 4.0, 16.0, 64.0])
    loss = 0.5 + 0.1 * compute ** (-0.5)  # L(64) = 0.5125, L(16) = 0.525
    fit = fit_power_law(compute, loss)
    assert fit.gain_per_4x == pytest.approx(0.0125, rel=1e-3)
    assert fit.relative_gain_per_4x == pytest.approx(0.0125 / 0.5125, rel=1e-3)
    assert set(fit.to_dict()) >= {"a", "b", "alpha", "r2", "gain_per_4x", "relative_gain_per_4x"}


def test_fit_needs_three_points() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([1.0, 2.0], [0.5, 0.4])


def test_monotone_allows_noise_against_every_cheaper_point() -> None:
    assert is_monotone([1, 2, 3], [0.50, 0.4903, 0.4900])
    assert is_monotone([3, 1, 2], [0.4900, 0.50, 0.4904])  # order of the input does not matter
    assert not is_monotone([1, 2, 3], [0.50, 0.49, 0.4906])
    # a slow drift up, each step within the noise, still counts against the best cheaper point
    assert not is_monotone([1, 2, 3, 4], [0.49, 0.4904, 0.4908, 0.4912])
