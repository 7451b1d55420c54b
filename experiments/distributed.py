"""Processes, devices and seeds: one process per rank (torchrun), or a single process.

Seeding (the official Swin/DeiT recipes do the same): every rank seeds with ``seed`` before the
model is built, so the replicas start identical; once it is built, ranks > 0 of a multi-rank run
reseed with ``seed + rank`` so that augmentation, dropout, drop-path and Mixup draw differently
per rank. A single process keeps its stream (its seed + rank is its seed).
"""

import os
import random
import resource

import numpy as np
import torch


def init() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); starts torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is cuda when available, else cpu; cuda means this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def data_seed(seed: int, rank: int) -> int:
    """The seed of a rank's data-side randomness (recorded per rank)."""
    return seed + rank


def seed_data_side(seed: int, rank: int, world: int) -> None:
    """Call once the model is built: see the module docstring."""
    if world > 1:
        set_seed(data_seed(seed, rank))


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


def any_rank(flag: int, world: int, device: torch.device) -> int:
    """The largest of every rank's ``flag`` (a stop signal number, or 0)."""
    if world <= 1:
        return flag
    t = torch.tensor([flag], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def gather(obj, world: int) -> list:
    """Every rank's ``obj`` (a picklable value), in rank order, on every rank."""
    if world <= 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out
