"""Bad sweep files, names and surroundings: each is one line that names the problem and the
fix, exit status 1, found before any cell runs or any array job is submitted, in every mode
(the ``box`` fixture in conftest.py records what would have run or been submitted)."""

import json

import pytest
import yaml
from submit_utils import call, files, sbatch_calls

DROP = object()
BASE = {"scale": "smoke", "tasks": ["dcn"], "optims": ["adamw32"], "seeds": [0],
        "resources": {"smoke": {"default": {"cpus": 1}}}}

# name: (sweep fields over BASE, or the file's raw text; what the one line must say)
BAD_FILES = {
    "typo'd key": ({"optims": DROP, "optim": ["adamw32"]},
                   "unknown key 'optim' (did you mean 'optims'?)"),
    "typo'd overrides key": ({"override": [["beta1=0.5"]]},
                             "unknown key 'override' (did you mean 'overrides'?)"),
    "unknown task": ({"tasks": ["swim"]}, "unknown task 'swim' (did you mean 'swin'?)"),
    "unknown optim": ({"optims": ["adamw33"]}, "unknown optim 'adamw33' (did you mean 'adamw32'?)"),
    "tasks a scalar": ({"tasks": "dcn"}, "tasks must be a list of strings, e.g. [swin, dcn]"),
    "optims a mapping": ({"optims": {"adamw32": 1}}, "optims must be a list of strings"),
    "no seeds": ({"seeds": DROP}, "missing or empty key 'seeds'; add it as a list"),
    "empty tasks": ({"tasks": []}, "missing or empty key 'tasks'"),
    "negative seed": ({"seeds": [-1]}, "seeds must be a list of integers >= 0"),
    "seed as text": ({"seeds": ["a"]}, "seeds must be a list of integers >= 0"),
    "seed as float": ({"seeds": [1.5]}, "seeds must be a list of integers >= 0"),
    "seed repeated": ({"seeds": [0, 0]}, "seeds lists 0 twice"),
    "optim repeated": ({"optims": ["adamw32", "adamw32"]}, "optims lists 'adamw32' twice"),
    "flat overrides": ({"overrides": ["beta1=0.5"]}, "each entry of overrides must be a list"),
    "override Hydra rejects": ({"overrides": [["bogus=1"]]},
                               "does not compose: Could not override 'bogus'"),
    "unknown logger": ({"fixed": ["logger=nothing"]}, "does not compose"),
    "override value out of range": ({"overrides": [["beta1=2"]]},
                                    "is refused: beta1=2 is not allowed: expected null or a "
                                    "number in [0, 1)"),
    "two cells one folder": ({"overrides": [[], []]}, "share the run folder"),
    "fixed a string": ({"fixed": "logger=none"}, "fixed must be a list of strings"),
    "fixed_per_task typo": ({"fixed_per_task": {"dnc": ["scale.epochs=1"]}},
                            "fixed_per_task: unknown task 'dnc' (did you mean 'dcn'?)"),
    "unknown scale": ({"scale": "big"}, "scale: unknown scale 'big'"),
    "resource key typo": ({"resources": {"smoke": {"default": {"cpu": 1}}}},
                          "unknown resource key 'cpu' (did you mean 'cpus'?)"),
    "resources scale typo": ({"resources": {"smoek": {"default": {"cpus": 1}}}},
                             "unknown scale 'smoek' (did you mean 'smoke'?)"),
    "resources task typo": ({"resources": {"smoke": {"dnc": {"cpus": 1}}}},
                            "unknown task 'dnc' (did you mean 'dcn'?)"),
    "gpus as text": ({"resources": {"smoke": {"default": {"gpus": "two"}}}},
                     "gpus must be an integer >= 0"),
    "parallel zero": ({"parallel": 0}, "parallel must be an integer >= 1"),
    "name a path": ({"name": "../x"}, "name must be letters, digits"),
    "not YAML": ("tasks: [dcn\n", "is not valid YAML at line 2"),
    "empty file": ("", "must be a YAML mapping with keys tasks, optims and seeds"),
    "a list": ("- dcn\n", "must be a YAML mapping"),
}
MODES = {"slurm": [], "dry-run": ["--dry-run"], "local": ["--local", "1"], "status": ["--status"]}


