"""`make setup` installs the checkout's packages (the library, the harness, the scripts' code),
so that nothing edits sys.path to find them, and the scripts still run as `python scripts/x.py`."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_install_holds_every_package_of_the_checkout():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():  # setuptools' deprecation notices about other fields
        warnings.simplefilter("ignore")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("solo", "experiments", "scripts")
               for p in (ROOT / top).rglob("__init__.py")}
    assert set(dist.packages) == on_disk
    assert {"experiments.llama", "scripts"} <= on_disk


def test_no_python_file_edits_sys_path():
    edits = re.compile(r"sys\.path\s*(\.(insert|append|extend|remove)\b|\[[^\]]*\]\s*=)")
    files = [p for top in ("solo", "experiments", "scripts", "tests", "examples")
             for p in (ROOT / top).rglob("*.py")] + [ROOT / "run.py"]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1) if edits.search(line)]
    assert found == []


# The other scripts run as a user runs them in tests of their own (make_tables, memory_table,
# submit, prepare_lm_eval).
@pytest.mark.parametrize("script", ["bench", "e2e_table", "fsdp_state_bytes", "make_figures"])
def test_a_script_runs_from_its_path_in_another_folder(script, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: ")


ENTRY_SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py")
                       if '__name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_a_script_of_another_checkout_refuses_this_checkouts_code(script, tmp_path):
    # A second checkout used with this checkout's environment: its scripts would import this
    # checkout's code, configs and records. They must stop and say so, not run.
    other = tmp_path / "other"
    (other / "solo").mkdir(parents=True)
    (other / "run.py").write_text("")
    (other / "scripts").mkdir()
    (other / "scripts" / f"{script}.py").write_text((ROOT / "scripts" / f"{script}.py").read_text())
    out = subprocess.run([sys.executable, str(other / "scripts" / f"{script}.py"), "--help"],
                         capture_output=True, text=True, cwd=other, timeout=300)
    assert out.returncode != 0
    assert f"scripts/{script}.py belongs to the checkout {other.resolve()}" in out.stderr
    assert f"PYTHONPATH={other.resolve()}" in out.stderr
    assert "usage:" not in out.stdout


def test_a_script_runs_as_a_module_of_its_checkout():
    out = subprocess.run([sys.executable, "-m", "scripts.submit", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: ")
