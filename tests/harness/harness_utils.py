"""Helpers for the harness tests: call run.py (experiments.config.compose gives its config)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = str(ROOT / "run.py")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

# The resume, record and W&B tests run a SOLO optimizer: the point of bit-identical resume is
# that the quantized state (and its SR generator) round-trips.
SOLO_OPTIM = "solo_4_2bit"


def run_py(*args, cwd=None, env=None):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)
