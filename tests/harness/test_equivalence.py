"""A refactor of the run harness changes no result: smoke-scale metrics of every task for two
presets at seed 0 equal, bit for bit, those saved in equivalence/smoke_metrics.json (from the
runners of commit 34361aa, one OpenMP thread, this project's CPU machine). Another CPU or library
version may round differently: regenerate the file there from that commit before reading a
failure as a regression; a change meant to move a result saves the file again and says why."""

import json
from pathlib import Path

import pytest
from harness_utils import run_py

SAVED = json.loads((Path(__file__).parent / "equivalence" / "smoke_metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("cell", sorted(SAVED))
def test_smoke_metrics_equal_the_saved_ones(cell, tmp_path):
    task, optim = cell.split("/")
    out = run_py(f"task={task}", f"optim={optim}", "scale=smoke", "seed=0", "logger=none",
                 "resume=never", f"records_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                 env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "smoke" / task / optim / "seed0.json").read_text())
    assert record["metrics"] == SAVED[cell]
