"""tests/import_graph.py: Calcrooms' packages import without a cycle, and the check can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "import_graph.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_packages_import_without_a_cycle() -> None:
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no cycles between packages" in result.stdout


def test_a_cycle_is_reported_with_its_evidence(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a/__init__.py": "",
            "a/models.py": "from b.services import helper\n",
            "b/__init__.py": "",
            # a lazy import inside a function is a dependency too; `from .` stays in b
            "b/services.py": "from . import util\n\n\ndef helper():\n    import a.models\n",
            "b/util.py": "",
        },
    )
    result = run("--root", str(tmp_path), "--packages", "a,b", "--modules")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "b.services -> a.models (b/services.py:5), b.util (b/services.py:1)" in result.stdout
    assert "cycle: a -> b (a/models.py:1) -> a (b/services.py:5)" in result.stdout
    assert "no cycles between packages" not in result.stdout


def test_migrations_are_reported_but_not_counted(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a/__init__.py": "import b\n",
            "b/__init__.py": "",
            "b/migrations/__init__.py": "",
            "b/migrations/0001_initial.py": "from a import models\n",
        },
    )
    result = run("--root", str(tmp_path), "--packages", "a,b", "--modules")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "b -> a (b/migrations/0001_initial.py:1)" in result.stdout
    assert "no cycles between packages" in result.stdout
