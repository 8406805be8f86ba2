"""Everything a run writes as logs: train.log, steps.csv, epochs.csv, TensorBoard events, curves.png.

Progress bars are drawn only on a terminal (or when asked); elsewhere each epoch gives exactly
one plain line, so a log piped to a file reads as text, not as bar frames. The CSV files are
the record: ``curves.png`` is drawn from them, so a resumed run's chart covers the whole run.

Example:
    >>> logs = RunLogs(run_dir, progress=False)  # doctest: +SKIP
    >>> for batch in logs.bar(loader, total=len(loader), desc="epoch 1/3"):  # doctest: +SKIP
    ...     logs.step(global_step, epoch=1, learning_rate=1e-3, train_loss=loss)
    >>> logs.epoch({"epoch": 1, "train_loss": 0.41, "valid": {"auc": 0.80}}, metric="auc")  # doctest: +SKIP
    >>> logs.close()  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from terarec.runtime import show_progress

log = logging.getLogger("terarec")

STEP_COLUMNS = ["step", "epoch", "learning_rate", "train_loss"]


class CSVLog:
    """Rows of one CSV file in the run folder, header first; the header grows if a later row
    brings a new column (the file is rewritten then), so no value is dropped."""

    def __init__(self, path: Path, columns: list[str] | None = None, append: bool = False) -> None:
        self.path = path
        self.columns: list[str] = list(columns or [])
        if append and path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as handle:
                self.columns = next(csv.reader(handle), self.columns)
        elif self.columns:
            self._rewrite([])
        elif path.exists():
            path.unlink()  # a new run in an old folder: its columns come with the first row

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        temporary.replace(self.path)

    def write(self, row: dict[str, Any]) -> None:
        new = [column for column in row if column not in self.columns]
        if new or not self.path.exists():
            self.columns += new
            self._rewrite(self.rows())
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.columns, restval="").writerow(row)

    def drop_from(self, column: str, first: float) -> int:
        """Remove the rows whose ``column`` is >= ``first`` (logged after the checkpoint a run
        resumes from, so about to be logged again); returns how many."""
        rows = self.rows()
        kept = [row for row in rows if not row.get(column) or float(row[column]) < first]
        if len(kept) < len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)


def epoch_row(entry: dict[str, Any]) -> dict[str, Any]:
    """An epoch's CSV row: its scalar fields, and each validation metric as ``valid_<name>``."""
    row = {key: value for key, value in entry.items() if not isinstance(value, dict)}
    for group, values in entry.items():
        if isinstance(values, dict):
            row.update({f"{group}_{name}": value for name, value in values.items()})
    return row


def epoch_line(entry: dict[str, Any], metric: str, unit: str = "epoch") -> str:
    """The one line a person reads per epoch (or per ``unit``: a streamed chunk)."""
    parts = [f"{unit} {entry[unit]}:"]
    if "train_loss" in entry:
        parts.append(f"train loss {entry['train_loss']:.4f},")
    parts.append(f"valid {metric} {entry.get('valid', {}).get(metric, math.nan):.4f}")
    if "train_seconds" in entry:
        parts.append(f"({entry['train_seconds']:.1f}s)")
    return " ".join(parts)


