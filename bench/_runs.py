"""Run a benchmark's training jobs in this process or in one-thread worker processes (not a benchmark).

    from _runs import run_jobs   # bench/ is on sys.path when a bench script runs
    run_jobs(jobs, run_one, report, workers=2)

Each job is ``(key, args)``: ``run_one(*args)`` trains and returns a picklable result, and
``report(key, result)`` takes it in this process as each job finishes (in order of finishing
with ``workers > 1``). Workers are spawned, so ``run_one`` must be a module-level function;
on a 2-core machine two one-thread runs finish sooner than two two-thread runs in a row.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_jobs(
    jobs: Sequence[tuple[Any, tuple]],
    run_one: Callable[..., Any],
    report: Callable[[Any, Any], None],
    workers: int = 1,
) -> None:
    """``report(key, run_one(*args))`` for every ``(key, args)``, ``workers`` at a time."""
    if workers <= 1:
        for key, args in jobs:
            report(key, run_one(*args))
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, *args): key for key, args in jobs}
        for future in as_completed(futures):
            report(futures[future], future.result())
