"""Full-precision states (``none`` / ``bf16`` for both) through torch's multi-tensor kernels.

fp32 states of fp32 CPU parameters take torch's fused AdamW kernel (within torch's
fused-vs-foreach tolerance of the eager reference, solo/update.py ``step_one``); bf16 states take
torch's foreach ops in the reference's order (its exact bits: one ulp of fp32 before rounding
to bf16 would move a state by one bf16 ulp). Parameters of any memory layout: see
:mod:`solo.layout`.
"""

from __future__ import annotations

import math

import torch

from .codecs import Codec, FullCodec
from .distributed import local
from .layout import contiguous_params

__all__ = ["takes_torch_step", "torch_step"]

# elements per foreach chunk of the bf16-state step (its fp32 temporaries: ~3 x 4 MiB)
_CHUNK = 2**20


def takes_torch_step(group: dict, p: torch.Tensor, cm: Codec, cv: Codec, belief: bool) -> bool:
    """Whether ``p`` takes torch's multi-tensor kernels: fp32 or bf16 states (the same for m
    and v) of an fp32 CPU parameter with an fp32 gradient, AdamW, ``fused`` not False."""
    if belief or group["fused"] is False:
        return False
    if p.device.type != "cpu" or p.dtype != torch.float32 or p.grad.dtype != torch.float32:
        return False
    return isinstance(cm, FullCodec) and isinstance(cv, FullCodec) and cm.dtype == cv.dtype


def torch_step(group: dict, params: list, states: list[dict], l2: bool = False) -> None:
    """One AdamW step of ``params`` (one group) and their ``states`` (``exp_avg``,
    ``exp_avg_sq``: contiguous; ``step``: incremented here). ``l2``: Adam's L2 weight decay
    (added to the gradient) instead of AdamW's decoupled decay."""
    beta1, beta2 = group["betas"]
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    lr = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
    steps = [st["step"] for st in states]
    grads = [local(p.grad) for p in params]
    params = [local(p) for p in params]
    if l2 and wd != 0:
        grads = [g.add(p, alpha=wd) for g, p in zip(grads, params)]
        wd = 0.0
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    torch._foreach_add_(steps, 1)
    if states[0]["exp_avg"].dtype == torch.float32:
        # the kernel pairs elements by memory position: every tensor it gets is contiguous
        with contiguous_params(params) as dense:
            torch._fused_adamw_(dense, grads, [st["exp_avg"] for st in states],
                                [st["exp_avg_sq"] for st in states], [], steps, amsgrad=False,
                                lr=lr, beta1=float(beta1), beta2=float(beta2),
                                weight_decay=float(wd), eps=float(eps), maximize=False,
                                grad_scale=None, found_inf=None)
        return
    # bf16 states: decoded to fp32, the reference's ops in its order, rounded back; in chunks
    # of about _CHUNK elements, so a step never holds fp32 copies of all states. CPU foreach
    # ops run per tensor through elementwise ops, which follow logical indices: any layout.
    start = 0
    while start < len(params):
        end, n = start, 0
        while end < len(params) and (n == 0 or n + params[end].numel() <= _CHUNK):
            n += params[end].numel()
            end += 1
        _foreach_bf16(params[start:end], grads[start:end], states[start:end],
                      lr, beta1, beta2, wd, eps)
        start = end


def _foreach_bf16(params, grads, states, lr, beta1, beta2, wd, eps) -> None:
    ms = [st["exp_avg"].float() for st in states]
    vs = [st["exp_avg_sq"].float() for st in states]
    ts = [st["step"].item() for st in states]
    if wd != 0:
        torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(ms, grads, 1 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in ts])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, ms, denom, [-lr / (1 - beta1**t) for t in ts])
    torch._foreach_copy_([st["exp_avg"] for st in states], ms)
    torch._foreach_copy_([st["exp_avg_sq"] for st in states], vs)
