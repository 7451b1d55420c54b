"""ckpt.pt: what it holds, how it is written and read, and when it may be resumed.

A checkpoint holds the model, optimizer and scheduler state, the step (the data position
follows from it: training.epoch_order), every rank's RNG state, the run's meters, and the
run's identity: task, optimizer and its config, scale settings, seed and world size. A resume
whose identity differs is refused, naming what differs.
"""

import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.errors import CheckpointError

START_OVER = ("start over with `resume=never` (which replaces it), or move the file away to "
              "keep it")
REQUIRED = ("model", "optimizer", "step", "rng", "identity", "meters")


def identity(cfg: DictConfig, world: int) -> dict:
    """What a checkpoint must agree on to be resumed by this run."""
    return {"task": cfg.task.name, "optim": cfg.optim_name,
            "optim_config": OmegaConf.to_container(cfg.optim, resolve=True),
            "scale": OmegaConf.to_container(cfg.scale, resolve=True),
            "seed": int(cfg.seed), "beta1": cfg.get("beta1"), "world_size": world}


def _flat(d, prefix=""):
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(saved: dict, here: dict) -> list[str]:
    """``key: <saved> in the checkpoint, <here> in this run`` for every key that differs."""
    a, b = _flat(saved), _flat(here)
    return [f"{k}: {a.get(k, '<unset>')!r} in the checkpoint, {b.get(k, '<unset>')!r} here"
            for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]


def check_identity(path: Path, saved: dict | None, here: dict) -> None:
    if saved is None:
        raise CheckpointError(f"{path} names no optimizer or config (written by an older "
                              f"harness) and cannot be checked against this run; {START_OVER}.")
    diff = differences(saved, here)
    if diff:
        raise CheckpointError(f"{path} belongs to another run: " + "; ".join(diff[:8])
                              + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
                              + f". Resume it with the same settings, or {START_OVER}.")


def load(path: Path) -> dict:
    """The checkpoint at ``path``; a truncated, empty or foreign file raises CheckpointError
    naming the file and how to start over, so a requeued job fails once instead of looping."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, RuntimeError (zip), UnpicklingError, ...
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{reason}); it may be truncated or damaged. To discard it, "
                              f"{START_OVER}.") from err
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)} (not a checkpoint of this "
                              f"harness); {START_OVER}.")
    return ckpt


def save(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a crash mid-write keeps the previous one.
    The run-folder lock makes this process the only writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's array as a tensor, so the checkpoint loads with weights_only=True
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
