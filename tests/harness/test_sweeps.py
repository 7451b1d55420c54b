"""Sweep files expand into run.py cells (no Slurm needed); adding a YAML adds its test."""

import shutil
from pathlib import Path

import pytest
from harness_utils import ROOT

from scripts import submit

SWEEPS = sorted((ROOT / "scripts" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_names_and_overrides_compose(path):
    sweep = submit.load_sweep(str(path))
    from experiments.optimizers import OPTIMIZERS

    for optim in sweep["optims"]:
        assert optim in OPTIMIZERS, optim
    for task in sweep["tasks"]:  # every scale the sweep names has resources for every task
        for sc in sweep["resources"]:
            assert submit.sbatch_lines(submit.resources(sweep, sc, task))
    for sc in {sweep.get("scale", "small"), *sweep["resources"]}:  # ... and a recipe
        submit.check_scale(sweep, sc)
    # Composing is ~0.1 s a cell: every task and override list, one optimizer and seed.
    grid = {**sweep, "optims": sweep["optims"][-1:], "seeds": sweep["seeds"][:1]}
    cells = submit.cells(grid, sweep.get("scale", "small"))
    assert len(cells) == len(sweep["tasks"]) * len(sweep.get("overrides") or [[]])
    assert len({c["record"] for c in cells}) == len(cells), "two cells would share a record"
    assert len({c["run_dir"] for c in cells}) == len(cells), "two cells would share a run dir"


def test_dry_run_prints_manifest_and_array_script(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOLO_RECORDS_DIR", str(tmp_path / "records"))
    submit.main(["smoke", "--dry-run"])
    out = capsys.readouterr().out
    assert "#SBATCH --array=1-2%2" in out and "--signal=B:USR2@30" in out
    assert out.count("run.py task=swin") == 2 and out.count("run.py task=dcn") == 2


FIXTURE = Path(__file__).parent / "fixtures/records/small/swin/adamw32/seed0.json"


def test_cells_with_records_are_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOLO_RECORDS_DIR", str(tmp_path / "records"))
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    sweep = submit.load_sweep("smoke")
    first = submit.cells(sweep, "smoke")[0]
    assert Path(first["record"]).is_relative_to(tmp_path)
    Path(first["record"]).parent.mkdir(parents=True)
    Path(first["record"]).write_text("{}")  # not a record: the cell is not done
    submit.main(["smoke", "--dry-run"])
    assert "4 cells, 0 done or queued, 4 to submit" in capsys.readouterr().out
    shutil.copy(FIXTURE, first["record"])  # a valid record (the schema is checked, not the path)
    submit.main(["smoke", "--dry-run"])
    out = capsys.readouterr().out
    assert "4 cells, 1 done or queued, 3 to submit" in out
    assert first["cmd"] not in out
    submit.main(["smoke", "--status"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "4 cells: 1 done, 3 not submitted (of the done: 1 of unknown provenance)")
