"""Embedding sizes chosen by search: per-feature and per-band widths against validation quality and table bytes.

Neural Input Search (Joglekar et al. 2019, "Neural Input Search for Large Scale Recommendation
Models") chooses each feature's vocabulary size and embedding width with a REINFORCE controller
over a shared super-network, rewarded by

    R = Q(valid) - lambda * C(bytes),        C = max(0, bytes / budget - 1)

(quality minus a cost that bites once the tables exceed the memory budget). Here the same reward
ranks candidates drawn from the same space, but the search is successive halving (Jamieson and
Talwalkar 2016; Li et al. 2017, Hyperband) over independently trained candidates: every
candidate trains ``min_epochs``, the better 1/eta by R train eta times longer, and so on, so most
of the compute goes to the promising sizings. NIS's shared super-network with a REINFORCE
controller is not implemented: on a 2-core box a few short independent runs are the cheaper search,
and bench/embedding_search.py measures what this one finds.

The space, per feature f with R_f rows and the model's width d:
* a whole table of width w in {d, d/2, d/4, d/8} (multiples of 4, >= 4), projected to d
  (``embedding.dims``);
* the model itself at a narrower width w in {d/2, d/4} with every table w wide (``model.embedding_dim``):
  no projections, so it costs exactly w/d of the uniform tables (a w-wide table under a d-wide
  model pays a d x w projection per feature, which puts "every table d/2 wide" just over a half-bytes
  budget); the dense parts narrow with it (DLRM's bottom MLP output and interactions);
* for features with at least ``min_rows`` rows: frequency bands (Ginart et al. 2019), each band a
  width from the same set, non-increasing from the most to the least frequent band
  (``embedding.bands.widths``).
The candidates: the uniform widths (baselines), the model at d/2 and d/4, Ginart's rule at a few
alphas, and seeded random draws (at the model's d) from the space under the budget.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from terarec.config import BandsConfig, EmbeddingConfig, ExperimentConfig, to_yaml
from terarec.models import check_model_options
from terarec.train.logs import RunLogs
from terarec.train.loop import Trainer, rng_state, set_rng_state
from terarec.train.setup import seed_everything, set_threads
from terarec.train.tasks import Task, task_class

RULE_ALPHAS = (0.25, 0.5, 1.0)


@dataclass
class Candidate:
    """One sizing of the tables: what it changes in ``embedding:``, and how it did.

    Args:
        name: ``uniform-d16``, ``rule-a0.5``, ``search-3``, ...
        kind: ``uniform``, ``model`` (the model at ``model_dim``, every table that wide), ``rule`` or ``search``.
        dims: feature -> whole-table width (features not named: the model's width).
        band_widths: feature -> widths of its bands.
        alpha: the rule's alpha (``rule`` candidates).
        model_dim: the model's ``embedding_dim`` (None: the config's).
        bytes: table bytes (``terarec.embedding.sized.table_bytes``).
        metric: the validation metric at the last rung it reached.
        epochs: epochs trained.
        history: (epochs, metric) at each rung.
    """

    name: str
    kind: str
    dims: dict[str, int] = field(default_factory=dict)
    band_widths: dict[str, list[int]] = field(default_factory=dict)
    alpha: float | None = None
    model_dim: int | None = None
    bytes: int = 0
    metric: float = float("nan")
    epochs: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def embedding(self, base: EmbeddingConfig, num_bands: int) -> EmbeddingConfig:
        """``base`` with this candidate's sizing."""
        if self.kind == "rule":
            bands = BandsConfig(num_bands=num_bands, alpha=self.alpha, features=sorted(self.band_widths))
        else:
            bands = BandsConfig(widths=self.band_widths)
        return dataclasses.replace(base, dims=dict(self.dims), bands=bands)

    def configure(self, config: ExperimentConfig, num_bands: int) -> ExperimentConfig:
        """A copy of ``config`` with this candidate's sizing: its ``embedding:`` section and model width."""
        config = copy.deepcopy(config)
        config.embedding = self.embedding(config.embedding, num_bands)
        if self.model_dim is not None:
            config.model["embedding_dim"] = self.model_dim
        return config

    def overrides(self, num_bands: int) -> list[str]:
        """This candidate's sizing as dotted overrides (``terarec train CONFIG ...``) of a config without sizing."""
        sizing = self.embedding(EmbeddingConfig(), num_bands)
        bands = sizing.bands
        return [f"embedding.dims={json.dumps(sizing.dims)}", f"embedding.bands.widths={json.dumps(bands.widths)}",
                f"embedding.bands.num_bands={bands.num_bands}", f"embedding.bands.alpha={bands.alpha}",
                f"embedding.bands.features={json.dumps(bands.features)}",
                *([f"model.embedding_dim={self.model_dim}"] if self.model_dim is not None else [])]


