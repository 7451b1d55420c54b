"""Run records: provenance, the record of a finished run, its path, and the atomic writer.

A record is the single source of every table cell (README, "Running experiments").
"""

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LIBRARIES = ("solo-lowbit", "torch", "numpy", "timm", "hydra-core", "omegaconf", "wandb",
             "torchao", "bitsandbytes", "sacrebleu", "transformers", "torchrec", "lm_eval")


def provenance(wandb_path: str | None = None) -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    status = _git("status", "--porcelain")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "host": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "wandb_run_path": wandb_path,
        "command": " ".join(sys.argv),
    }


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a torn file,
    and concurrent writers of different records never touch each other's files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(cfg: DictConfig) -> Path:
    """<records_dir>/<scale>/<task>/<optim>/seed<k>.json; runs with extra overrides (ablations)
    go one level deeper, under their override string, so they never replace a table cell."""
    cell = Path(cfg.records_dir) / cfg.scale.name / cfg.task.name / cfg.optim_name
    if cfg.get("variant"):
        cell = cell / str(cfg.variant)
    return cell / f"seed{cfg.seed}.json"


def make_record(cfg: DictConfig, metrics: dict, memory: dict, time_: dict, wandb_path=None,
                replica_diff: float | None = None):
    """The run's record (schema in the README). ``replica_diff``: see :func:`replica_spread`."""
    prov = provenance(wandb_path)
    prov["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    if replica_diff is not None:
        prov["replica_max_diff"] = replica_diff
    return {
        "task": cfg.task.name,
        "optim": cfg.optim_name,
        "scale": cfg.scale.name,
        "seed": int(cfg.seed),
        "variant": cfg.get("variant") or None,
        "metrics": metrics,
        "memory": memory,
        "time": time_,
        "provenance": prov,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


