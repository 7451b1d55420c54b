"""scripts/submit.py driven as a careless or hostile user would: --dry-run never runs or
submits anything, in any mode; --local and --parallel take only positive integers; bad flags
and bad sweep files are one-line errors raised before anything runs or is submitted.

The ``box`` fixture (conftest.py) puts a fake ``sbatch``/``squeue`` that logs every call first on
PATH and records training commands instead of starting them: no test here trains.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from harness_utils import ROOT
from submit_utils import call, files, sbatch_calls

from scripts import submit


def earlier_submission(box):
    """A failed cell and an earlier submission's note, so --dry-run meets both on its way."""
    first = submit.cells(submit.load_sweep("smoke"), "smoke")[0]
    first["run_dir"].mkdir(parents=True)
    (first["run_dir"] / "exit_code").write_text("1\n")
    sdir = box.outputs / "sweeps" / "smoke" / "smoke"
    sdir.mkdir(parents=True)
    (sdir / "manifest-swin-1.tsv").write_text(f"{first['run_dir']}\t{first['record']}\tcmd\n")
    (sdir / "submitted-swin-1.json").write_text(
        f'{{"job_id": 7, "manifest": "{sdir}/manifest-swin-1.tsv", "cells": 1}}')


MODES = {"slurm": [], "local": ["--local", "2"], "status": ["--status"],
         "parallel": ["--parallel", "3"], "local-one-task": ["--local", "1", "--task", "swin"],
         "yaml-path": []}
CASES = [(m, False) for m in MODES] + [(m, True) for m in ("slurm", "local", "status")]


@pytest.mark.parametrize("mode,history", CASES,
                         ids=[m + ("-after-failure" if h else "") for m, h in CASES])
def test_dry_run_never_runs_writes_or_submits(box, capsys, mode, history):
    if history:
        earlier_submission(box)
    before = files(box)
    sweep = str(ROOT / "scripts/sweeps/smoke.yaml") if mode == "yaml-path" else "smoke"
    assert call([sweep, "--dry-run", *MODES[mode]]) == 0
    out = capsys.readouterr().out
    assert box.runs == [] and sbatch_calls(box) == []
    assert files(box) == before, "a dry run wrote or changed a file"
    if mode == "status":
        assert out.splitlines()[-1].startswith("4 cells:")
    elif "--local" in MODES[mode]:
        assert "would run here" in out and "dry run: nothing runs" in out
        assert out.count("run.py task=") == (2 if "--task" in MODES[mode] else 4)
    else:
        assert "#SBATCH --array=1-" in out and "dry run: nothing is written or submitted" in out


def test_bad_count_from_the_shell_is_a_usage_error(box):
    """As a user types it; refused before the sweep is read (no torch import: fast)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts/submit.py"), "smoke", "--local",
                          "0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[-1] == ("submit.py: error: argument --local: 0 is not "
                                           "allowed; give a whole number >= 1")
    assert files(box) == {} and sbatch_calls(box) == []


BAD_COUNTS = [("--local", "0"), ("--local", "-3"), ("--local", "1.5"), ("--local", "abc"),
              ("--local", ""), ("--parallel", "-4"), ("--parallel", "0"), ("--parallel", "2.0"),
              ("--parallel", "x")]


@pytest.mark.parametrize("dry", [[], ["--dry-run"]], ids=["", "dry"])
@pytest.mark.parametrize("flag,value", BAD_COUNTS, ids=[f"{f}={v}" for f, v in BAD_COUNTS])
def test_counts_must_be_positive_integers(box, capsys, flag, value, dry):
    assert call(["smoke", flag, value, *dry]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}:" in err and ">= 1" in err and value in err
    assert box.runs == [] and sbatch_calls(box) == [] and files(box) == {}


def test_parallel_caps_the_array(box, capsys):
    assert call(["smoke", "--dry-run", "--parallel", "1"]) == 0
    assert capsys.readouterr().out.count("#SBATCH --array=1-2%1") == 2


CONFLICTS = {
    "status+local": (["--status", "--local", "2"], "give one of them"),
    "status+parallel": (["--status", "--parallel", "2"], "drop --parallel"),
    "local+parallel": (["--local", "2", "--parallel", "2"], "drop --parallel"),
    "unknown scale": (["--scale", "big"], "choose from 'medium', 'paper', 'small', 'smoke'"),
}


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_conflicting_or_unknown_flags_are_usage_errors(box, capsys, name):
    argv, fix = CONFLICTS[name]
    assert call(["smoke", *argv]) == 2
    assert fix in capsys.readouterr().err.strip().splitlines()[-1]
    assert box.runs == [] and sbatch_calls(box) == [] and files(box) == {}


def test_ctrl_c_in_local_starts_no_further_cell(box, monkeypatch, capsys):
    """Ctrl-C while a cell runs: the cells not yet started never start, one line says how to
    resume, and the exit status is 130 (as a shell reports an interrupt)."""
    runs, spy = box.runs, subprocess.run

    def interrupted(cmd, *args, **kwargs):
        if "run.py" in str(cmd) and cmd[0] != "git" and not runs:  # git lists run.py too
            runs.append(cmd)
            os.kill(os.getpid(), signal.SIGINT)  # the main thread gets it while waiting
            time.sleep(0.5)
            return subprocess.CompletedProcess(cmd, 130)
        return spy(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", interrupted)
    try:
        code = call(["smoke", "--local", "1"])
    except KeyboardInterrupt:  # escaped as a traceback: a test failure, not pytest's abort
        code = "KeyboardInterrupt"
    assert len(box.runs) == 1, f"{len(box.runs) - 1} cells started after Ctrl-C"
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: ") and "same command" in err[-1]
    assert sbatch_calls(box) == []


@pytest.mark.parametrize("caller", [None, "0"])
def test_runs_get_huge_pages_unless_the_caller_says(box, monkeypatch, caller):
    """Local cells and Slurm array tasks run with PyTorch's huge-page allocations on (less
    system time, same numbers) and one OpenMP thread, unless the caller's environment sets
    either: the caller's value is the one passed on."""
    for var in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    if caller is not None:
        monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", caller)
    envs, spy = [], subprocess.run

    def seen(cmd, *args, **kwargs):
        if "run.py" in str(cmd) and isinstance(cmd, str):
            envs.append(kwargs["env"])
        return spy(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", seen)
    assert call(["smoke", "--local", "1", "--task", "swin"]) == 0
    assert envs and all(e["THP_MEM_ALLOC_ENABLE"] == (caller or "1") for e in envs)
    assert all(e["OMP_NUM_THREADS"] == "1" for e in envs)
    assert call(["smoke", "--task", "swin"]) == 0
    scripts = [p for p in box.outputs.rglob("*") if p.is_file() and "#SBATCH" in p.read_text()]
    assert scripts, "no array script written"
    preset = f"export THP_MEM_ALLOC_ENABLE={caller}; " if caller else ""
    exports = [ln for ln in scripts[0].read_text().splitlines() if ln.startswith("export ")]
    shell = preset + "; ".join(exports) + '; echo "$THP_MEM_ALLOC_ENABLE"'
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
    assert out.stdout.strip() == (caller or "1")
