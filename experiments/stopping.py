"""How a run stops early: stop signals and Slurm requeue, and a diverged loss."""

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)


class StopSignals:
    """SIGTERM (preemption, scancel) and SIGUSR2 (Slurm's warning signal) ask the loop to save
    a checkpoint and exit at the next step boundary; rerunning the command resumes."""

    def __init__(self):
        self.signal = None
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no preemption handling
                pass

    def _handle(self, signum, frame):
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def exit_after_stop(signum: int | None) -> None:
    """After the stop checkpoint: on a signal exit non-zero (128 + signal).

    On SIGUSR2 (Slurm's time-limit warning, ``sbatch --signal=B:USR2@<s>``) a Slurm job also
    requeues itself; a requeued job reruns the same command and resumes. On SIGTERM it only
    exits: a preempting or ``scontrol requeue`` Slurm requeues the job itself, and a plain
    ``scancel`` means stop.
    """
    if signum is None:
        return
    if signum == signal.SIGUSR2:
        requeue_slurm_job()
    raise SystemExit(128 + signum)


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this Slurm job (array tasks have their own SLURM_JOB_ID)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or int(os.environ.get("RANK", "0")) != 0:
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode:
        log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())
        return False
    log.info("requeued Slurm job %s", job)
    return True
