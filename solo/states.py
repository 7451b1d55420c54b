"""The states of solo's Adam-style optimizers: their keys, shapes and dtypes, and the checks that
stored states match them.

A parameter's two states (first moment ``exp_avg``, second ``exp_avg_sq``) live only in their
codecs' fields between steps: ``<name>_codes`` (packed uint8), ``<name>_scales`` and
``<name>_alphas`` (fp32 per block) for a quantized state, ``<name>`` (fp32 or bf16) for a full
one, beside the fp32 scalar ``step``.
"""

from __future__ import annotations

import torch

from .codecs import Codec

__all__ = ["STATES", "key", "spec", "fields", "check_shapes", "check_saved"]

#: the two states of a parameter, first moment (signed) then second (unsigned)
STATES = ("exp_avg", "exp_avg_sq")


def key(name: str, field: str) -> str:
    """The state key of field ``field`` of state ``name`` (a full state's ``value`` is the
    state's own name)."""
    return name if field == "value" else f"{name}_{field}"


def spec(codec_m: Codec, codec_v: Codec, shape: torch.Size) -> dict:
    """State key -> (shape, dtype) of a parameter of ``shape`` with these codecs."""
    out = {"step": ((), torch.float32)}
    for name, codec in zip(STATES, (codec_m, codec_v)):
        for field, sd in codec.spec(shape).items():
            out[key(name, field)] = sd
    return out


def fields(state: dict, name: str, codec: Codec) -> dict:
    """The codec fields of state ``name`` in a parameter's ``state`` (tensors, not copies)."""
    if not codec.quantized:
        return {"value": state[name]}
    return {f: state[f"{name}_{f}"] for f in codec.spec(torch.Size([1]))}


def check_shapes(state: dict, expected: dict, p: torch.Tensor, where: str) -> None:
    """Refuse a parameter whose shape changed after its states were made (they would be read
    as another tensor's), naming it, before anything is updated."""
    for k, (shape, _) in expected.items():
        t = state.get(k)
        if isinstance(t, torch.Tensor) and tuple(t.shape) != tuple(shape):
            raise RuntimeError(
                f"{where} has shape {tuple(p.shape)} but its optimizer states were made for "
                f"another shape ({k!r} has shape {tuple(t.shape)}, expected {tuple(shape)}); "
                f"a parameter cannot change shape once it has states: restore its shape, or "
                f"drop its states (del optimizer.state[param]) to start them afresh")


def check_saved(st: dict, expected: dict, p: torch.Tensor, where: str) -> None:
    """A saved state has every field of ``expected`` with its shape and dtype, and finite
    values (scales >= 0, alphas in (0, 1)): a NaN loaded into a scale would turn the parameter
    NaN."""
    for k, (shape, dtype) in expected.items():
        if k not in st:
            raise ValueError(f"checkpoint mismatch: state field {k!r} missing for {where} "
                             f"(shape {tuple(p.shape)})")
        t = st[k]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"checkpoint state field {k!r} of {where} is a "
                             f"{type(t).__name__}, expected a tensor")
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ValueError(
                f"checkpoint mismatch in state field {k!r} for {where} (shape "
                f"{tuple(p.shape)}): saved {tuple(t.shape)} {t.dtype}, expected "
                f"{tuple(shape)} {dtype}")
        if not t.is_floating_point() or t.device.type == "meta":
            continue
        ok = bool(torch.isfinite(t).all())
        if ok and (k == "step" or k.endswith("_scales") or k == "exp_avg_sq"):
            ok = bool((t >= 0).all())
        if ok and k.endswith("_alphas"):
            ok = bool(((t > 0) & (t < 1)).all())
        if not ok:
            allowed = ("in (0, 1)" if k.endswith("_alphas") else
                       ">= 0 and finite" if k in ("step", "exp_avg_sq")
                       or k.endswith("_scales") else "finite")
            raise ValueError(f"checkpoint state field {k!r} of {where} holds values that are "
                             f"not {allowed} (NaN or inf?); it would corrupt the parameters")