def assert_refused(box, code, *needles):
    """One line, exit status 1, each needle in it; nothing ran, was written or submitted."""
    assert isinstance(code, str), f"exit code {code!r}, not an error message"
    assert code.startswith("error: ") and "\n" not in code, code
    for needle in needles:
        assert needle in code, code
    assert box.runs == [] and sbatch_calls(box) == [] and files(box) == {}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_sweep_file_is_one_line_and_nothing_runs(box, case, mode):
    fields, needle = BAD_FILES[case]
    path = box.tmp / "sweep.yaml"
    if isinstance(fields, str):
        path.write_text(fields)
    else:
        merged = {**BASE, **fields}
        path.write_text(yaml.safe_dump({k: v for k, v in merged.items() if v is not DROP}))
    assert_refused(box, call([str(path), *MODES[mode]]), str(path), needle)


@pytest.mark.parametrize("mode", list(MODES))
def test_unknown_sweep_names_the_available_ones(box, mode):
    assert_refused(box, call(["tabel1", *MODES[mode]]), "sweep not found", "tabel1.yaml",
                   "give one of", "table1")
    assert_refused(box, call([str(box.tmp / "gone.yaml"), *MODES[mode]]), "gone.yaml")


@pytest.mark.parametrize("mode", list(MODES))
def test_unknown_task_filter(box, mode):
    assert_refused(box, call(["smoke", "--task", "swim", *MODES[mode]]),
                   "--task swim: not in the sweep's tasks; give one of swin, dcn")


@pytest.mark.parametrize("mode", list(MODES))
def test_scale_without_a_recipe_for_a_task(box, mode):
    assert_refused(box, call(["smoke", "--scale", "medium", *MODES[mode]]),
                   "swin has no recipe at scale medium (no conf/recipe/swin_medium.yaml); "
                   "use --scale paper or small or smoke, or leave swin out with --task")


@pytest.mark.parametrize("dry", [[], ["--dry-run"]], ids=["", "dry"])
def test_slurm_scale_without_resources(box, dry):
    assert_refused(box, call(["smoke", "--scale", "paper", *dry]),
                   "has no resources for swin at scale paper", "add resources: paper:")


def test_no_sbatch_is_found_before_anything_is_written(box, monkeypatch):
    monkeypatch.setenv("PATH", str(box.tmp / "empty"))
    assert_refused(box, call(["smoke"]), "sbatch not found", "--local JOBS", "--dry-run")


def test_sbatch_refusal_leaves_no_manifest(box):
    (box.bin / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: no partition' >&2\n"
                                    "echo 'sbatch: error: twice' >&2\nexit 1\n")
    assert_refused(box, call(["smoke"]), "sbatch refused swin's array job (exit 1): "
                   "sbatch: error: no partition sbatch: error: twice")


def test_torn_submission_note(box):
    sdir = box.outputs / "sweeps" / "smoke" / "smoke"
    sdir.mkdir(parents=True)
    (sdir / "submitted-swin-1.json").write_text('{"job_id": ')
    before = files(box)
    code = call(["smoke", "--status"])
    assert isinstance(code, str) and "cannot read the submission note" in code
    assert "delete it" in code and "\n" not in code and files(box) == before


@pytest.mark.parametrize("mode,needle", [([], "cannot write the sweep folder"),
                                         (["--local", "1"], "cannot create the run folder")])
def test_unwritable_outputs_folder(box, monkeypatch, mode, needle):
    blocker = box.tmp / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(blocker / "outputs"))
    assert_refused(box, call(["smoke", *mode]), needle, "set SOLO_OUTPUTS_DIR")


def test_status_lists_a_submitted_note_it_can_read(box, capsys):
    sdir = box.outputs / "sweeps" / "smoke" / "smoke"
    sdir.mkdir(parents=True)
    (sdir / "submitted-swin-1.json").write_text(json.dumps(
        {"job_id": 7, "manifest": str(sdir / "gone.tsv"), "cells": 1}))
    assert call(["smoke", "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 cells: 4 not submitted"
