"""Helpers for the harness tests: compose configs like run.py does, call run.py."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = str(ROOT / "run.py")
sys.path.insert(0, str(ROOT))  # run.py's folder, where `experiments` lives
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


def compose(overrides=()):
    """The config run.py would get for these overrides (hydra node dropped, choices kept)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from experiments import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.optim_name = OmegaConf.select(cfg, "hydra.runtime.choices.optim")
        if OmegaConf.is_missing(cfg.hydra.runtime, "output_dir"):
            cfg.run_dir = None
        del cfg.hydra
    return cfg


# The resume, record and W&B tests run a SOLO optimizer: the point of bit-identical resume is
# that the quantized state (and its SR generator) round-trips.
SOLO_OPTIM = "solo_4_2bit"


def run_py(*args, cwd=None, env=None):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)