@dataclass
class SearchResult:
    """Every candidate evaluated, the chosen one, and the reward's terms."""

    candidates: list[Candidate]
    chosen: Candidate
    budget_bytes: int
    cost_weight: float
    metric: str
    uniform_bytes: int

    def reward(self, candidate: Candidate) -> float:
        return reward(candidate.metric, candidate.bytes, self.budget_bytes, self.cost_weight)


def reward(metric: float, table_bytes: int, budget_bytes: int, cost_weight: float) -> float:
    """NIS's reward: quality minus ``cost_weight`` times the relative excess of bytes over the budget.

    Example:
        >>> reward(0.98, 600, 1000, 1.0), round(reward(0.98, 1500, 1000, 1.0), 3)
        (0.98, 0.48)
    """
    return metric - cost_weight * max(0.0, table_bytes / budget_bytes - 1.0)


def widths_below(d: int, smallest: int = 4) -> list[int]:
    """d, d/2, d/4, ... rounded to multiples of 4, down to ``smallest`` (d itself always first).

    Example:
        >>> widths_below(32), widths_below(10)
        ([32, 16, 8, 4], [10, 4])
    """
    widths, halvings = [d], 1
    while d / 2**halvings >= smallest / 2:
        width = max(smallest, 4 * round(d / 2**halvings / 4))
        if width < widths[-1]:
            widths.append(width)
        halvings += 1
    return widths


def model_width(config: ExperimentConfig) -> int:
    """The model's embedding width d (its ``embedding_dim`` option)."""
    options = check_model_options(config)
    if not hasattr(options, "embedding_dim"):
        raise ValueError(f"model '{config.model['name']}' has no embedding_dim option to size tables against")
    return int(options.embedding_dim)


def make_candidates(
    rows: dict[str, int], d: int, num_bands: int, budget_bytes: float, count: int, seed: int = 0,
    min_rows: int = 100, bytes_of: Callable[[Candidate], int] | None = None,
) -> list[Candidate]:
    """Uniform baselines, the model at d/2 and d/4, Ginart's rule at ``RULE_ALPHAS``, and ``count`` random draws
    under the budget.

    Args:
        rows: feature -> table rows.
        d: the model's width.
        num_bands: bands of a banded feature.
        budget_bytes: random draws over it are redrawn (up to 50 tries each).
        count: random draws.
        seed: seeds the draws.
        min_rows: features with fewer rows are whole tables.
        bytes_of: table bytes of a candidate (drawn candidates are checked against the budget).
    """
    widths = widths_below(d)
    large = sorted(name for name, size in rows.items() if size >= min_rows)
    candidates = [Candidate(f"uniform-d{w}", "uniform", dims={n: w for n in rows} if w != d else {}) for w in widths[:3]]
    candidates += [Candidate(f"model-d{w}", "model", model_dim=w) for w in widths[1:3]]
    candidates += [Candidate(f"rule-a{alpha:g}", "rule", band_widths={n: [] for n in large}, alpha=alpha)
                   for alpha in RULE_ALPHAS]
    rng = np.random.default_rng(seed)
    drawn: list[Candidate] = []
    for index in range(count * 50):
        if len(drawn) == count:
            break
        dims = {n: int(rng.choice(widths)) for n in rows if n not in large}
        band_widths, large_dims = {}, {}
        for name in large:
            if rng.random() < 0.5:
                band_widths[name] = sorted((int(w) for w in rng.choice(widths, num_bands)), reverse=True)
            else:
                large_dims[name] = int(rng.choice(widths))
        dims = {n: w for n, w in (dims | large_dims).items() if w != d}
        candidate = Candidate(f"search-{len(drawn)}", "search", dims=dims, band_widths=band_widths)
        if bytes_of is None or bytes_of(candidate) <= budget_bytes:
            drawn.append(candidate)
    return candidates + drawn


