"""Thread defaults: cgroup CPU quotas (v1, v2, none, fractional), thread pools, passive OpenMP waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from terarec.runtime import affinity_count, cgroup_cpu_limit, configure_threads, cpu_quota, show_progress

ROOT = Path(__file__).resolve().parents[1]


def fake_cgroups(tmp_path: Path, files: dict[str, str], own: str = "0::/\n") -> tuple[Path, Path]:
    """A fake cgroup mount (``root``) with ``files`` (relative path -> content) and a fake
    /proc/self/cgroup naming this process's groups."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    proc = tmp_path / "proc-cgroup"
    proc.write_text(own)
    return root, proc


@pytest.mark.parametrize("content, cpus", [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5),
                                           ("max 100000\n", None)])
def test_cgroup_v2_cpu_max(tmp_path: Path, content: str, cpus: float | None) -> None:
    root, proc = fake_cgroups(tmp_path, {"cpu.max": content})
    assert cgroup_cpu_limit(root, proc) == cpus


def test_cgroup_v1_quota_and_period(tmp_path: Path) -> None:
    root, proc = fake_cgroups(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
                                         "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
                              own="4:cpu,cpuacct:/\n0::/\n")
    assert cgroup_cpu_limit(root, proc) == 3.0


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    root, proc = fake_cgroups(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
                              own="1:cpu:/\n")
    assert cgroup_cpu_limit(root, proc) is None
    assert cpu_quota(root, proc) == affinity_count()


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    root, proc = fake_cgroups(tmp_path, {})
    assert cgroup_cpu_limit(root, proc) is None


def test_own_group_and_its_parent_smallest_wins(tmp_path: Path) -> None:
    # A container's own group allows 4 CPUs, its parent slice 2: the parent's limit applies.
    root, proc = fake_cgroups(tmp_path, {"kube/pod1/cpu.max": "400000 100000", "kube/cpu.max": "200000 100000",
                                         "cpu.max": "max 100000"}, own="0::/kube/pod1\n")
    assert cgroup_cpu_limit(root, proc) == 2.0


@pytest.mark.parametrize("content, expected", [
    ("50000 100000", lambda cpus: 1),                     # half a CPU still gets one thread
    ("150000 100000", lambda cpus: min(cpus, 2)),         # 1.5 CPUs round up to 2
    ("6400000 100000", lambda cpus: min(cpus, 64)),       # 64 CPUs of quota: the affinity mask caps it
])
def test_cpu_quota_rounds_up_and_is_capped_by_affinity(tmp_path: Path, content: str, expected) -> None:
    root, proc = fake_cgroups(tmp_path, {"cpu.max": content})
    assert cpu_quota(root, proc) == expected(affinity_count())


def test_configure_threads_sets_torch_and_pyarrow() -> None:
    import pyarrow

    before = torch.get_num_threads(), pyarrow.cpu_count()
    try:
        assert configure_threads(1) == 1
        assert torch.get_num_threads() == 1 and pyarrow.cpu_count() == 1
        assert configure_threads(0) == cpu_quota()
        assert torch.get_num_threads() == cpu_quota()
    finally:
        torch.set_num_threads(before[0])
        pyarrow.set_cpu_count(before[1])


def test_show_progress_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(None) is True and show_progress(False) is False


def _gomp_settings(code: str, **env: str) -> str:
    """libgomp's own report of its settings (OMP_DISPLAY_ENV) in a fresh interpreter running ``code``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    clean.update(PYTHONPATH=str(ROOT), OMP_DISPLAY_ENV="VERBOSE", **env)
    done = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize("code", ["import terarec, torch", "import terarec.cli, torch"])
def test_importing_terarec_first_makes_openmp_wait_passively(code: str) -> None:
    # Passive = no spinning: libgomp's spin count drops from 300000 (its default) to 0.
    assert "GOMP_SPINCOUNT = '0'" in _gomp_settings(code)
    assert "GOMP_SPINCOUNT = '300000'" in _gomp_settings("import torch")  # the default the test guards against


def test_a_users_wait_policy_is_kept() -> None:
    settings = _gomp_settings("import terarec, torch", OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in settings and "GOMP_SPINCOUNT = '0'" not in settings


KEPT_MEMORY_PROBE = """
import terarec.cli, torch
torch.set_num_threads(1)  # no worker thread (and its own malloc arena) appearing mid-measure
torch.ones(1000).sum()
def resident_mib():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
before = resident_mib()
block = torch.ones(4 << 20)  # 16 MiB
del block
print(resident_mib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_the_command_line_keeps_freed_tensors_for_reuse() -> None:
    # The probe allocates and frees a 16 MiB tensor: glibc's default unmaps it at once (and the
    # next one is faulted in page by page); after keep_freed_memory() it stays for reuse.
    def kept_mib(**env: str) -> float:
        clean = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "TERAREC_KEEP"))}
        clean.update(PYTHONPATH=str(ROOT), **env)
        done = subprocess.run([sys.executable, "-c", KEPT_MEMORY_PROBE], env=clean, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return float(done.stdout.split()[-1])

    # Compared with each other, not with zero: other start-up allocations move the baseline.
    kept = kept_mib()
    assert kept > 12
    assert kept - kept_mib(TERAREC_KEEP_FREED_MEMORY="0") > 12
    assert kept - kept_mib(MALLOC_TRIM_THRESHOLD_="131072") > 12  # the user's own setting wins
