"""The scaling chart: test LogLoss against compute per example, one curve per model family."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terarec.scaling.fit import PowerLawFit

COLOURS = {"wukong": "tab:red", "dlrm": "tab:blue", "dcnv2": "tab:green"}
MARKERS = {"wukong": "o", "dlrm": "s", "dcnv2": "^"}


def plot_scaling(
    families: dict[str, tuple[Sequence[float], Sequence[float]]],
    fits: dict[str, PowerLawFit | None],
    path: str | Path,
    floor: float | None = None,
    title: str = "Test LogLoss against compute",
) -> Path:
    """Write a PNG: log-scale GFLOPs/example on x, test LogLoss on y, measured points and
    each family's fitted power law (dashed), and the Bayes floor where known.

    Args:
        families: family name -> (GFLOPs per example, test LogLoss) of its points.
        fits: family name -> its fit (None where it could not be fitted).
        path: the PNG to write.
        floor: the Bayes-optimal LogLoss, drawn as a dotted line.
        title: the chart's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    cycle = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for name, (compute, loss) in families.items():
        colour = COLOURS.get(name) or next(cycle)
        compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
        fit = fits.get(name)
        label = name if fit is None else f"{name}: alpha {fit.alpha:.2f}, R² {fit.r2:.3f}"
        axes.scatter(compute, loss, color=colour, marker=MARKERS.get(name, "o"), zorder=3, label=label)
        if fit is not None:
            grid = np.geomspace(fit.c_min / 1.3, fit.c_max * 1.3, 200)
            axes.plot(grid, fit.predict(grid), color=colour, linestyle="--", linewidth=1.2)
    if floor is not None:
        axes.axhline(floor, color="grey", linestyle=":", linewidth=1.0, label=f"Bayes floor {floor:.4f}")
    axes.set_xscale("log")
    axes.set_xlabel("dense forward GFLOPs / example (log scale)")
    axes.set_ylabel("test LogLoss")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return path
