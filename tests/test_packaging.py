"""The set-up promises of the README: pins agree, CI runs the README's test command."""

import re
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
