"""Thread defaults for shared machines and CPU-limited containers.

Two things go wrong when a CPU-heavy process shares its cores: OpenMP worker threads that
spin while they wait for work take the core from whoever else needs it (on a 2-core machine
with one busy neighbour, the managed vocabulary ran 43x slower with spinning waits), and a
container limited to 2 CPUs on a 64-core host starts 64 threads, because OpenMP and torch
count the host's cores, not the container's quota. So:

- ``prefer_passive_waiting()`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy.
  libgomp reads it once, when it is loaded (by ``import torch``), which is why the package's
  ``__init__`` calls it before anything imports torch.
- ``cpu_quota()`` is the number of CPUs this process may really use: its affinity mask,
  capped by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``).
- ``configure_threads(threads)`` sets torch's (and pyarrow's) thread pools to ``threads``,
  or to ``cpu_quota()`` for 0.
- ``keep_freed_memory()`` stops glibc from handing freed memory back to the kernel after every
  large tensor: each fresh page then costs a page fault and a zeroing (here, in a VM, about
  2 us a page: a 3 MB tensor allocated and freed per layer call cost more than the work on it).
  The command line calls it; the memory is reused by the next tensor, and the process keeps its
  high-water mark.

Example:
    >>> from terarec.runtime import cpu_quota
    >>> cpu_quota() >= 1
    True
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def prefer_passive_waiting() -> None:
    """Make OpenMP threads sleep, not spin, while they wait for work (unless the user chose).

    Must run before libgomp is loaded, i.e. before the first ``import torch`` of the process.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 1 << 30
ALLOCATOR_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the kernel at once.

    Sets ``M_MMAP_THRESHOLD`` to its ceiling (32 MiB: smaller blocks come from the heap, not from
    fresh mappings) and ``M_TRIM_THRESHOLD`` to 1 GiB (the heap's free top is kept). Torch frees
    and reallocates the same multi-megabyte tensors at every layer call; by default glibc unmaps
    or trims them, and every page of the next one is faulted in and zeroed again: with 32 users
    per request batch, HSTU ranking spent ~12% of its CPU there. The cost is that the process
    keeps its peak heap. Does nothing (returns False) when the C library is not glibc, when the
    user set glibc's own allocator variables (theirs win), or when ``TERAREC_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get("TERAREC_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(name in os.environ for name in ALLOCATOR_VARIABLES):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, dict[str, str]]:
    """This process's cgroup v2 path and its v1 paths by controller, from ``/proc/self/cgroup``
    (lines ``hierarchy-id:controllers:path``; v2's line has empty controllers)."""
    unified: str | None = None
    by_controller: dict[str, str] = {}
    for line in (_read_text(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            unified = path
        for controller in controllers.split(","):
            by_controller[controller] = path
    return unified, by_controller


def _with_ancestors(base: Path, path: str) -> list[Path]:
    """``base/path`` and each of its parents down to ``base``: a limit on any of them applies."""
    parts = [part for part in path.strip("/").split("/") if part]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.max`` ("max 100000" = no limit, "200000 100000" = 2 CPUs)."""
    text = _read_text(folder / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max":
        return None
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return int(fields[0]) / period if period > 0 else None


def _v1_limit(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1 = no limit)."""
    quota, period = _read_text(folder / "cpu.cfs_quota_us"), _read_text(folder / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (may be fractional), or None for no limit.

    Looks at the process's own cgroup and its ancestors (the smallest limit wins), in the
    unified v2 hierarchy (``cpu.max``) and in v1's cpu controller (``cpu/``, ``cpu,cpuacct/``).

    Args:
        cgroup_root: where the cgroup file systems are mounted.
        proc_cgroup: the file naming this process's cgroups.
    """
    unified, by_controller = _own_cgroups(proc_cgroup)
    limits: list[float] = []
    for folder in _with_ancestors(cgroup_root, unified or "/"):
        limit = _v2_limit(folder)
        if limit is not None:
            limits.append(limit)
    v1_path = by_controller.get("cpu", "/")
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in _with_ancestors(cgroup_root / mount, v1_path):
            limit = _v1_limit(folder)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def affinity_count() -> int:
    """CPUs in this process's affinity mask (taskset, cpuset), else every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may really use: min(affinity, cgroup quota rounded up), at least 1.

    Args:
        cgroup_root: where the cgroup file systems are mounted (a test passes a fake tree).
        proc_cgroup: the file naming this process's cgroups.
    """
    cpus = affinity_count()
    limit = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def configure_threads(threads: int = 0) -> int:
    """Use ``threads`` threads for torch's intra-op pool and pyarrow's CPU pool (0 = ``cpu_quota()``),
    and for faiss's OpenMP searches in the calling thread when faiss is loaded.

    The inter-op pool is sized too while torch still allows it (before any inter-op work has
    run in this process; afterwards it keeps its size). faiss keeps its thread count per thread
    (OpenMP's), so a thread that searches calls this itself: a server's compute thread does.
    Returns the thread count in force.
    """
    import pyarrow
    import torch

    threads = threads if threads > 0 else cpu_quota()
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already started: torch refuses a second sizing, and it is harmless
            pass
    pyarrow.set_cpu_count(threads)
    faiss = sys.modules.get("faiss")  # not imported here: training never loads it
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    return threads


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or (None) only when stderr is a terminal, so a
    log piped to a file gets plain lines instead of bar frames."""
    if progress is not None:
        return progress
    return sys.stderr.isatty()
