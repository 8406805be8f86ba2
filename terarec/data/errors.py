"""Errors for bad input data, and the policy for malformed records (error or skip)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console

BadLinePolicy = Literal["error", "skip"]
BAD_LINE_POLICIES: tuple[str, ...] = ("error", "skip")


class DataError(ValueError):
    """Bad input data. The message names the file, the line (1-based) or field, and what was expected.

    Args:
        message: what is wrong and what was expected.
        path: the file the record came from.
        line: 1-based line number in that file, where the format has lines.
        field: the column or field at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


@dataclass
class BadLineCounter:
    """Applies a BadLinePolicy: raises on the first bad record, or counts the skipped ones.

    Example:
        >>> bad = BadLineCounter("skip", path="ratings.dat")
        >>> bad.record(7, "expected 4 fields separated by '::', got 3")
        >>> bad.skipped
        1
    """

    policy: BadLinePolicy = "error"
    path: str | Path | None = None
    skipped: int = 0
    first_examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in BAD_LINE_POLICIES:
            raise ValueError(f"on_bad_line must be one of {BAD_LINE_POLICIES}, got {self.policy!r}")

    def record(self, line: int | None, message: str, field: str | None = None) -> None:
        """Report one malformed record: raise DataError under 'error', count it under 'skip'."""
        if self.policy == "error":
            raise DataError(
                message + " (pass --on-bad-line skip to skip such records)",
                path=self.path,
                line=line,
                field=field,
            )
        self.skipped += 1
        if len(self.first_examples) < 3:
            self.first_examples.append(str(DataError(message, path=self.path, line=line, field=field)))

    def warn(self, line: int | None, message: str) -> None:
        """Print a warning about a record that was kept but looks suspect, naming file and line."""
        text = str(DataError(message, path=self.path, line=line))
        self.warnings.append(text)
        Console(stderr=True).print(f"[yellow]warning:[/yellow] {text}", highlight=False)

    def reset(self) -> None:
        """Forget what was counted (a source that starts reading its file again)."""
        self.skipped = 0
        self.first_examples.clear()
        self.warnings.clear()

    def report(self, console: Console | None = None) -> None:
        """Print how many records were skipped, with the first few reasons."""
        if self.skipped == 0:
            return
        console = console or Console(stderr=True)
        console.print(f"[yellow]skipped {self.skipped:,} malformed record(s) in {self.path}[/yellow]")
        for example in self.first_examples:
            console.print(f"  e.g. {example}")
