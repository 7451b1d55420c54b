"""Sharded parameters (FSDP2's ``fully_shard``, DTensor): what the optimizers see of them.

Under FSDP2 every parameter and gradient is a DTensor whose ``to_local()`` is this rank's shard
(a slice along dim 0). The optimizers keep their states as plain tensors of the local shard and
step ``p.to_local()`` with ``p.grad.to_local()``, so a rank's optimizer is a single-process
optimizer over its shards, with three differences, all chosen so that every rank agrees:

- blocks are laid out per local shard (a block never straddles two ranks); a shard whose length
  is not a multiple of the block size ends in a shorter block of its own (one more scale);
- ``min_quantizable_size`` compares against the whole parameter's ``numel()``, so a parameter's
  state format is the same on every rank and the same as in a single-process run;
- stochastic rounding: shard ``i`` of ``n`` draws from its own generator seeded with
  :func:`shard_seed` ``(seed, i)`` (shard 0: ``seed`` itself); ranks holding the same shard
  (replicas under HSDP) draw the same values, different shards independent ones. Plain
  (replicated, DDP) parameters keep the optimizer's ``seed`` generator on every rank, so DDP
  replicas stay identical.

Per-rank checkpoints (``torch.save(opt.state_dict(), f"optim.rank{rank}.pt")``) record the
shard index and count, and loading one on another shard or another number of shards raises,
naming both. To change the world size, checkpoint through torch.distributed.checkpoint
(``get_optimizer_state_dict`` / ``set_optimizer_state_dict``), which returns and takes the
reshardable form of :mod:`solo.reshard`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_dtensor", "local", "shard_of", "shard_seed", "sharding_of", "check_sharding",
           "sum_over_ranks", "any_over_mesh"]

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    DTensor = None

_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: consecutive shards get distant seeds


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t`` (``t`` itself for a plain tensor)."""
    return t.to_local() if is_dtensor(t) else t


def shard_of(p: torch.Tensor) -> tuple[int, int] | None:
    """(index, count) of this rank's shard of ``p`` over the mesh dims that shard it, or None
    for a plain tensor or a DTensor replicated on every mesh dim."""
    if not is_dtensor(p):
        return None
    mesh = p.device_mesh
    coord = mesh.get_coordinate()
    index, count = 0, 1
    for dim, placement in enumerate(p.placements):
        if placement.is_shard():
            index = index * mesh.size(dim) + (coord[dim] if coord is not None else 0)
            count *= mesh.size(dim)
    return (index, count) if any(pl.is_shard() for pl in p.placements) else None


def shard_seed(seed: int, index: int) -> int:
    """The SR seed of shard ``index`` for an optimizer seeded with ``seed`` (in [0, 2**64))."""
    return (seed + index * _GOLDEN) % 2**64


def sharding_of(params) -> dict | None:
    """``{"index", "count"}`` of the first sharded parameter in ``params`` (None if none is)."""
    for p in params:
        s = shard_of(p)
        if s is not None:
            return {"index": s[0], "count": s[1]}
    return None


def check_sharding(saved: dict | None, current: dict | None) -> None:
    """Refuse a per-rank checkpoint written for another shard or another number of shards."""
    saved_n = 1 if saved is None else int(saved["count"])
    now_n = 1 if current is None else int(current["count"])
    if saved is None and now_n > 1:
        raise ValueError(
            f"checkpoint mismatch: the optimizer state has no sharding record (saved from "
            f"unsharded parameters, over 1 rank) and this optimizer's parameters are sharded "
            f"over {now_n} ranks: load a per-rank state dict saved at {now_n} ranks, or save "
            f"and load through torch.distributed.checkpoint (see solo.reshard)")
    if saved_n != now_n:
        raise ValueError(
            f"checkpoint mismatch: the optimizer state was saved with parameters sharded over "
            f"{saved_n} rank(s) and this optimizer's are sharded over {now_n}; a per-rank "
            f"state dict holds per-shard blocks: resume with {saved_n} rank(s), or save and "
            f"load through torch.distributed.checkpoint, which reshards (see solo.reshard)")
    saved_i = 0 if saved is None else int(saved["index"])
    now_i = 0 if current is None else int(current["index"])
    if saved_i != now_i:
        raise ValueError(f"checkpoint mismatch: this optimizer state is shard {saved_i} of "
                         f"{saved_n}, but this rank holds shard {now_i}; load each rank's own "
                         f"file (e.g. optim.rank{now_i}.pt)")


def sum_over_ranks(values: list[int], group=None) -> list[int]:
    """Element-wise sum of ``values`` over the ranks of ``group`` (default: all ranks)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return [int(x) for x in t.tolist()]


def any_over_mesh(flag: int, p: torch.Tensor) -> int:
    """The largest ``flag`` over all ranks of DTensor ``p``'s mesh (one all-reduce per dim)."""
    mesh = p.device_mesh
    t = torch.tensor([flag], dtype=torch.int64, device=mesh.device_type)
    for dim in range(mesh.ndim):
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=mesh.get_group(dim))
    return int(t.item())
