"""Small plain helpers shared by the task runners: seeding, param groups, LR shapes, meters,
memory, checkpoints, failures, progress and W&B logging.

Runners stay flat and readable; everything here is a function a runner calls explicitly.
"""

import json
import logging
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.records import provenance, record_path, write_json_atomic

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: the run stops, leaves a crash checkpoint and writes no record."""


class DataNotFound(FileNotFoundError):
    """A data path is missing; the message names it and says how to get the data."""


# ---------------------------------------------------------------- setup


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def init_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); starts torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def param_groups(model: torch.nn.Module, weight_decay: float, skip: set[str] = frozenset()):
    """Two groups: decay for weight matrices; none for biases, norms (1-D) and names in `skip`
    (e.g. timm's position-bias tables), as in the Swin and most transformer recipes."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, from (seed, epoch) alone: the data position of a run is
    then just its step, and a resumed run sees exactly the batches it would have seen."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


# ---------------------------------------------------------------- LR shapes (multipliers)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine down to min_ratio at `total` (for LambdaLR)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def inverse_sqrt(step: int, warmup: int) -> float:
    """Transformer schedule (Vaswani et al.): linear warm-up, then 1/sqrt(step), 1 at the peak."""
    step = step + 1
    return min(step / warmup, math.sqrt(warmup / step))


# ---------------------------------------------------------------- meters


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """CUDA max allocated on GPU; the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss"  # KiB on Linux


def replica_spread(model: torch.nn.Module, world: int, device: torch.device) -> float | None:
    """Largest difference between ranks of per-tensor (sum, sum of squares) in float64: 0.0
    when the data-parallel replicas are identical. None for a single process."""
    if world <= 1:
        return None
    stats = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().pow(2).sum()])
                         for p in model.parameters()]).to(device)
    gathered = [torch.empty_like(stats) for _ in range(world)]
    torch.distributed.all_gather(gathered, stats)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


# ---------------------------------------------------------------- checkpoints


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


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a crash mid-write keeps the previous one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def find_resume(cfg: DictConfig) -> Path | None:
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        raise ValueError(f"resume={cfg.resume!r}; expected 'auto' or 'never'")
    path = Path(cfg.run_dir) / "ckpt.pt"
    return path if path.exists() else None


def crash_path(cfg: DictConfig) -> Path:
    """Where a diverged run notes its crash: beside its record, as crash-seed<k>.json (not a
    record: tables read seed<k>.json; the paper's tables print such cells as "Crash")."""
    path = record_path(cfg)
    return path.with_name(f"crash-{path.name}")


def check_finite(loss: torch.Tensor, step: int, crash: callable,
                 cfg: DictConfig | None = None) -> None:
    """Stop on NaN/inf: save a crash checkpoint (via `crash()`), note the crash beside the
    record (with ``cfg``, rank 0), then raise naming the step."""
    if torch.isfinite(loss).all():
        return
    path = crash()
    if cfg is not None and int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(crash_path(cfg), {
            "task": cfg.task.name, "optim": cfg.optim_name, "scale": cfg.scale.name,
            "seed": int(cfg.seed), "variant": cfg.get("variant") or None,
            "crashed_at_step": step, "loss": str(loss.item()), "provenance": provenance(),
            "config": OmegaConf.to_container(cfg, resolve=True)})
    raise NonFiniteLoss(
        f"non-finite loss ({loss.item()}) at step {step}; crash checkpoint: {path}. "
        "No record written. Lower the learning rate or check the data; `resume=auto` would "
        "continue from the last periodic checkpoint (ckpt.pt), not the crash one."
    )


def install_stop_signals() -> tuple[dict, callable]:
    """SIGTERM (preemption, scancel) and SIGUSR2 (Slurm's warning signal) ask the loop to save
    a checkpoint and exit at the next step boundary; rerunning the command resumes.
    Returns the flag the loop polls and a function that puts the old handlers back."""
    flag = {"signal": None}
    old = {}

    def handler(signum, frame):
        flag["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no preemption handling
            pass

    def restore():
        for sig, h in old.items():
            signal.signal(sig, h)

    return flag, restore


def stop_requested(stop: dict, step: int, cfg: DictConfig, world: int,
                   device: torch.device) -> bool:
    """True when a stop signal reached any rank, or at the drill step ``cfg.stop_at_step``.

    With several ranks the flag is all-reduced every step: a rank that stopped alone would
    leave the others waiting in the next collective.
    """
    if world > 1:
        flag = torch.tensor([stop["signal"] or 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        stop["signal"] = int(flag.item()) or None
    return stop["signal"] is not None or step == cfg.stop_at_step


def finish_stopped(stop: dict, step: int, total: int, path: Path, bar, logger) -> None:
    """After the stop checkpoint: close the bar and W&B, and on a signal exit non-zero.

    On SIGUSR2 (Slurm's time-limit warning, ``sbatch --signal=B:USR2@<s>``) a Slurm job also
    requeues itself; a requeued job reruns the same command and resumes from ``path``. On
    SIGTERM it only exits: a preempting or ``scontrol requeue`` Slurm requeues the job itself,
    and a plain ``scancel`` means stop.
    """
    bar.close()
    logger.finish(exit_code=0)
    log.info("stopped at step %d/%d (checkpoint %s); rerun the same command to resume",
             step, total, path)
    if stop["signal"] is None:
        return
    if stop["signal"] == signal.SIGUSR2:
        requeue_slurm_job()
    raise SystemExit(128 + stop["signal"])


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


# ---------------------------------------------------------------- progress and W&B


def progress(total: int, initial: int):
    from tqdm import tqdm

    # A bar on a terminal; nothing in logs of batch jobs (eval lines still go to the log).
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not sys.stderr.isatty())


class Logger:
    """The W&B run of this job, or a no-op (logger=none, or ranks other than 0)."""

    def __init__(self, cfg: DictConfig, run_id: str | None = None, enabled: bool = True):
        self.run = None
        self.history = Path(cfg.run_dir) / "metrics.jsonl"  # a local copy of the curves
        self.enabled = enabled
        if enabled:
            self.history.parent.mkdir(parents=True, exist_ok=True)
        if not enabled or cfg.logger.name == "none":
            return
        if cfg.logger.name != "wandb":
            raise ValueError(f"logger={cfg.logger.name!r}; expected wandb or none")
        import wandb

        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            dir=cfg.run_dir,
            name=f"{cfg.task.name}-{cfg.optim_name}-{cfg.scale.name}-s{cfg.seed}",
            group=cfg.task.name,
            config=OmegaConf.to_container(cfg, resolve=True),
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(silent=True),
        )

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def path(self) -> str | None:
        if self.run is None:
            return None
        return "/".join(str(p) for p in (self.run.entity, self.run.project, self.run.id) if p)

    def log(self, data: dict, step: int) -> None:
        if not self.enabled:
            return
        with open(self.history, "a") as f:
            f.write(json.dumps({"step": step, **data}) + "\n")
        if self.run is not None:
            self.run.log(data, step=step)

    def finish(self, record: dict | None = None, exit_code: int = 0) -> None:
        if self.run is None:
            return
        if record is not None:
            self.run.summary.update({k: v for k, v in record.items() if k != "config"})
        self.run.finish(exit_code=exit_code)
        self.run = None


def now() -> float:
    return time.perf_counter()
