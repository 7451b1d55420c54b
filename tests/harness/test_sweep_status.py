"""``submit.py --status`` marks done cells whose record is stale, dirty or of unknown provenance;
``--rerun-stale`` reruns exactly the stale ones (overwrite=true, a fresh run folder), on Slurm
or here, and --dry-run runs nothing. The ``box`` fixture (conftest.py) fakes sbatch/squeue and
records training commands instead of starting them."""

import json
import shlex
from pathlib import Path

import pytest
from submit_utils import call, files, sbatch_calls

from experiments import provenance
from scripts import submit

FIXTURE = Path(__file__).parent / "fixtures/records/small/swin/adamw32/seed0.json"


def write_record(cell, code_files=None, dirty=False):
    rec = json.loads(FIXTURE.read_text())
    rec.update(task=cell["task"], optim=cell["optim"], scale="smoke", seed=cell["seed"])
    rec["provenance"]["git_dirty"] = dirty
    if code_files is not None:
        rec["provenance"]["code_files"] = code_files
    cell["record"].parent.mkdir(parents=True, exist_ok=True)
    cell["record"].write_text(json.dumps(rec))


@pytest.fixture
def cells(box):
    """The smoke sweep's cells: swin adamw32 fresh (only another task's file changed) but
    dirty, swin solo_4_2bit stale (a library file and its task config changed), dcn adamw32 of
    unknown provenance, dcn solo_4_2bit without a record."""
    found = submit.cells(submit.load_sweep("smoke"), "smoke")
    assert [(c["task"], c["optim"]) for c in found] == [
        ("swin", "adamw32"), ("swin", "solo_4_2bit"), ("dcn", "adamw32"), ("dcn", "solo_4_2bit")]
    now = provenance.code_files()
    assert {"solo/optim.py", "conf/task/swin.yaml", "experiments/dcn/run.py"} <= set(now)
    write_record(found[0], {**now, "experiments/dcn/run.py": "0" * 40}, dirty=True)
    write_record(found[1], {**now, "solo/optim.py": "1" * 40, "conf/task/swin.yaml": "2" * 40})
    write_record(found[2])
    return found


def rerun_cmd(cell):
    """The stale cell's rerun folder and command line."""
    rerun = cell["run_dir"] / f"rerun-{provenance.code_hash(provenance.code_files())}"
    where = shlex.quote(f'hydra.run.dir="{rerun}"')
    return rerun, f"{cell['cmd']} overwrite=true {where}"


def test_status_marks_stale_dirty_and_unknown_records(box, cells, capsys):
    assert call(["smoke", "--status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "done           swin adamw32 seed=0  dirty (ran with uncommitted changes)",
        "done           swin solo_4_2bit seed=0  stale: 2 changed since: conf/task/swin.yaml, "
        "solo/optim.py",
        "done           dcn adamw32 seed=0  provenance unknown (the record names no code files)",
        "not submitted  dcn solo_4_2bit seed=0",
        "4 cells: 3 done, 1 not submitted (of the done: 1 stale, 1 dirty, "
        "1 of unknown provenance)"]


@pytest.mark.parametrize("mode", [[], ["--local", "1"]], ids=["slurm", "local"])
def test_rerun_stale_dry_run_prints_exactly_the_stale_cells(box, cells, capsys, mode):
    before = files(box)
    assert call(["smoke", "--rerun-stale", "--dry-run", *mode]) == 0
    out = capsys.readouterr().out
    rerun, cmd = rerun_cmd(cells[1])
    runs = [line for line in out.splitlines() if "run.py" in line]
    if mode:
        assert runs == [cmd] and "1 cells would run here" in out
    else:
        assert runs == [f"{rerun}\t{cells[1]['record']}\t{cmd}"]
        assert "4 cells, 1 stale to rerun with overwrite=true" in out
        assert "#SBATCH --array=1-1%1" in out
    assert box.runs == [] and sbatch_calls(box) == [] and files(box) == before


def test_rerun_stale_runs_the_rerun_in_its_own_folder(box, cells):
    assert call(["smoke", "--rerun-stale", "--local", "1"]) == 0
    rerun, cmd = rerun_cmd(cells[1])
    assert box.runs == [cmd] and (rerun / "exit_code").read_text() == "0\n"
    # the command composes to the cell's record, in the fresh folder (the quoting holds)
    overrides = shlex.split(cmd)[2:]
    from scripts.sweep_file import compose_cells

    assert compose_cells([overrides]) == [(rerun, cells[1]["record"])]
    assert "overwrite=true" in overrides and "resume=auto" in overrides


def test_a_queued_rerun_is_not_submitted_again(box, cells, capsys):
    rerun, _ = rerun_cmd(cells[1])
    sdir = box.outputs / "sweeps" / "smoke" / "smoke"
    sdir.mkdir(parents=True)
    (sdir / "manifest-swin-1.tsv").write_text(f"{rerun}\t{cells[1]['record']}\tcmd\n")
    (sdir / "submitted-swin-1.json").write_text(json.dumps(
        {"job_id": 7, "manifest": str(sdir / "manifest-swin-1.tsv"), "cells": 1}))
    (box.bin / "squeue").write_text("#!/bin/sh\necho '1 RUNNING'\n")
    assert call(["smoke", "--status"]) == 0
    assert f"rerun running ({rerun})" in capsys.readouterr().out
    assert call(["smoke", "--rerun-stale", "--dry-run"]) == 0
    assert "0 stale to rerun" in capsys.readouterr().out
