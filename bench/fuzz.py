"""Feed every data source a few hundred malformed inputs through `terarec data prepare` and count the outcomes.

    python bench/fuzz.py            # the full suite (tests/fuzz), about a thousand cases
    python bench/fuzz.py --quick    # a seeded sample of 40

Each case is one source's small valid input with one mutation (truncation, dropped and extra
fields, wrong types, NaN / inf, negative and huge ids, bad quoting, encodings and BOM, CRLF,
binary bytes, a very long line, empty and header-only files, duplicate headers, wrong Parquet
types and nulls, bad YAML) under --on-bad-line error and skip. Prints each failure, then as
its LAST line one JSON object: cases, clear_errors, counted_skips, accepted, tracebacks,
unclear_errors, silent_row_changes, files_deleted_outside_output (the last four must be 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.harness import FAILURES, all_cases, quick_cases, run_case, summarize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seeded sample of 40 cases")
    args = parser.parse_args()
    cases = quick_cases() if args.quick else all_cases()
    started = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="terarec-fuzz-") as scratch:
        for index, case in enumerate(cases):
            root = Path(scratch) / f"case-{index:04d}"
            root.mkdir()
            outcome = run_case(case, root)
            outcomes.append(outcome)
            if outcome.verdict in FAILURES:
                print(f"{outcome.verdict}: {case.id}: {outcome.detail}", file=sys.stderr)
    summary = summarize(outcomes)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
