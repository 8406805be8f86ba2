"""The fuzz suite's engine: build every (source, mutation, policy) case, run it through the CLI, judge it.

A case writes a mutated input into its own folder, with files that must survive beside it (a
folder named like the old temporary one, and for the overwrite cases a folder of the user's
given as ``--out``), and runs ``terarec data prepare`` in this process through typer's
CliRunner, so an exception that escapes the command is seen as the traceback it would print.
Each outcome is one of:

* ``clear_error``: exit code 2, ``error: ...`` naming a file of the case;
* ``counted_skip``: success, records skipped and counted, and the row count one the mutation allows;
* ``accepted``: success, nothing skipped, a row count the mutation allows (and, for a file
  cut mid-line, a warning naming it);

and the failures: ``traceback`` (an escaped exception, or pyarrow's "Exception ignored"
noise), ``unclear_error`` (an error that names no file), ``silent_row_change`` (a success
with a row count the mutation does not allow, or a cut file accepted without a warning) and
``files_deleted_outside_output``. Everything is seeded by the case id, so a failure reproduces.
"""

from __future__ import annotations

import random
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from tests.fuzz.bases import BASES, Base
from tests.fuzz.mutations import PARQUET_MUTATIONS, TEXT_MUTATIONS, YAML_MUTATIONS, Expect, TextFile

POLICIES = ("error", "skip")
FAILURES = ("traceback", "unclear_error", "silent_row_change", "files_deleted_outside_output")
# Mutations that only make sense for one kind of line.
ONLY_FOR = {"long-valid-sequence": {"amazon-seq"}}


@dataclass(frozen=True)
class Case:
    """One fuzz case: a base, the file it changes, a mutation, a bad-line policy."""

    base: str
    target: str
    mutation: str
    policy: str

    @property
    def id(self) -> str:
        return f"{self.base}:{self.target}:{self.mutation}:{self.policy}"


@dataclass
class Outcome:
    case: Case
    verdict: str
    detail: str


def all_cases() -> list[Case]:
    """Every case, in a fixed order."""
    cases = []
    for make in BASES:
        base = make(random.Random(0))
        if base.kind == "text":
            pairs = [(target.name, name) for target in base.targets for name in TEXT_MUTATIONS
                     if base.name in ONLY_FOR.get(name, {base.name})]
        elif base.kind == "parquet":
            pairs = [(next(iter(base.files)), name) for name in PARQUET_MUTATIONS]
        else:
            pairs = [(next(iter(base.files)), name) for name in YAML_MUTATIONS]
        pairs.append((next(iter(base.files)), "overwrite-foreign-folder"))
        for target, mutation in pairs:
            for policy in POLICIES:
                cases.append(Case(base.name, target, mutation, policy))
    return cases


def quick_cases(count: int = 40) -> list[Case]:
    """A seeded sample of the cases, for the normal test run."""
    cases = [case for case in all_cases() if case.mutation != "long-line"]  # the slow ones stay in the full run
    return random.Random(13).sample(cases, count)


def _base(name: str) -> Base:
    for make in BASES:
        base = make(random.Random(0))
        if base.name == name:
            return base
    raise KeyError(name)


def _build(case: Case, folder: Path) -> tuple[Base, Expect]:
    """Write the case's files into ``folder``; return the base and what the mutation allows."""
    base = _base(case.base)
    base.write(folder)
    rng = random.Random(zlib.crc32(case.id.encode()))
    total = base.rows()
    if case.mutation == "overwrite-foreign-folder":
        return base, Expect()
    path = folder / case.target
    if base.kind == "text":
        target = next(t for t in base.targets if t.name == case.target)
        data, expect = TEXT_MUTATIONS[case.mutation](TextFile(target, path.read_text(), total), rng)
        if target.is_side_file:  # a side table changes, never the number of rows
            expect = Expect({total}, {total}, expect.needs_warning)
    elif base.kind == "parquet":
        data, expect = PARQUET_MUTATIONS[case.mutation](pq.read_table(path), base, rng)
    else:
        data, expect = YAML_MUTATIONS[case.mutation](path.read_text(), rng)
    path.write_bytes(data)
    return base, expect


def _snapshot(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def run_case(case: Case, root: Path, runner: CliRunner | None = None) -> Outcome:
    """Build and run one case under ``root`` (a fresh folder) and judge its outcome."""
    from terarec.cli import app
    from terarec.data.schema import DatasetMeta

    runner = runner or CliRunner()
    inputs = root / "inputs"
    base, expect = _build(case, inputs)
    out = root / "out"
    # Files that are nobody's to delete: a folder named like the old temporary one, and for the
    # overwrite case a folder of the user's given as --out.
    (root / "out.tmp").mkdir()
    (root / "out.tmp" / "keep.txt").write_text("not terarec's")
    words = ["data", "prepare", base.source, str(inputs / base.arg), "--out", str(out), "--on-bad-line",
             case.policy, *base.options]
    if case.mutation == "overwrite-foreign-folder":
        out.mkdir()
        (out / "notes.txt").write_text("the user's")
        words.append("--overwrite")
    before = _snapshot(root)
    noise: list = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = noise.append
    try:
        result = runner.invoke(app, words)
    finally:
        sys.unraisablehook = previous_hook
    output = result.output.replace("\n", "")
    deleted = sorted(str(p.relative_to(root)) for p in before - _snapshot(root))
    if deleted:
        return Outcome(case, "files_deleted_outside_output", f"deleted {deleted}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome(case, "traceback", f"{type(result.exception).__name__}: {result.exception}")
    if noise or "Traceback" in output or "Exception ignored" in output:
        return Outcome(case, "traceback", f"noise on stderr: {noise or output[:300]}")
    if result.exit_code != 0:
        names = {Path(case.target).name, Path(base.arg).name, Path(case.target).parent.name, out.name}
        message = output[output.find("error:"):] if "error:" in output else output
        if result.exit_code == 2 and "error:" in output and any(re.search(re.escape(n), message) for n in names if n):
            return Outcome(case, "clear_error", message[:300])
        return Outcome(case, "unclear_error", f"exit {result.exit_code}: {output[-300:]}")
    meta = DatasetMeta.load(out)
    skipped = meta.stats.get("bad_lines_skipped", 0)
    allowed = expect.skipped if skipped else expect.clean
    if meta.num_rows not in allowed:
        return Outcome(case, "silent_row_change",
                       f"{meta.num_rows} rows, {skipped} skipped; allowed {sorted(allowed)[:10]}")
    if expect.needs_warning and not skipped and "warning:" not in output:
        return Outcome(case, "silent_row_change", "a file cut mid-line was accepted without a warning")
    return Outcome(case, "counted_skip" if skipped else "accepted", f"{meta.num_rows} rows, {skipped} skipped")


def summarize(outcomes: list[Outcome]) -> dict:
    counts = Counter(outcome.verdict for outcome in outcomes)
    return {
        "cases": len(outcomes),
        "clear_errors": counts["clear_error"],
        "counted_skips": counts["counted_skip"],
        "accepted": counts["accepted"],
        "tracebacks": counts["traceback"],
        "unclear_errors": counts["unclear_error"],
        "silent_row_changes": counts["silent_row_change"],
        "files_deleted_outside_output": counts["files_deleted_outside_output"],
    }
