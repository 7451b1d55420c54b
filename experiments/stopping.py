"""How a run stops early: stop signals (Ctrl-C too) and Slurm requeue.

The first SIGINT (Ctrl-C), SIGTERM (preemption, scancel) or SIGUSR2 (Slurm's warning) asks
the loop to save a checkpoint at the next step boundary, agreed on by every rank
(experiments.scaffold), and exit with 128 + the signal's number after one line saying where the
checkpoint is and how to resume. A second Ctrl-C stops at once, without saving, as does a
Ctrl-C before training starts (nothing to save yet): one line, exit 130, no traceback.
"""

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from experiments.errors import debug

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class StopSignals:
    """While installed, :data:`SIGNALS` set :attr:`signal` (the largest number received, as
    the ranks combine theirs) instead of ending the process; a second SIGINT raises
    KeyboardInterrupt, which :func:`interrupted` turns into one line."""

    def __init__(self):
        self.signal = None
        self.interrupts = 0
        self._old = {}
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no preemption handling
                pass

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt
        self.signal = max(self.signal or 0, signum)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def resume_hint() -> str:
    """How to resume: the exact command of a single process; torchrun's is not ours to see."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "rerun the same torchrun command to resume"
    return f"rerun the same command to resume: {shlex.join(sys.orig_argv)}"


def exit_after_stop(signum: int | None, step: int = 0, total: int = 0,
                    checkpoint: Path | None = None) -> None:
    """After the stop checkpoint (``checkpoint``, saved after ``step`` of ``total``): on a
    signal, one line on stderr (rank 0), then exit non-zero (128 + signal).

    On SIGUSR2 (Slurm's time-limit warning, ``sbatch --signal=B:USR2@<s>``) a Slurm job also
    requeues itself; a requeued job reruns the same command and resumes. On SIGTERM and SIGINT
    it only exits: a preempting or ``scontrol requeue`` Slurm requeues the job itself, and a
    plain ``scancel`` or Ctrl-C means stop.
    """
    if signum is None:
        return
    if signum == signal.SIGUSR2:
        requeue_slurm_job()
    if rank0():
        print(f"stopped by {signal.Signals(signum).name} after step {step}/{total}: checkpoint "
              f"saved to {checkpoint}; {resume_hint()}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def interrupted(run_dir):
    """A KeyboardInterrupt inside (a Ctrl-C before training, or a second one during it) ends
    the process with one line naming the last checkpoint of ``run_dir``, if any, and exit
    status 130 (``SOLO_DEBUG=1`` keeps the traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        if debug():
            raise
        ckpt = Path(run_dir) / "ckpt.pt" if run_dir else None
        kept = (f"the last checkpoint is {ckpt}; {resume_hint()}" if ckpt and ckpt.exists()
                else "no checkpoint was saved")
        if rank0():
            print(f"interrupted: stopped at once, without saving; {kept}", file=sys.stderr,
                  flush=True)
        raise SystemExit(128 + signal.SIGINT) from None


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
