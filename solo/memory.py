"""Exact optimizer-state memory, measured or predicted (bytes).

``quantized`` counts the stored codes, scales and alphas of quantized states; ``full_precision``
counts fp32/bf16 states and step counters. Works for any torch optimizer: integer tensors (codes)
and the float tensors beside them named like scales (``scale``, ``absmax``, ``qmap``, ``alpha``)
are quantized; tensor subclasses (torchao) are counted through their inner tensors. DTensor
states (torch.optim under FSDP2) count as this rank's local tensor.
"""

from __future__ import annotations

import torch

from .distributed import is_dtensor, sum_over_ranks

__all__ = ["state_bytes", "estimate_state_bytes"]

_SCALE_HINTS = ("scale", "absmax", "qmap", "alpha", "codes")


def _inner(t: torch.Tensor) -> list[torch.Tensor]:
    if is_dtensor(t):
        return _inner(t.to_local())
    if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [x for n in names for x in _inner(getattr(t, n))]
    return [t]


def state_bytes(optimizer: torch.optim.Optimizer, *, all_ranks: bool = False,
                group=None) -> dict[str, int]:
    """``{"total", "quantized", "full_precision"}``: bytes of ``optimizer.state`` on this rank
    now (under FSDP2, of this rank's shards).

    ``all_ranks=True`` sums the bytes over the ranks of ``group`` (default: all ranks; one
    all-reduce that every rank must call); without torch.distributed initialised it is this
    process's bytes.
    """
    out = {"quantized": 0, "full_precision": 0}
    # identity -> tensor: tensors sharing memory count once. A meta tensor has no memory
    # (data_ptr 0 for all), so it counts by itself; holding it keeps its id() unique.
    seen: dict = {}
    for st in optimizer.state.values():
        tensors = {k: v for k, v in st.items() if isinstance(v, torch.Tensor)}
        has_codes = any(not x.is_floating_point() for v in tensors.values() for x in _inner(v)
                        if x.dtype != torch.bool) and any(k != "step" for k in tensors)
        for key, v in tensors.items():
            sub = _inner(v)
            subclass = len(sub) > 1 or (sub[0] is not v and not is_dtensor(v))
            quant = subclass or not v.is_floating_point() or (
                has_codes and any(h in key for h in _SCALE_HINTS))
            if key == "step":
                quant = False
            for x in sub:
                if not x.numel():
                    continue
                ident = (id(x) if x.device.type == "meta" else x.untyped_storage().data_ptr(),
                         x.device)
                if ident in seen:
                    continue
                seen[ident] = x
                out["quantized" if quant else "full_precision"] += x.numel() * x.element_size()
    if all_ranks:
        out["quantized"], out["full_precision"] = sum_over_ranks(
            [out["quantized"], out["full_precision"]], group)
    out["total"] = out["quantized"] + out["full_precision"]
    return out


def estimate_state_bytes(model: torch.nn.Module, preset: str | None = None, *,
                         optimizer: type | None = None, **optimizer_kwargs) -> dict[str, int]:
    """The state bytes :func:`state_bytes` will report after the first step, without steps.

    ``model`` may live on the meta device (nothing is allocated). Give a ``preset`` name
    (``solo.PRESETS``; another name is a ValueError listing them), ``keep_fp32=`` name
    patterns, and/or keyword arguments of ``optimizer`` (default :class:`solo.AdamW`; any solo
    optimizer: :class:`solo.Adafactor`, ...) (bits, quantizers, ...).
    Trainable parameters only. For a model sharded with FSDP2 (DTensor parameters, meta
    or not) it is this rank's bytes, with the per-shard block layout the optimizer will use.
    """
    from .optim import AdamW
    from .overrides import keep_fp32
    from .presets import get

    keep = optimizer_kwargs.pop("keep_fp32", None)
    params = [p for p in model.parameters() if p.requires_grad]
    if keep:
        params = keep_fp32([(n, p) for n, p in model.named_parameters() if p.requires_grad], keep)
    opt = (get(preset)(params, **optimizer_kwargs) if preset
           else (optimizer or AdamW)(params, **optimizer_kwargs))
    out = {"quantized": 0, "full_precision": 0}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, (shape, dtype) in opt.state_spec(group, p).items():
                n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
                quant = key.endswith(("_codes", "_scales", "_alphas"))  # a codec's fields
                out["quantized" if quant else "full_precision"] += n
    out["total"] = out["quantized"] + out["full_precision"]
    return out
