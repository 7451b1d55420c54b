"""A script run as a file uses its own checkout's code, even when the virtual environment is
an editable install of another checkout (one venv shared by several clones: the installed
packages would otherwise win, and a sweep submitted from one clone would run the other's)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py")
                      if '__name__ == "__main__"' in p.read_text())
MARK = "this checkout's package was imported"


@pytest.fixture(scope="module")
def other_checkout(tmp_path_factory):
    """A copy of scripts/ beside packages that stop the process with MARK when imported: ours,
    and the heavy libraries the scripts import first (which are then not loaded at all)."""
    other = tmp_path_factory.mktemp("other")
    (other / "scripts").mkdir()
    for p in (ROOT / "scripts").glob("*.py"):
        (other / "scripts" / p.name).write_text(p.read_text())
    for pkg in ("scripts", "experiments", "solo", "torch", "transformers", "matplotlib", "tqdm"):
        (other / pkg).mkdir(exist_ok=True)
        (other / pkg / "__init__.py").write_text(f"raise SystemExit({MARK!r})\n")
    return other


def test_entry_points_are_found():
    assert {"submit.py", "make_tables.py", "bench.py"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_script_imports_its_own_checkout(other_checkout, name):
    out = subprocess.run([sys.executable, str(other_checkout / "scripts" / name), "--help"],
                         cwd=other_checkout, capture_output=True, text=True, timeout=300)
    assert MARK in out.stderr, (out.returncode, out.stdout[-500:], out.stderr[-500:])
