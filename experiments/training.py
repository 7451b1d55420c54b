"""Recipe pieces the runners share: weight-decay groups, the epoch order, LR shapes, bf16."""

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, skip: set[str] = frozenset()):
    """Two groups: decay for weight matrices; none for biases, norms (1-D) and names in `skip`
    (e.g. timm's position-bias tables), as in the Swin and most transformer recipes. Each
    lists its ``param_names`` (torch.optim's key), which `optim.keep_fp32` matches."""
    decay, no_decay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip):
            target = no_decay
        else:
            target = decay
        target[0].append(p)
        target[1].append(name)
    return [
        {"params": decay[0], "param_names": decay[1], "weight_decay": weight_decay},
        {"params": no_decay[0], "param_names": no_decay[1], "weight_decay": 0.0},
    ]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, from (seed, epoch) alone: the data position of a run is
    then just its step, and a resumed run sees exactly the batches it would have seen. Every
    rank draws the same order (the global batch); each then takes its share."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


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


def autocast(device: torch.device, wanted) -> torch.autocast:
    """bf16 autocast when the recipe asks for it (``amp: true``) and ``device`` is CUDA."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=bool(wanted) and device.type == "cuda")