class RunLogs:
    """The logs of one run folder.

    Args:
        run_dir: the run folder; writes ``train.log``, ``steps.csv``, ``epochs.csv``,
            ``tensorboard/`` and, on ``close()``, ``curves.png``.
        progress: draw progress bars (None: only when stderr is a terminal).
        resume: continue the existing logs of ``run_dir``: rows are appended, and rows logged
            after the checkpoint the run resumes from (a step or epoch that is logged again)
            are removed first, in the CSV files and in TensorBoard.
        unit: what one row of the per-pass log is: ``epoch`` (``epochs.csv``) or ``chunk``
            (``chunks.csv``, a streaming run's; entries are keyed by the unit's name).
    """

    def __init__(self, run_dir: Path, progress: bool | None = None, resume: bool = False, unit: str = "epoch") -> None:
        self.run_dir = Path(run_dir)
        self.unit = unit
        self.progress = show_progress(progress)
        self.resume = resume
        self._handler = logging.FileHandler(self.run_dir / "train.log", mode="a" if resume else "w")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self._handler)
        log.setLevel(logging.INFO)
        self.steps = CSVLog(self.run_dir / "steps.csv", STEP_COLUMNS, append=resume)
        self.epochs = CSVLog(self.run_dir / f"{unit}s.csv", append=resume)
        self._steps_trimmed = self._epochs_trimmed = not resume
        if not resume:  # a run started afresh in a used folder: its curves must not mix with the old ones
            for events in (self.run_dir / "tensorboard").glob("events.out.tfevents.*"):
                events.unlink()
        self._writer = None
        self._last_step = 0
        self._closed = False

    def bar(self, iterable: Iterable, total: int | None, desc: str) -> tqdm:
        """``iterable`` with a progress bar on a terminal; elsewhere a disabled tqdm, which yields
        the same items and draws nothing (so ``set_postfix`` / ``close`` work either way)."""
        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not self.progress)

    def _tensorboard(self, first_step: int):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # On resume, TensorBoard hides the old events from first_step on: they are logged again.
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"),
                                         purge_step=first_step if self.resume else None)
        return self._writer

    def step(self, global_step: int, epoch: int, learning_rate: float, train_loss: float) -> None:
        """One row of steps.csv (and TensorBoard): the mean train loss since the previous row."""
        if not self._steps_trimmed:
            dropped = self.steps.drop_from("step", global_step)
            if dropped:
                log.info("resume: %d rows of steps.csv from step %d on are logged again", dropped, global_step)
            self._steps_trimmed = True
        self.steps.write({"step": global_step, "epoch": epoch, "learning_rate": learning_rate,
                          "train_loss": round(train_loss, 6)})
        writer = self._tensorboard(global_step)
        writer.add_scalar("train/loss", train_loss, global_step)
        writer.add_scalar("train/learning_rate", learning_rate, global_step)
        self._last_step = global_step

    def epoch(self, entry: dict[str, Any], metric: str) -> None:
        """An epoch's row of epochs.csv, its TensorBoard scalars and one line in the log.

        Args:
            entry: ``epoch`` (1-based; 0 for a model fitted without training), optionally
                ``train_loss``, ``steps``, ``train_seconds``, ``examples_per_s``,
                ``global_step`` (the TensorBoard x axis; default: the last step logged) and
                ``valid`` (metric name -> value).
            metric: the validation metric that picks the best epoch (``valid.`` prefix allowed).
        """
        metric = metric.removeprefix("valid.")
        unit = self.unit
        if not self._epochs_trimmed:
            dropped = self.epochs.drop_from(unit, entry[unit])
            if dropped:
                log.info("resume: %d rows of %ss.csv from %s %d on are logged again", dropped, unit, unit, entry[unit])
            self._epochs_trimmed = True
        self.epochs.write(epoch_row(entry))
        x = int(entry.get("global_step", self._last_step or entry[unit]))
        writer = self._tensorboard(x)
        for name, value in entry.get("valid", {}).items():
            if _is_number(value):  # metrics also carry labels, e.g. the evaluation protocol
                writer.add_scalar(f"valid/{name}", value, x)
        for name in ("train_loss", "examples_per_s"):
            if name in entry:
                writer.add_scalar(f"epoch/{name}", entry[name], x)
        log.info(epoch_line(entry, metric, unit))

    def close(self) -> None:
        """Flush TensorBoard, draw curves.png from the CSV files, stop writing train.log."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
            plot_curves(self.steps.rows(), self.epochs.rows(), self.run_dir / "curves.png", self.unit)
        finally:
            log.removeHandler(self._handler)
            self._handler.close()

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _is_number(value: Any) -> bool:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(rows: list[dict[str, str]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(float(row[x]), float(row[y])) for row in rows
             if row.get(x) and row.get(y) and _is_number(row[x]) and _is_number(row[y])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_curves(step_rows: list[dict[str, str]], epoch_rows: list[dict[str, str]], path: Path,
                unit: str = "epoch") -> Path | None:
    """Write a PNG: train loss per logged step (and per epoch), and every validation metric per
    epoch (or per ``unit``: a streaming run's chunk, validated before it is trained on). Nothing is
    written when there is nothing to draw (a run stopped before its first log)."""
    if not step_rows and not epoch_rows:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global backend or state is touched
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4.2), dpi=110)
    loss_axes, valid_axes = figure.subplots(1, 2)
    steps, losses = _numbers(step_rows, "step", "train_loss")
    if steps:
        loss_axes.plot(steps, losses, linewidth=1, label="train loss (per logged step)")
        loss_axes.set_xlabel("step")
    else:
        epochs, losses = _numbers(epoch_rows, unit, "train_loss")
        loss_axes.plot(epochs, losses, marker="o", label=f"train loss (per {unit})")
        loss_axes.set_xlabel(unit)
        loss_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axes.set_title("training loss")
    loss_axes.grid(alpha=0.3)
    # Row counts are not a metric and would flatten every curve drawn beside them.
    metrics = [column for column in (epoch_rows[0] if epoch_rows else {})
               if column.startswith("valid_") and column != "valid_count"]
    for column in metrics:
        epochs, values = _numbers(epoch_rows, unit, column)
        if any(math.isfinite(value) for value in values):
            valid_axes.plot(epochs, values, marker="o", label=column.removeprefix("valid_"))
    valid_axes.set_xlabel(unit)
    valid_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    valid_axes.set_title("validation" if unit == "epoch" else f"progressive validation (each {unit} before training)")
    valid_axes.grid(alpha=0.3)
    for axes in (loss_axes, valid_axes):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = path.with_name(path.name + ".tmp.png")
    figure.savefig(temporary)
    temporary.replace(path)
    return path
