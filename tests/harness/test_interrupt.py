"""Ctrl-C (SIGINT) stops like SIGTERM: a checkpoint at the next step boundary, one line naming
it and the command that resumes, exit 130; a second Ctrl-C exits at once. Real processes of
run.py at smoke scale; the signal lands mid-training however fast this machine steps, because
the run is frozen (SIGSTOP) while it is sent."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_utils import RUN_PY

from experiments import checkpoint, stopping

# 100 steps, evaluated every 4; ckpt_every=0: the only checkpoint before the end is the stop's.
CELL = ["scale=smoke", "optim=adamw32", "logger=none", "scale.epochs=25", "ckpt_every=0"]


def start(tmp_path, name):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "SOLO_RECORDS_DIR": str(tmp_path / f"{name}_records")}
    cmd = [sys.executable, RUN_PY, *CELL, f"hydra.run.dir={tmp_path / name}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path), cmd, env


def pending(pid: int, signum: int) -> bool:
    """``signum`` is pending on the process ``pid`` (sent, not yet delivered)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return False
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return bool((int(status["ShdPnd"], 16) | int(status["SigPnd"], 16)) & (1 << (signum - 1)))


def interrupt_mid_run(proc, times=1):
    """Wait for the first evaluation line (step 4), freeze the run, send SIGINT, continue;
    ``times=2`` sends the second Ctrl-C right after the first has been handled."""
    for line in proc.stdout:
        if " - step 4/" in line:
            break
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while not pending(proc.pid, signal.SIGINT) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGCONT)
    if times == 2:
        while pending(proc.pid, signal.SIGINT) and time.time() < deadline:
            time.sleep(0.001)  # delivered: the next SIGINT is a second one, not the same
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return out, err


def test_ctrl_c_saves_a_checkpoint_and_the_printed_command_resumes(tmp_path):
    proc, cmd, env = start(tmp_path, "run")
    out, err = interrupt_mid_run(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT after step "), err
    ckpt = tmp_path / "run" / "ckpt.pt"
    assert f"checkpoint saved to {ckpt}" in lines[0]
    step = checkpoint.load(ckpt)["step"]
    assert 4 <= step < 100 and f"after step {step}/100" in lines[0]
    assert not (tmp_path / "run_records").exists()  # an unfinished run writes no record
    # The line names the exact command; rerun as printed, it resumes and finishes.
    printed = lines[0].split("rerun the same command to resume: ", 1)[1]
    assert shlex.split(printed) == cmd
    resumed = subprocess.run(shlex.split(printed), capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step {step}/100" in resumed.stdout
    straight, _, _ = start(tmp_path, "straight")
    straight.communicate(timeout=600)
    assert straight.returncode == 0
    a, b = (json.loads(next((tmp_path / f"{n}_records").rglob("seed0.json")).read_text())
            for n in ("run", "straight"))
    assert a["metrics"] == b["metrics"]


def test_a_second_ctrl_c_exits_at_once_in_one_line(tmp_path):
    proc, _, _ = start(tmp_path, "run")
    _, err = interrupt_mid_run(proc, times=2)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = err.strip().splitlines()
    # Either the second Ctrl-C came before the step ended (no checkpoint yet) or during the
    # stop checkpoint's save; one line says which, never a traceback.
    assert len(lines) == 1, err
    assert lines[0].startswith(("interrupted: stopped at once", "stopped by SIGINT")), err
    assert not (tmp_path / "run_records").exists()


def test_a_second_sigint_raises_keyboard_interrupt_the_first_only_asks_to_stop():
    stop = stopping.StopSignals()
    raised = []
    try:
        for _ in range(2):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # the handler runs between bytecodes
                raised.append(False)
            except KeyboardInterrupt:
                raised.append(True)
    finally:
        stop.restore()
    assert raised == [False, True] and stop.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_before_training_exits_quietly(tmp_path):
    proc, _, _ = start(tmp_path, "run")
    # run.py has started once torch loads (its first import), the interpreter's own start-up
    # being out of its hands; the run has not: it trains seconds later.
    maps = Path(f"/proc/{proc.pid}/maps")
    while proc.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.distributed
def test_ctrl_c_under_torchrun_stops_both_ranks_at_one_step(tmp_path):
    """torchrun passes the terminal's SIGINT on to its workers (their own sessions); the ranks
    agree on the step, rank 0 saves and prints the line, and the same command resumes. Not
    frozen like the single-process tests (torchrun kills workers that have not exited 30 s
    after its SIGINT, and frozen ones under load may not have): the run is 1,000 steps, so the
    stop lands mid-run on a machine of any speed."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "SOLO_RECORDS_DIR": str(tmp_path / "records")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           RUN_PY, *CELL, "scale.epochs=250", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    for line in proc.stdout:
        if " - step 4/" in line:
            break
    assert len(children(proc.pid)) == 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert err.count("stopped by SIGINT after step ") == 1, err[-3000:]  # rank 0 only
    assert "rerun the same torchrun command to resume" in err
    step = checkpoint.load(tmp_path / "run" / "ckpt.pt")["step"]
    assert 4 <= step < 1000 and not (tmp_path / "records").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {step}/1000" in again.stdout + again.stderr
    assert len(list((tmp_path / "records").rglob("seed0.json"))) == 1
