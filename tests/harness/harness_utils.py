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


def in_process(task, tmp_path):
    """``go(*overrides, run_dir=, records=, optim=, scale=)``: run ``task``'s runner in this
    process (smoke scale unless told), its run folder and records under ``tmp_path``; returns
    (record or None, run_dir)."""
    import importlib

    from omegaconf import open_dict

    from experiments.config import compose

    main = importlib.import_module(f"experiments.{task}.run").main

    def go(*overrides, run_dir="run", records="records", optim=SOLO_OPTIM, scale="smoke"):
        cfg = compose([f"task={task}", f"scale={scale}", f"optim={optim}", "logger=none",
                       *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / run_dir)
            cfg.records_dir = str(tmp_path / records)
        return main(cfg), Path(cfg.run_dir)

    return go
