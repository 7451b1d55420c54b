"""Exact optimizer-state memory, measured or predicted (bytes).

``quantized`` counts the stored codes, scales and alphas of quantized states; ``full_precision``
counts fp32/bf16 states and step counters. Works for any torch optimizer: integer tensors (codes)
and the float tensors beside them named like scales (``scale``, ``absmax``, ``qmap``, ``alpha``)
are quantized; tensor subclasses (torchao) are counted through their inner tensors.
"""

from __future__ import annotations

import torch

__all__ = ["state_bytes", "estimate_state_bytes"]

_SCALE_HINTS = ("scale", "absmax", "qmap", "alpha", "codes")


def _inner(t: torch.Tensor) -> list[torch.Tensor]:
    if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [x for n in names for x in _inner(getattr(t, n))]
    return [t]


def state_bytes(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """``{"total", "quantized", "full_precision"}``: bytes of ``optimizer.state`` now."""
    out = {"quantized": 0, "full_precision": 0}
    seen: set = set()
    for st in optimizer.state.values():
        tensors = {k: v for k, v in st.items() if isinstance(v, torch.Tensor)}
        has_codes = any(not x.is_floating_point() for v in tensors.values() for x in _inner(v)
                        if x.dtype != torch.bool) and any(k != "step" for k in tensors)
        for key, v in tensors.items():
            sub = _inner(v)
            subclass = len(sub) > 1 or sub[0] is not v
            quant = subclass or not v.is_floating_point() or (
                has_codes and any(h in key for h in _SCALE_HINTS))
            if key == "step":
                quant = False
            for x in sub:
                ident = (x.untyped_storage().data_ptr(), x.device) if x.numel() else None
                if ident is not None and ident in seen:
                    continue
                seen.add(ident)
                out["quantized" if quant else "full_precision"] += x.numel() * x.element_size()
    out["total"] = out["quantized"] + out["full_precision"]
    return out


def estimate_state_bytes(model: torch.nn.Module, preset: str | None = None,
                         **optimizer_kwargs) -> dict[str, int]:
    """The state bytes :func:`state_bytes` will report after the first step, without steps.

    ``model`` may live on the meta device (nothing is allocated). Give a ``preset`` name
    (``solo.PRESETS``) and/or :class:`solo.AdamW` keyword arguments (bits, quantizers, ...).
    Trainable parameters only.
    """
    from .optim import AdamW
    from .presets import PRESETS

    params = [p for p in model.parameters() if p.requires_grad]
    opt = PRESETS[preset](params, **optimizer_kwargs) if preset else AdamW(params, **optimizer_kwargs)
    out = {"quantized": 0, "full_precision": 0}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, (shape, dtype) in opt.state_spec(group, p).items():
                n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
                quant = key != "step" and key not in ("exp_avg", "exp_avg_sq")
                out["quantized" if quant else "full_precision"] += n
    out["total"] = out["quantized"] + out["full_precision"]
    return out
