"""Power-law fits of quality against compute: LogLoss = a + b * C^(-alpha).

``C`` is compute per example (GFLOPs of the dense forward, ``terarec.scaling.flops``); ``a``
is the loss an unbounded model of this family would approach, ``alpha`` how fast it gets
there. The gain per 4x compute is read off the fitted curve at the largest compute measured:

    gain_per_4x          = L(C_max / 4) - L(C_max)          (absolute LogLoss, > 0 is better)
    relative_gain_per_4x = gain_per_4x / L(C_max)           (fraction of LogLoss)

The Wukong paper quotes its scaling law as about 0.1% quality (LogLoss) improvement per 4x
compute, i.e. ``relative_gain_per_4x`` of about 0.001.

Example:
    >>> fit = fit_power_law([1e-5, 1e-4, 1e-3], [0.60, 0.55, 0.53])
    >>> round(fit.alpha, 3), round(fit.r2, 3), round(fit.gain_per_4x, 4)  # three points: an exact fit
    (0.398, 1.0, 0.0098)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

MONOTONE_TOLERANCE = 0.0005


@dataclass
class PowerLawFit:
    """A fitted LogLoss = a + b * C^(-alpha) over points with compute in [c_min, c_max].

    Args:
        a: the asymptote (loss at unbounded compute).
        b: the scale (in the units of C given to the fit).
        alpha: the exponent.
        r2: coefficient of determination of the fit on its points.
        num_points: points fitted.
        c_min: smallest compute fitted.
        c_max: largest compute fitted.
    """

    a: float
    b: float
    alpha: float
    r2: float
    num_points: int
    c_min: float
    c_max: float

    def predict(self, compute: Any) -> np.ndarray:
        """Predicted LogLoss at ``compute`` (scalar or array)."""
        return self.a + self.b * np.asarray(compute, dtype=np.float64) ** (-self.alpha)

    @property
    def gain_per_4x(self) -> float:
        """L(C_max / 4) - L(C_max): LogLoss the last 4x of compute bought."""
        return float(self.predict(self.c_max / 4) - self.predict(self.c_max))

    @property
    def relative_gain_per_4x(self) -> float:
        """gain_per_4x as a fraction of L(C_max) (the paper's "0.1% per 4x" is 0.001)."""
        return self.gain_per_4x / float(self.predict(self.c_max))

    def to_dict(self) -> dict[str, float]:
        record = asdict(self)
        record.update(gain_per_4x=self.gain_per_4x, relative_gain_per_4x=self.relative_gain_per_4x)
        return record


def _law(scaled_compute: np.ndarray, a: float, b: float, alpha: float) -> np.ndarray:
    return a + b * scaled_compute ** (-alpha)


def fit_power_law(compute: Sequence[float], loss: Sequence[float], floor: float | None = None) -> PowerLawFit:
    """Least-squares fit of ``loss = a + b * compute^(-alpha)`` with ``a`` in [floor, min(loss)].

    Compute is rescaled by its smallest value for the fit (well-conditioned b), then b is
    mapped back to the caller's units. Several starting exponents are tried; the best wins.

    Args:
        compute: compute per point (> 0), e.g. GFLOPs per example.
        loss: the measured LogLoss of each point.
        floor: a known lower bound on ``a`` (e.g. the Bayes-optimal LogLoss); 0 otherwise.

    Raises:
        ValueError: fewer than 3 points, or compute not positive.
    """
    compute = np.asarray(compute, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if compute.shape != loss.shape or compute.size < 3:
        raise ValueError(f"fit_power_law: need at least 3 (compute, loss) pairs, got {compute.size} and {loss.size}")
    if np.any(compute <= 0) or not np.all(np.isfinite(loss)):
        raise ValueError("fit_power_law: compute must be > 0 and loss finite")
    reference = compute.min()
    scaled = compute / reference
    spread = max(float(loss.max() - loss.min()), 1e-6)
    a_low = 0.0 if floor is None else float(floor)
    a_high = float(loss.min())
    if a_low >= a_high:  # a point at (or below) the floor: the asymptote can only be the floor
        a_low = a_high - 1e-9
    lower, upper = [a_low, 0.0, 1e-4], [a_high, np.inf, 5.0]
    best, best_sse = None, np.inf
    for alpha0 in (0.05, 0.15, 0.4, 1.0, 2.5):
        for depth in (0.1, 1.0, 5.0):
            a0 = float(np.clip(a_high - depth * spread, a_low + 1e-12, a_high - 1e-12))
            b0 = max(float(loss[np.argmin(scaled)]) - a0, 1e-6)
            try:
                with warnings.catch_warnings():  # exact or 3-point fits leave no covariance to estimate
                    warnings.simplefilter("ignore", OptimizeWarning)
                    params, _ = curve_fit(_law, scaled, loss, p0=[a0, b0, alpha0], bounds=(lower, upper),
                                          maxfev=20000)
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum((_law(scaled, *params) - loss) ** 2))
            if sse < best_sse:
                best, best_sse = params, sse
    if best is None:
        raise ValueError("fit_power_law: no fit converged")
    a, b_scaled, alpha = (float(v) for v in best)
    total = float(np.sum((loss - loss.mean()) ** 2))
    r2 = 1.0 - best_sse / total if total > 0 else 1.0
    return PowerLawFit(a=a, b=b_scaled * reference**alpha, alpha=alpha, r2=r2, num_points=int(compute.size),
                       c_min=float(compute.min()), c_max=float(compute.max()))


def is_monotone(compute: Sequence[float], loss: Sequence[float], tolerance: float = MONOTONE_TOLERANCE) -> bool:
    """True when no point is worse than any cheaper point by more than ``tolerance``:
    for every i, j with C_i < C_j, L_j <= L_i + tolerance."""
    order = np.argsort(np.asarray(compute, dtype=np.float64), kind="stable")
    best = np.inf
    for value in np.asarray(loss, dtype=np.float64)[order]:
        if value > best + tolerance:
            return False
        best = min(best, value)
    return True
