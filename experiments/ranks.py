"""Processes, devices and seeds: one process per rank (torchrun), or a single process.

Seeding (the official Swin/DeiT recipes do the same): every rank seeds with ``seed`` before the
model is built, so the replicas start identical; once it is built, ranks > 0 of a multi-rank run
reseed with ``seed + rank`` so that augmentation, dropout, drop-path and Mixup draw differently
per rank. A single process keeps its stream (its seed + rank is its seed).
"""

import datetime
import os
import random
import resource

import numpy as np
import torch

# How long ranks > 0 wait for rank 0's solo work (the BPE, lm-eval of a 7B model: MMLU 5-shot
# alone takes hours), far past the default process-group timeout (NCCL's is 10 minutes).
RANK0_WAIT = datetime.timedelta(hours=48)
_rank0_group = None  # a gloo group with the RANK0_WAIT timeout, made by init()


def init() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); starts torch.distributed when launched by torchrun."""
    global _rank0_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1 and _rank0_group is None:
        # Made here, by every rank at the same point: new_group is itself a collective.
        _rank0_group = torch.distributed.new_group(backend="gloo", timeout=RANK0_WAIT)
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


def wait_for_rank0(world: int) -> None:
    """A barrier for work only rank 0 does (training the BPE, lm-eval): the other ranks wait
    on a gloo group whose timeout is RANK0_WAIT, not on the default group, whose timeout
    (10 minutes with NCCL) such work can outlast. Every rank calls it once per such work:
    ranks > 0 before using its result (or after skipping it), rank 0 after finishing it."""
    if world <= 1:
        return
    if _rank0_group is None:
        raise RuntimeError("wait_for_rank0() before ranks.init(): call init() first")
    torch.distributed.barrier(group=_rank0_group)


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