class SuccessiveHalving:
    """Trains candidates side by side in memory and halves them by reward (NIS's R).

    Args:
        config: the experiment (its model, data and training settings; ``train.epochs`` is ignored).
        budget_bytes: the memory budget of the tables.
        cost_weight: lambda of the reward.
        num_bands: bands of a banded feature.
        eta: 1 / eta of the candidates go on at each rung, trained eta times longer.
        min_epochs: epochs of the first rung.
        rungs: rungs (the last has at most ``len(candidates) / eta**(rungs - 1)`` candidates).
        work_dir: run folders of the candidates (default: a temporary folder).
    """

    def __init__(self, config: ExperimentConfig, budget_bytes: int, cost_weight: float = 1.0, num_bands: int = 4,
                 eta: int = 2, min_epochs: int = 1, rungs: int = 3, work_dir: Path | None = None) -> None:
        self.user_config = copy.deepcopy(config)  # what chosen.yaml keeps: the user's training settings
        self.config = copy.deepcopy(config)  # the candidates': no checkpoints, no early stop (rungs set the epochs)
        self.config.train.checkpoint = False
        self.config.train.patience = 0
        self.budget_bytes, self.cost_weight, self.num_bands = budget_bytes, cost_weight, num_bands
        self.eta, self.min_epochs, self.rungs = eta, min_epochs, rungs
        self.work_dir = work_dir
        self.d = model_width(config)
        self.task_type = task_class(config.task)
        # Fit once, with counts for every feature a candidate may band: each candidate is then built from the record.
        fitting = copy.deepcopy(self.config)
        fitting.embedding.bands = BandsConfig(num_bands=num_bands)
        self.resolved, self.record = self.task_type.fit_inputs(fitting)
        self.rows = {name: int(ids.numel()) + 1 for name, ids in self.record["vocabularies"].items()}

    def task(self, candidate: Candidate) -> Task:
        config = candidate.configure(self.resolved, self.num_bands)
        seed_everything(config.train.seed)
        return self.task_type.from_record(config, self.record)

    def bytes_of(self, candidate: Candidate) -> int:
        from terarec.embedding.sized import table_bytes

        return table_bytes(self.task(candidate).model)

    def run(self, candidates: list[Candidate], progress: bool = True) -> SearchResult:
        set_threads(self.config.train.threads)
        for candidate in candidates:
            candidate.bytes = self.bytes_of(candidate)
        uniform_bytes = self.bytes_of(Candidate("uniform", "uniform"))
        total = sum(math.ceil(len(candidates) / self.eta**k) * self.min_epochs * self.eta**k
                    for k in range(self.rungs))
        bar = tqdm(total=total, desc="search-embeddings", unit="epoch", disable=not progress)
        work = Path(self.work_dir or tempfile.mkdtemp(prefix="terarec-search-"))
        trainers: dict[str, Trainer] = {}
        # Each candidate's global random state (dropout draws from it) between its rungs: resumed after others
        # trained, it goes on as if it had trained alone, so its rungs repeat `terarec train` of its config.
        states: dict[str, dict] = {}
        alive = list(candidates)
        for rung in range(self.rungs):
            target = self.min_epochs * (self.eta**rung)  # epochs at the end of this rung
            for candidate in alive:
                run_dir = work / candidate.name
                if candidate.name not in trainers:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    trainers[candidate.name] = Trainer(self.task(candidate), run_dir, RunLogs(run_dir, progress=False))
                trainer = trainers[candidate.name]
                if candidate.epochs:  # its logs are open only while it trains: log lines go to its own folder
                    trainer.logs = RunLogs(run_dir, progress=False, resume=True)
                    set_rng_state(states[candidate.name])
                while candidate.epochs < target:
                    trainer.train_epoch()
                    candidate.epochs += 1
                    bar.update(1)
                states[candidate.name] = rng_state()
                trainer.logs.close()
                signed = trainer.best_value
                candidate.metric = signed if trainer.higher_is_better else -signed
                candidate.history.append((candidate.epochs, candidate.metric))
                bar.set_postfix(candidate=candidate.name, metric=f"{candidate.metric:.4f}")
            alive.sort(key=lambda c: reward(c.metric, c.bytes, self.budget_bytes, self.cost_weight), reverse=True)
            if rung < self.rungs - 1:
                for dropped in alive[max(1, len(alive) // self.eta):]:
                    trainers.pop(dropped.name)
                alive = alive[: max(1, len(alive) // self.eta)]
        bar.close()
        return SearchResult(candidates, alive[0], self.budget_bytes, self.cost_weight, trainers[alive[0].name].metric,
                            uniform_bytes)

    def chosen_config(self, candidate: Candidate) -> ExperimentConfig:
        """The user's experiment config (its training settings, early stopping included) with the
        candidate's sizing (columns as the user wrote them)."""
        return candidate.configure(self.user_config, self.num_bands)


def plot_pareto(result: SearchResult, path: str | Path, title: str = "") -> Path:
    """Validation metric against table bytes: every candidate after the first rung (hollow, all
    trained alike: comparable) and at the last rung it reached (filled, joined to the first),
    the uniform-d baselines among them, the budget, the chosen sizing and the last rung's Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    styles = {"uniform": ("tab:blue", "s"), "model": ("tab:purple", "D"), "rule": ("tab:green", "^"),
              "search": ("tab:grey", "o")}
    for kind, (colour, marker) in styles.items():
        members = [c for c in result.candidates if c.kind == kind]
        for candidate in members:
            kib, values = candidate.bytes / 1024, [metric for _, metric in candidate.history]
            axes.plot([kib] * len(values), values, color=colour, lw=0.8, alpha=0.6)
            axes.scatter([kib], values[:1], facecolors="none", edgecolors=colour, marker=marker, s=30)
            if len(values) > 1:
                axes.scatter([kib], values[-1:], c=colour, marker=marker, s=40)
        if members:
            axes.scatter([], [], c=colour, marker=marker, label=kind)
    for candidate in result.candidates:
        if candidate.kind != "search" or candidate is result.chosen:
            axes.annotate(candidate.name, (candidate.bytes / 1024, candidate.metric), fontsize=7,
                          xytext=(4, 2), textcoords="offset points")
    most = max(c.epochs for c in result.candidates)
    final = sorted((c for c in result.candidates if c.epochs == most), key=lambda c: c.bytes)
    front, best = [], -math.inf
    for candidate in final:
        if candidate.metric > best:
            front.append(candidate)
            best = candidate.metric
    if len(front) > 1:
        axes.plot([c.bytes / 1024 for c in front], [c.metric for c in front], "k--", lw=1,
                  label=f"Pareto front ({most} epochs)")
    axes.scatter([result.chosen.bytes / 1024], [result.chosen.metric], facecolors="none", edgecolors="red", s=160,
                 lw=1.5, label=f"chosen: {result.chosen.name}")
    axes.axvline(result.budget_bytes / 1024, color="red", ls=":", lw=1, label="budget")
    first = min(epochs for c in result.candidates for epochs, _ in c.history[:1])
    axes.set_xlabel("table bytes (KiB)")
    axes.set_ylabel(f"validation {result.metric}")
    axes.set_title(title or f"Embedding sizes: hollow after {first} epoch(s), every candidate; filled: last rung")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_search(search: SuccessiveHalving, result: SearchResult, out_dir: str | Path) -> dict[str, Path]:
    """``chosen.yaml`` (the config with the chosen sizing), ``candidates.json`` and ``pareto.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = out / "chosen.yaml"
    chosen.write_text(f"# terarec search-embeddings: {result.chosen.name}, {result.chosen.bytes:,} table bytes "
                      f"(uniform {result.uniform_bytes:,}), valid {result.metric} {result.chosen.metric:.5f}\n"
                      + to_yaml(search.chosen_config(result.chosen)))
    table = out / "candidates.json"
    table.write_text(json.dumps({
        "budget_bytes": result.budget_bytes, "cost_weight": result.cost_weight, "metric": result.metric,
        "uniform_bytes": result.uniform_bytes, "chosen": result.chosen.name,
        "candidates": [dataclasses.asdict(c) | {"reward": result.reward(c)} for c in result.candidates],
    }, indent=2))
    return {"config": chosen, "candidates": table, "plot": plot_pareto(result, out / "pareto.png")}


def search_embeddings(
    config: ExperimentConfig, out_dir: str | Path, budget_bytes: int = 0, budget_share: float = 0.5,
    count: int = 6, cost_weight: float = 1.0, num_bands: int = 4, eta: int = 2, min_epochs: int = 1,
    rungs: int = 3, progress: bool = True, only: list[str] | None = None,
) -> tuple[SearchResult, dict[str, Path]]:
    """The whole search: candidates, successive halving, ``chosen.yaml`` + ``candidates.json`` + ``pareto.png``.

    Args:
        config: the experiment whose tables are sized (its model's ``embedding_dim`` is d).
        out_dir: where the three files go (candidate runs under ``out_dir/runs``).
        budget_bytes: the tables' memory budget (0: ``budget_share`` of the uniform d-wide tables).
        count: random draws beside the uniform and rule candidates.
        cost_weight, num_bands, eta, min_epochs, rungs: see ``SuccessiveHalving``.
        only: train only the candidates of these names (e.g. the ones under the budget, to save time);
            None: all.
    """
    if budget_bytes < 0 or not 0 < budget_share <= 1:
        raise ValueError(f"budget: expected --budget-bytes >= 0 and a share in (0, 1], got {budget_bytes}, "
                         f"{budget_share}")
    search = SuccessiveHalving(config, budget_bytes or 1, cost_weight, num_bands, eta, min_epochs, rungs,
                               Path(out_dir) / "runs")
    if not budget_bytes:
        search.budget_bytes = int(budget_share * search.bytes_of(Candidate("uniform", "uniform")))
    candidates = make_candidates(search.rows, search.d, num_bands, search.budget_bytes, count,
                                 seed=config.train.seed, bytes_of=search.bytes_of)
    if only:
        unknown = sorted(set(only) - {c.name for c in candidates})
        if unknown:
            raise ValueError(f"--only: no candidates named {', '.join(unknown)} (expected some of "
                             f"{', '.join(c.name for c in candidates)})")
        candidates = [c for c in candidates if c.name in only]
    result = search.run(candidates, progress=progress)
    return result, write_search(search, result, out_dir)
