"""Sweeps through a real Slurm cluster started on this machine (see local_slurm.py).

Run with `pytest -m slurm` (root, Debian packages slurm-wlm and munge; `make test` does it).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = [sys.executable, str(ROOT / "scripts" / "submit.py")]


def sh(cmd, env, check=True):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check and out.returncode:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def wait_for(cond, timeout, what, poll=1.0):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def queue(env) -> str:
    return sh(["squeue", "-h", "-o", "%i %T"], env).stdout.strip()


def status(sweep, env) -> dict[str, str]:
    """cell -> state, from `submit.py --status` (the user's view)."""
    lines = sh([*SUBMIT, str(sweep), "--status"], env).stdout.strip().splitlines()[:-1]
    return {line[15:].split("  log:")[0].strip(): line[:15].strip() for line in lines}


def write_sweep(path: Path, **fields) -> Path:
    import yaml

    base = {"scale": "smoke", "seeds": [0], "fixed": ["logger=none"],
            "resources": {"smoke": {"default": {"cpus": 1, "mem": "1G", "time": "00:10:00",
                                                "warn": 30}}}}
    path.write_text(yaml.safe_dump({**base, **fields}))
    return path


def test_smoke_sweep_as_arrays_writes_every_record(cluster_env, tmp_path):
    sweep = ROOT / "scripts" / "sweeps" / "smoke.yaml"
    out = sh([*SUBMIT, str(sweep)], cluster_env).stdout
    assert "4 to submit" in out and out.count("array job") == 2  # one array per task
    wait_for(lambda: not queue(cluster_env), 600, "the arrays to finish", poll=2)

    states = status(sweep, cluster_env)
    assert states and set(states.values()) == {"done"}, states
    records = sorted((tmp_path / "records" / "smoke").rglob("seed0.json"))
    assert len(records) == 4
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["provenance"]["slurm_job_id"] and rec["provenance"]["slurm_array_task_id"]
        run_dir = tmp_path / "outputs" / "smoke" / rec["task"] / rec["optim"] / "seed0"
        assert list(run_dir.glob("slurm-*_*.log")), "the task's log lands beside its run"
        assert (run_dir / "exit_code").read_text().strip() == "0"

    again = sh([*SUBMIT, str(sweep)], cluster_env).stdout  # idempotent: nothing left to do
    assert "0 to submit" in again and "array job" not in again


def test_failing_task_is_reported_failed_while_others_finish(cluster_env, tmp_path):
    sweep = write_sweep(tmp_path / "mixed.yaml", tasks=["swin"], optims=["solo_4_2bit"],
                        overrides=[[], ["+optim.bits=[5,2]"]])  # 5 bits: a ValueError
    sh([*SUBMIT, str(sweep)], cluster_env)
    wait_for(lambda: not queue(cluster_env), 600, "the array to finish", poll=2)

    lines = sh([*SUBMIT, str(sweep), "--status"], cluster_env).stdout.splitlines()
    failed = [line for line in lines[:-1] if line.startswith("failed")]
    done = [line for line in lines[:-1] if line.startswith("done")]
    assert len(done) == 1 and len(failed) == 1, lines
    log = Path(failed[0].split("log: ")[1])
    assert log.exists() and "Invalid bits" in log.read_text()
    assert lines[-1] == "2 cells: 1 done, 1 failed"


def _resume_now(job, env):
    """A requeued job waits ~2 minutes (BeginTime); start it now to keep the test short."""
    wait_for(lambda: "PENDING" in queue(env), 120, f"job {job} back in the queue", poll=0.5)
    sh(["scontrol", "update", f"JobId={job}", "BeginTime=now"], env, check=False)


def _pending_or_running(pid: int, signum: int) -> bool:
    """True once `signum` is pending on the stopped process `pid`, or it no longer is stopped
    (Slurm may SIGCONT a job before it signals it), or it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                      .splitlines() if ":" in line)
    except OSError:
        return True
    pending = int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)
    return bool(pending & (1 << (signum - 1))) or not fields["State"].strip().startswith("T")


def _signal_frozen_run(pattern: str, signum: int, send, env) -> None:
    """Stop the run (SIGSTOP), have Slurm deliver `signum` (`send()`), wait until it is pending,
    then continue the run: the signal arrives mid-training however fast this machine steps
    (the smoke cell trains hundreds of steps a second once its extension is built)."""
    pid = int(sh(["pgrep", "-n", "-f", pattern], env).stdout.split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        send()
        wait_for(lambda: _pending_or_running(pid, signum), 120, f"signal {signum} on pid {pid}",
                 poll=0.2)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_requeued_task_resumes_and_matches_an_uninterrupted_run(cluster_env, tmp_path):
    fixed = ["logger=none", "scale.epochs=250", "ckpt_every=10"]
    sweep = write_sweep(tmp_path / "long.yaml", tasks=["swin"], optims=["solo_4_2bit"],
                        fixed=fixed)
    out = sh([*SUBMIT, str(sweep)], cluster_env).stdout
    job = out.split("array job ")[1].split()[0]
    run_dir = next(iter(wait_for(
        lambda: list((tmp_path / "outputs").glob("smoke/swin/solo_4_2bit/*/seed0")),
        300, "the run directory")))
    pattern = "run.py task=swin optim=solo_4_2bit scale=smoke seed=0 " + " ".join(fixed)

    def log() -> str:
        return "".join(p.read_text() for p in run_dir.glob("slurm-*.log"))

    # 1. Slurm requeues the task (as on preemption): SIGTERM, checkpoint, exit, restart.
    wait_for(lambda: "step 40/" in log(), 300, "training progress", poll=0.1)
    _signal_frozen_run(pattern, signal.SIGTERM,
                       lambda: sh(["scontrol", "requeue", job], cluster_env), cluster_env)
    _resume_now(job, cluster_env)
    wait_for(lambda: "resumed from" in log(), 300, "the first resume")

    # 2. Slurm's time-limit warning (USR2 to the batch shell): the run requeues itself.
    resumed_at = int(log().split("resumed from")[1].split("at step ")[1].split("/")[0])
    assert resumed_at >= 40
    target = (resumed_at // 4 + 2) * 4  # eval lines come every 4 steps
    wait_for(lambda: f"step {target}/" in log(), 300, "progress after the first resume",
             poll=0.1)
    _signal_frozen_run(pattern, signal.SIGUSR2,
                       lambda: sh(["scancel", "--signal=USR2", "--batch", job], cluster_env),
                       cluster_env)
    wait_for(lambda: "requeued Slurm job" in log(), 120, "the self-requeue")
    _resume_now(job, cluster_env)
    wait_for(lambda: not queue(cluster_env), 600, "the task to finish", poll=2)

    text = log()
    assert text.count("resumed from") == 2 and "restart 2" in text, text[-3000:]
    second = int(text.split("resumed from")[2].split("at step ")[1].split("/")[0])
    assert target <= second < 1000, "the USR2 stop came mid-training (1000 steps)"
    record = json.loads(next((tmp_path / "records").rglob("seed0.json")).read_text())

    # The same cell straight through, outside Slurm.
    env = {**cluster_env, "SOLO_RECORDS_DIR": str(tmp_path / "straight"),
           "SOLO_OUTPUTS_DIR": str(tmp_path / "straight_out")}
    sh([sys.executable, str(ROOT / "run.py"), "task=swin", "optim=solo_4_2bit", "scale=smoke",
        *fixed], env)
    straight = json.loads(next((tmp_path / "straight").rglob("seed0.json")).read_text())
    assert record["metrics"] == straight["metrics"]
