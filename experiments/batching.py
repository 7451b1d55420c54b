"""The global batch and gradient accumulation: one recipe whatever the number of GPUs.

A recipe gives the GLOBAL batch (items per optimizer step over all ranks: samples, or padded
tokens for the Transformer) and optionally the micro-batch (items per forward/backward on one
GPU). The plan derives the accumulation steps from the world size:

    global = world x accum x micro

so 8 GPUs x 128 images and 2 GPUs x 4 micro-batches x 128 images take the same optimizer step.
A global batch the world size does not divide is refused, not rounded: a silently different
batch would change the recipe. Gradients are synchronised once per optimizer step (the last
micro-step); the loss of each micro-batch is its sum over items divided by the global item
count, so the accumulated gradient is that of the mean over the global batch.
"""

import contextlib
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Plan:
    """How a global batch is split: ``accum`` micro-batches of ``micro`` items on each of
    ``world`` ranks. ``unit``: what an item is ("samples", "tokens")."""

    global_batch: int
    micro: int
    accum: int
    world: int
    unit: str

    def record(self) -> dict:
        """The plan as the record stores it (``record["batch"]``)."""
        return asdict(self)


def plan(global_batch: int, world: int, micro: int | None = None, unit: str = "samples",
         key: str = "scale.batch_size") -> Plan:
    """Split ``global_batch`` over ``world`` ranks into micro-batches of ``micro`` items (None:
    one micro-batch per rank, no accumulation). A micro-batch larger than a rank's share is
    capped at the share (more GPUs than the recipe needs: accumulation 1). ``key``: the recipe
    key named in errors."""
    if global_batch < 1 or world < 1:
        raise ValueError(f"{key}={global_batch} with world size {world}: both must be >= 1")
    if global_batch % world:
        raise ValueError(
            f"{key}={global_batch} {unit} is not divisible by the world size {world}: every "
            f"rank must take an equal share. Use a multiple of {world} (e.g. "
            f"{key}={global_batch // world * world or world}) or a number of GPUs that "
            f"divides {global_batch}.")
    share = global_batch // world
    micro = min(micro or share, share)
    if micro < 1 or share % micro:
        raise ValueError(
            f"micro-batch {micro} {unit} does not divide a rank's share of the global batch "
            f"({key}={global_batch} / {world} ranks = {share}); choose a divisor of {share}.")
    return Plan(global_batch, micro, share // micro, world, unit)


@contextlib.contextmanager
def grad_sync(model: torch.nn.Module, sync: bool):
    """Run one micro-step's forward and backward with (``sync=True``) or without gradient
    synchronisation: DDP's ``no_sync()``, FSDP2's ``set_requires_gradient_sync(False)``; a
    plain module has nothing to synchronise. Wrap the forward too: DDP decides at forward."""
    if sync:
        yield
    elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (fully_shard)
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def backward(loss_sum: torch.Tensor, global_items: int, world: int) -> None:
    """Backward of this micro-batch's part of the global-batch mean: ``loss_sum`` (summed over
    its items) / ``global_items``, times ``world`` because DDP and FSDP average gradients over
    ranks where the mean needs their sum. A global batch without any loss item (every response
    truncated away) has a zero loss sum: its gradient is zero, not a division by zero."""
    (loss_sum * (world / max(1, global_items))).backward()


def accumulate(model: torch.nn.Module, micro_batches: list, loss_of, global_items: int,
               world: int, check=None) -> tuple[list[torch.Tensor], int]:
    """Forward and backward of one optimizer step's micro-batches: gradients synchronised on
    the last one only (:func:`grad_sync`), each loss scaled by :func:`backward`, so the
    accumulated gradient is that of the mean over the ``global_items`` items of the global
    batch. ``loss_of(micro_batch)`` -> (its loss summed over its items, a tensor; how many
    items that is); ``check(loss_sum)`` runs before each backward. Returns this rank's loss
    sums (detached, one a micro-batch) and its item count, for the runner's mean."""
    losses, items = [], 0
    for i, micro_batch in enumerate(micro_batches):
        with grad_sync(model, sync=i == len(micro_batches) - 1):
            loss_sum, n = loss_of(micro_batch)
            if check is not None:
                check(loss_sum)
            backward(loss_sum, global_items, world)
        losses.append(loss_sum.detach())
        items += n
    return losses, items


def split(items, accum: int) -> list:
    """``items`` (a tensor of indices, or a list) in ``accum`` equal consecutive parts."""
    n = len(items)
    if n % accum:
        raise ValueError(f"{n} items do not split into {accum} equal micro-batches")
    step = n // accum
    return [items[i : i + step] for i in range(0, n, step)]
