"""Harness faults, each reproduced on the runners before the scaffold existed: finished
cells, two writers of one folder, foreign and corrupt checkpoints, duplicate history rows after
a kill, another world size, and per-rank seeds. Swin at smoke scale (seconds a run)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from harness_utils import run_py

from experiments import checkpoint, errors, folders, ranks


def history_steps(run_dir, key="loss"):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if key in r]


def complete(record):
    """No field a table reads is null or zero: the record of a real, whole run."""
    t = record["time"]
    return (record["metrics"]["train_loss"] is not None and t["step_ms_mean"] > 0
            and t["throughput"] > 0 and t["train_s"] > 0)


def test_rerunning_a_finished_cell_leaves_its_record_as_it_is(run_smoke, tmp_path):
    first, run_dir = run_smoke(optim="adamw32")
    path = next((tmp_path / "records").rglob("seed0.json"))
    before = path.read_bytes()
    again, _ = run_smoke(optim="adamw32")
    assert again == first and path.read_bytes() == before
    # Record gone but the final checkpoint there: the rerun rebuilds a whole record from it.
    path.unlink()
    rebuilt, _ = run_smoke(optim="adamw32")
    assert complete(rebuilt) and rebuilt["metrics"] == first["metrics"]
    assert rebuilt["time"]["train_s"] == first["time"]["train_s"]  # the meters were restored
    assert history_steps(run_dir) == list(range(1, first["time"]["steps"] + 1))


def test_a_stop_at_the_last_step_finishes_the_run(run_smoke):
    straight, _ = run_smoke(optim="adamw32", run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]
    stopped, _ = run_smoke(f"stop_at_step={n}", optim="adamw32")
    assert stopped is not None and complete(stopped)
    assert stopped["metrics"] == straight["metrics"]


LOCK_HOLDER = """
import time
from pathlib import Path
from experiments.folders import Lock
Lock(Path({run_dir!r}))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_in_a_busy_folder_exits_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(run_dir=str(run_dir))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = run_py("scale=smoke", "optim=adamw32", "logger=none", f"hydra.run.dir={run_dir}",
                     env={"SOLO_RECORDS_DIR": str(tmp_path / "records")})
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 1, out.stderr[-2000:]
    assert f'"pid": {holder.pid}' in out.stderr and str(run_dir) in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run_dir / "ckpt.pt").exists() and not (run_dir / "metrics.jsonl").exists()
    # The holder is gone (killed: the kernel dropped its lock): the folder is free again.
    folders.Lock(run_dir).release()


def test_a_checkpoint_of_another_optimizer_or_config_is_refused(run_smoke, tmp_path):
    run_smoke("stop_at_step=2", optim="adamw32")
    with pytest.raises(errors.CheckpointError) as err:
        run_smoke(optim="adabelief32")
    msg = str(err.value)
    assert "optim: 'adamw32' in the checkpoint, 'adabelief32' here" in msg
    assert str(tmp_path / "run" / "ckpt.pt") in msg and "resume=never" in msg
    with pytest.raises(errors.CheckpointError, match=r"scale\.lr: 0\.001 in the checkpoint, "
                                                     r"0\.002 here"):
        run_smoke("scale.lr=2e-3", optim="adamw32")
    assert not list((tmp_path / "records").rglob("seed*.json"))
    record, _ = run_smoke("resume=never", optim="adabelief32")  # starting over is allowed
    assert record["optim"] == "adabelief32" and record["time"]["steps"] > 2


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_a_corrupt_checkpoint_names_the_file_and_how_to_start_over(run_smoke, tmp_path, damage):
    _, run_dir = run_smoke("stop_at_step=2", optim="adamw32")
    ckpt = run_dir / "ckpt.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "random": os.urandom(4096)}[damage])
    with pytest.raises(errors.CheckpointError) as err:
        run_smoke(optim="adamw32")
    assert str(ckpt) in str(err.value) and "resume=never" in str(err.value)


@pytest.mark.slow  # a subprocess (~8 s); the exit path is the busy-folder test's as well
def test_a_corrupt_checkpoint_exits_1_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ckpt.pt").write_bytes(b"PK\x03\x04" + os.urandom(100))
    out = run_py("scale=smoke", "optim=adamw32", "logger=none", f"hydra.run.dir={run_dir}",
                 env={"SOLO_RECORDS_DIR": str(tmp_path / "records")})
    assert out.returncode == 1
    assert str(run_dir / "ckpt.pt") in out.stderr and "resume=never" in out.stderr
    assert "Traceback" not in out.stderr


def test_resume_after_a_kill_keeps_one_history_row_per_step(run_smoke, tmp_path):
    straight, straight_dir = run_smoke(optim="adamw32", run_dir="straight", records="rs")
    n = straight["time"]["steps"]
    _, run_dir = run_smoke("stop_at_step=3", optim="adamw32")
    saved = tmp_path / "ckpt-step3.pt"
    shutil.copy(run_dir / "ckpt.pt", saved)
    run_smoke("stop_at_step=6", optim="adamw32")
    # As if killed after step 6 with the last checkpoint at step 3: steps 4-6 run again.
    shutil.copy(saved, run_dir / "ckpt.pt")
    resumed, _ = run_smoke(optim="adamw32")
    assert history_steps(run_dir) == list(range(1, n + 1))
    assert history_steps(run_dir, "eval/top1") == history_steps(straight_dir, "eval/top1")
    assert resumed["metrics"] == straight["metrics"]


def test_a_checkpoint_of_another_world_size_is_refused(run_smoke):
    _, run_dir = run_smoke("stop_at_step=2", optim="adamw32")
    ckpt = checkpoint.load(run_dir / "ckpt.pt")
    ckpt["identity"]["world_size"] = 2  # as written by a 2-rank run
    ckpt["rng"] = ckpt["rng"] * 2
    torch.save(ckpt, run_dir / "ckpt.pt")
    with pytest.raises(errors.CheckpointError, match="world_size: 2 in the checkpoint, 1 here"):
        run_smoke(optim="adamw32")


def test_ranks_share_the_model_init_and_draw_their_own_data_randomness():
    draws = {}
    for rank in (0, 1):
        ranks.set_seed(5)
        init = torch.nn.Linear(4, 4).weight.detach().clone()
        ranks.seed_data_side(5, rank, world=2)
        draws[rank] = (init, torch.rand(8), torch.randint(0, 100, (8,)))
    assert torch.equal(draws[0][0], draws[1][0])
    assert not torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][2], draws[1][2])
    # A single process keeps its stream: seed + rank 0 is the seed it was given.
    ranks.set_seed(5)
    torch.nn.Linear(4, 4)
    expected = torch.rand(8)
    ranks.set_seed(5)
    torch.nn.Linear(4, 4)
    ranks.seed_data_side(5, 0, world=1)
    assert torch.equal(torch.rand(8), expected)


def test_the_record_names_each_ranks_data_seed(run_smoke):
    record, _ = run_smoke("seed=4", optim="adamw32")
    assert record["provenance"]["data_seeds"] == [4]
