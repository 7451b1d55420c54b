"""Fixtures for the harness tests (helpers live in harness_utils.py: tests/solo has its own
conftest, so `import conftest` would be ambiguous)."""

import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from harness_utils import RUN_PY, SOLO_OPTIM

from experiments.config import compose


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one intra-op thread: OpenMP hand-offs between threads
    dominate their ops, and stall badly when other jobs share the cores (CI's test-quality
    stage runs two pytest processes side by side on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_smoke(tmp_path):
    """Run the swin runner in-process at smoke scale; returns (record or None, run_dir)."""

    def go(*overrides, run_dir="run", records="records", optim=None, scale="smoke"):
        from omegaconf import open_dict

        from experiments.swin import run

        optim = optim or SOLO_OPTIM
        cfg = compose([f"scale={scale}", f"optim={optim}", "logger=none", *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / run_dir)
            cfg.records_dir = str(tmp_path / records)
        return run.main(cfg), Path(cfg.run_dir)

    return go


@pytest.fixture
def box(tmp_path, monkeypatch):
    """For scripts/submit.py: records and outputs in tmp_path, a fake ``sbatch``/``squeue`` first
    on PATH that logs each call to ``box.calls``, and ``subprocess.run`` of a training command
    (``run.py``) recorded in ``box.runs`` instead of started."""
    records, outputs, calls, bin_dir = (tmp_path / n for n in ("records", "outputs", "calls",
                                                               "bin"))
    monkeypatch.setenv("SOLO_RECORDS_DIR", str(records))
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(outputs))
    bin_dir.mkdir()
    for tool, reply in (("sbatch", "4242"), ("squeue", "")):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\necho {reply}\n')
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs, real_run = [], subprocess.run

    def spy(cmd, *args, **kwargs):
        # a cell's command; git's calls name run.py too, among the code files they list
        if "run.py" in str(cmd) and not (isinstance(cmd, list) and cmd[0] == "git"):
            runs.append(cmd)
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    return SimpleNamespace(tmp=tmp_path, records=records, outputs=outputs, calls=calls,
                           bin=bin_dir, runs=runs)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``python run.py scale=smoke optim=adamw32 logger=none <overrides>`` in this process:
    returns (exit code, stdout + stderr). Records go to tmp/records; the run folder is tmp/run
    unless ``run_dir=None`` (then Hydra's default under SOLO_OUTPUTS_DIR=tmp/outputs)."""
    monkeypatch.setenv("SOLO_RECORDS_DIR", str(tmp_path / "records"))
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)

    def go(*overrides, run_dir=tmp_path / "run"):
        where = [f"hydra.run.dir={run_dir}"] if run_dir else []
        monkeypatch.setattr(sys, "argv", [RUN_PY, "scale=smoke", "optim=adamw32",
                                          "logger=none", *where, *overrides])
        try:
            runpy.run_path(RUN_PY, run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return code, out.out + out.err

    return go
