"""Malformed input through `terarec data prepare`: a clear error or a counted skip, never a traceback,
a silent change in the number of rows or a deleted file (issue 13). A seeded sample runs in the normal
test run; the whole suite (also `python bench/fuzz.py`) is marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.harness import FAILURES, Case, all_cases, quick_cases, run_case, summarize


def _check(case: Case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    assert outcome.verdict not in FAILURES, f"{case.id}: {outcome.verdict}: {outcome.detail}"


@pytest.mark.parametrize("case", quick_cases(), ids=lambda case: case.id)
def test_quick_sample(case: Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", all_cases(), ids=lambda case: case.id)
def test_full_suite(case: Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


def test_every_source_and_mutation_class_is_covered() -> None:
    cases = all_cases()
    assert len(cases) >= 400
    assert {case.base for case in cases} >= {
        "ml-100k", "ml-1m", "ml-20m", "ml-parquet", "amazon-seq", "amazon-pairs", "frappe-raw", "frappe-splits",
        "criteo", "events-csv", "events-parquet", "synthetic-ctr"}
    mutations = {case.mutation for case in cases}
    for required in ("truncate-mid-line", "drop-field", "extra-field", "wrong-type-number", "nan", "inf",
                     "negative-id", "huge-id", "unclosed-quote", "latin-1", "bom", "crlf", "binary-bytes",
                     "long-line", "empty-file", "header-only", "duplicate-header", "string-timestamps",
                     "null-label", "overwrite-foreign-folder"):
        assert required in mutations, required


def test_the_judge_catches_a_silent_row_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness must be able to fail: a loader that drops a row without a word is caught.
    import functools

    import terarec.data.sources.amazon as amazon

    original = amazon.load_amazon

    @functools.wraps(original)
    def lossy(*args, **kwargs):
        data = original(*args, **kwargs)
        data.chunks = [data.chunks[0].slice(1)]
        return data

    monkeypatch.setattr(amazon, "load_amazon", lossy)
    outcome = run_case(Case("amazon-pairs", "Video.txt", "crlf", "error"), tmp_path)
    assert outcome.verdict == "silent_row_change"
    assert summarize([outcome])["silent_row_changes"] == 1
