"""The layer order of docs/architecture.md holds: import-linter's contracts in pyproject.toml are kept.

Imports point down only (cli, demo -> serve, scaling -> train -> models -> layers, embedding,
eval -> data, features -> config) and no two sibling modules import each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    # This checkout's terarec, whatever is installed in the environment.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_import_contracts_are_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    """The check sees real imports: config placed above models is reported (models import config)."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "terarec"\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\ntype = "layers"\nlayers = ["terarec.config", "terarec.models"]\n'
    )
    result = _lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "terarec.models is not allowed to import terarec.config" in result.stdout
