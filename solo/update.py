"""The update of AdamW, Adam and AdaBelief with quantized states, written once.

Per parameter: decode m and v to fp32, update them and the parameter, then re-encode them; the
update uses the fresh fp32 m and v, not their re-encoded values (docs/method.md section 2).
:func:`step_one` is the eager reference (and the caller of the fused C++ step, which repeats
its float32 operations in this order); :func:`step_triton` runs the same update for many
parameters in one Triton launch per device and dtype. Which of them steps a parameter is
:func:`solo.dispatch.choose`'s choice.
"""

from __future__ import annotations

import math

import torch

from . import fused, triton_step
from .bf16_sr import round_into_
from .distributed import local

__all__ = ["step_one", "step_triton"]


def _knobs(opt, group: dict) -> tuple:
    """(beta1, beta2, lr as a float, weight_decay, eps, eps added to AdaBelief's s)."""
    beta1, beta2 = group["betas"]
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    lr = lr.item() if isinstance(lr, torch.Tensor) else lr
    # AdaBelief's eps inside s (see solo.AdaBelief); 0 is exact: s + 0 == s for s >= 0
    eps_s = eps if opt._belief and group["eps_in_s"] else 0.0
    return beta1, beta2, lr, wd, eps, eps_s


def step_one(opt, group: dict, p: torch.Tensor, state: dict, kernel: bool) -> None:
    """One step of ``p`` and its ``state``: the eager reference, or with ``kernel`` the fused
    C++ step (solo/csrc/fused_step.cpp), which repeats the float32 operations below in this
    order, as the Triton step (solo/triton_kernel.py) does."""
    codec_m, codec_v = opt.codecs(group, p)
    fm, fv = opt._fields(state, "exp_avg", codec_m), opt._fields(state, "exp_avg_sq", codec_v)
    beta1, beta2, lr, wd, eps, eps_s = _knobs(opt, group)
    state["step"] += 1
    step = state["step"].item()
    gen = opt._generator_of(p)
    p, grad = local(p), local(p.grad)
    if opt._l2 and wd != 0:
        grad, wd = grad.float().add(p.float(), alpha=wd), 0.0
    if kernel:
        # One 63-bit key per tensor per step from the optimizer's generator: the kernel's
        # SR draws are a function of (key, element), so resuming is exact.
        key = (int(torch.randint(0, 2**63 - 1, (1,), generator=gen))
               if codec_v.stochastic else 0)
        fused.step(p, grad, codec_m, fm, codec_v, fv, lr=lr, beta1=beta1, beta2=beta2,
                   eps=eps, weight_decay=wd, bc1=1 - beta1**step,
                   bc2_sqrt=math.sqrt(1 - beta2**step), belief=opt._belief,
                   belief_eps=eps_s, key=key)
        return
    g = grad.float()
    m = codec_m.decode(fm, p.shape)
    v = codec_v.decode(fv, p.shape)
    p32 = p if p.dtype == torch.float32 else p.float()
    if wd != 0:
        p32.mul_(1 - lr * wd)
    m.lerp_(g, 1 - beta1)
    if opt._belief:
        # AdaBelief (Zhuang et al. 2020, arXiv 2010.07468, Alg. 2): EMA of (g - m)^2 + eps.
        d = g - m
        v.mul_(beta2).addcmul_(d, d, value=1 - beta2)
        if eps_s:
            v.add_(eps_s)
    else:
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bc1 = 1 - beta1**step
    bc2_sqrt = math.sqrt(1 - beta2**step)
    denom = (v.sqrt() / bc2_sqrt).add_(eps)
    p32.addcdiv_(m, denom, value=-lr / bc1)
    sr = opt._rounds_bf16(group, p)
    if p32 is not p and not sr:
        p.copy_(p32)
    # The update used the fresh fp32 m and v; only now are they requantized.
    codec_m.encode(m, fm, gen)
    codec_v.encode(v, fv, gen)
    if sr:  # after the states' draws, so they are those of a run without it
        round_into_(p, p32, gen)


def step_triton(opt, group: dict, params: list) -> None:
    """The quantized step of ``params`` (one group, one format) in one Triton launch per
    device and dtype: the update of :func:`step_one`, keys drawn as for the C++ kernel."""
    codec_m, codec_v = opt.codecs(group, params[0])
    beta1, beta2, lr, wd, eps, eps_s = _knobs(opt, group)
    by_device: dict[torch.device, list] = {}
    for p in params:
        by_device.setdefault(p.device, []).append(p)
    for device, ps in by_device.items():
        steps = []
        for p in ps:
            opt.state[p]["step"] += 1
            steps.append(opt.state[p]["step"].item())
        gen = opt.generator(device)
        # one key per tensor, in order: on a CPU generator the same numbers as the C++
        # step's one-at-a-time draws; kept on the device (no sync)
        keys = (torch.randint(0, 2**63 - 1, (len(ps),), generator=gen, device=device)
                if codec_v.stochastic else None)
        grads = [p.grad.contiguous() for p in ps]
        if opt._l2 and wd != 0:
            grads = [g.float().add(p.float(), alpha=wd) for g, p in zip(grads, ps)]
        triton_step.step(
            ps, grads,
            [opt._fields(opt.state[p], "exp_avg", codec_m) for p in ps],
            [opt._fields(opt.state[p], "exp_avg_sq", codec_v) for p in ps],
            codec_m, codec_v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=0.0 if opt._l2 else wd, bc1s=[1 - beta1**t for t in steps],
            bc2s=[math.sqrt(1 - beta2**t) for t in steps], belief=opt._belief,
            belief_eps=eps_s, keys=keys)
