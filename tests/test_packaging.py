"""The set-up promises of the README: pins agree, CI runs the README's test command."""

import re
import subprocess
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return extras["exp"] + extras["dev"]


def test_environment_yml_has_the_pyproject_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert [p for p in pip_section if p != "-e ."] == _pyproject_pins()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w[\w-]*)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make run" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_makefile_targets_are_documented():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("setup", "run", "test", "test-all", "tables", "figures", "bench"):
        assert re.search(rf"^{target}:.*## ", makefile, flags=re.M), target


def _make_run(*args):
    """The command `make run` would run (PY=echo; setup taken as done), and its notes."""
    out = subprocess.run(["make", "-s", "-o", "setup", "run", "PY=echo", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_make_run_falls_back_to_dcn_only_when_cifar10_is_missing_and_task_is_the_default(
        tmp_path):
    cache = tmp_path / "cifar10_test.npz"
    out = _make_run(f"CIFAR10_CACHE={cache}")
    assert "CIFAR-10 is not at" in out and "get_cifar10.sh" in out
    assert "run.py task=dcn optim=solo_4_2bit records_dir=outputs/records" in out
    # an explicit TASK=swin gets the runner's error naming the fix, never another task
    out = _make_run(f"CIFAR10_CACHE={cache}", "TASK=swin")
    assert "NOTE" not in out and "run.py task=swin optim=solo_4_2bit scale.epochs=10" in out
    cache.write_bytes(b"present")
    out = _make_run(f"CIFAR10_CACHE={cache}")
    assert "NOTE" not in out and "run.py task=swin optim=solo_4_2bit scale.epochs=10" in out
