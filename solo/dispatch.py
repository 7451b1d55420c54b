"""Which step updates each parameter (:func:`choose`, the one place that decides), and one
optimizer step over all of them in a fixed order (:func:`run`).

The paths, and the name :meth:`solo.AdamW.kernels` reports for each (:data:`PATHS`):

=============  ===========  ==============================================================
path           reported     what runs
=============  ===========  ==============================================================
``meta``       meta         nothing but the step count (shapes only, as torch.optim)
``torch``      torch        torch's fused AdamW kernel / foreach ops (fp32 or bf16 states,
                            :mod:`solo.full_precision`), batched per group
``kernel``     cpu_fused    the fused C++ CPU step (:mod:`solo.fused`), per parameter
``triton``     triton       the Triton step (:mod:`solo.triton_step`), batched per group
``reference``  reference    the eager per-tensor update (:func:`solo.update.step_one`, or the
                            optimizer's own ``_update``: Adafactor's)
=============  ===========  ==============================================================
"""

from __future__ import annotations

import torch

from . import fused, states, triton_step
from .distributed import local
from .full_precision import takes_torch_step, torch_step
from .update import step_triton

__all__ = ["PATHS", "choose", "run"]

#: step path -> the name ``kernels()`` reports (run records store it as provenance.kernel)
PATHS = {"meta": "meta", "torch": "torch", "kernel": "cpu_fused", "triton": "triton",
         "reference": "reference"}


def choose(opt, group: dict, p: torch.Tensor, where: str = "this parameter") -> str:
    """The path (a key of :data:`PATHS`) by which ``opt`` steps ``p`` of ``group``; ``where``
    (its place in the groups) names it in messages. The first rule that applies decides:

    1. an optimizer without fused steps (``_fused_steps`` False: Adafactor): ``"meta"`` for a
       meta tensor, else ``"reference"``;
    2. states made for another shape than ``p``'s: RuntimeError (nothing is updated);
    3. a meta tensor: ``"meta"``;
    4. a bf16 parameter of a group with ``bf16_stochastic_round``: ``"reference"`` (no fused
       step rounds stochastically; ``fused=True`` raises);
    5. fp32 or bf16 states (the same for m and v) of an fp32 CPU parameter with an fp32
       gradient, AdamW or Adam, ``fused`` not False
       (:func:`solo.full_precision.takes_torch_step`): ``"torch"``;
    6. ``fused=False``: ``"reference"``;
    7. the device's fused kernel, where it implements the state format
       (``unsupported()`` of its module is None) and loads: ``"triton"`` for a tensor
       :func:`solo.triton_step.handles` (CUDA), else ``"kernel"`` (the C++ step, on the local
       shard of a DTensor);
    8. otherwise ``"reference"``; with ``fused=True`` a RuntimeError that says why the kernel
       cannot step ``p`` (its format, or the kernel unavailable here).
    """
    if not opt._fused_steps:
        return "meta" if p.device.type == "meta" else "reference"
    codec_m, codec_v = opt.codecs(group, p)
    if p in opt.state:
        states.check_shapes(opt.state[p], states.spec(codec_m, codec_v, local(p).shape), p,
                            where)
    if p.device.type == "meta":
        return "meta"
    if opt._rounds_bf16(group, p):
        if group["fused"]:
            raise RuntimeError("fused=True but bf16_stochastic_round has no fused step (its "
                               "bf16 parameters take the reference step); use fused=None")
        return "reference"
    if takes_torch_step(group, p, codec_m, codec_v, opt._belief):
        return "torch"
    if group["fused"] is False:
        return "reference"
    # one choice, two kernels; the kernel is loaded only for a format it supports
    if triton_step.handles(p):
        path, mod, q, what, load = "triton", triton_step, p, "the Triton step", triton_step.kernel
    else:
        path, mod, q, what, load = "kernel", fused, local(p), "the fused CPU step", fused.extension
    why = mod.unsupported(codec_m, codec_v, q)
    if why is None:
        if load() is not None:
            return path
        if group["fused"]:
            raise RuntimeError(f"fused=True but {what} is unavailable: {mod.unavailable()}")
    elif group["fused"]:
        raise RuntimeError(f"fused=True but {what} has no fused kernel for {where} "
                           f"(shape {tuple(p.shape)}): {why}; use fused=None (the fused "
                           f"step where it exists) or fused=False")
    return "reference"


def run(opt, work: list) -> None:
    """One step of every ``(group index, param index, group, param)`` of ``work`` (params
    with a gradient, in the groups' order). Every path is chosen first, so ``fused=True`` or a
    changed shape is refused before anything changes; ``opt._kernels`` then records the
    paths per group. The per-parameter steps run in ``work``'s order, then the batched torch
    and Triton steps group by group: the SR generators' draws depend on this order."""
    paths = [choose(opt, group, p, f"param_groups[{gi}]['params'][{pi}]")
             for gi, pi, group, p in work]
    opt._kernels = {}
    for (gi, *_), path in zip(work, paths):
        opt._kernels.setdefault(gi, set()).add(PATHS[path])
    batched: dict[str, dict[int, list]] = {"torch": {}, "triton": {}}
    for (gi, _, group, p), path in zip(work, paths):
        state = opt.state[p]
        if not state:
            opt._init_state(group, p, state)
        if path == "meta":
            state["step"] += 1
        elif path in batched:
            batched[path].setdefault(gi, []).append(p)
        else:
            opt._update(group, p, state, kernel=path == "kernel")
    for gi, ps in batched["torch"].items():
        torch_step(opt.param_groups[gi], ps, [opt.state[p] for p in ps], l2=opt._l2)
    for gi, ps in batched["triton"].items():
        step_triton(opt, opt.param_groups[gi], ps)
