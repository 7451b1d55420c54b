"""Fused CPU fast path for block-quantized states (C++, built on first use with torch's JIT).

One pass per block decodes m and v, applies the AdamW/AdaBelief update and re-encodes them
(solo/csrc/fused_step.cpp), instead of the reference's ~40 tensor-wide ops per parameter. It
mirrors the eager reference (solo/update.py ``step_one``) op by op in float32. Built with AVX2
(``-march=native`` on an x86 machine that has it), blocks whose length is a multiple of 8 run
eight elements per instruction, with the same float operations in the same order as the scalar
loop that handles the rest, and the same bits (tested). Differences from the reference:

- stochastic rounding draws come from a counter-based generator inside the kernel (murmur3's
  32-bit finalizer over a Weyl sequence of the element index, keyed by a 63-bit key drawn from
  the optimizer's own torch.Generator per tensor per step), not from ``torch.rand``; checkpoints stay bit-exact because the key comes from
  the saved generator. Given the reference's draws instead (``rand=``), the codes are the same
  up to last-ulp differences of the kernel's own ``log`` (tests/solo/test_fused.py measures
  it: 100% of code bytes on the tested shapes here).
- the per-block p-quantile is exact (the same order statistics as torch.quantile), found
  without sorting: per lane the two smallest positive entries bound a short candidate list.
- supported: m with ``de``/``linear`` (nearest), v with ``de``/``linear`` (nearest) or ``log``
  (not ``log-unbiased``, whose rounding the kernels lack),
  equal block sizes that are a multiple of 8, fp32 CPU parameters of any layout (a
  non-contiguous one steps a contiguous copy: :mod:`solo.layout`). Anything else, or a
  machine where the extension cannot be built (no C++ compiler), uses the reference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import torch

from .codecs import BlockCodec, Codec, LogCodec
from .layout import contiguous_params

log = logging.getLogger(__name__)

# -march=native: built on the machine that runs it. No contraction into FMA and no fast-math:
# float results must match the reference's separate ops; errno/trap semantics (which block
# vectorizing sqrt and selects) do not change results.
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
_lock = threading.Lock()
_ext = None
_failed: str | None = None


def extension():
    """The compiled module, or None (with the reason in :func:`unavailable`)."""
    global _ext, _failed
    if _ext is not None or _failed is not None:
        return _ext
    with _lock:
        if _ext is None and _failed is None:
            if os.environ.get("SOLO_NO_FUSED"):
                _failed = "disabled by SOLO_NO_FUSED"
                return None
            try:
                from torch.utils.cpp_extension import load

                src = (Path(__file__).with_name("csrc") / "fused_step.cpp").resolve()
                _ext = load(name=build_name(src.read_bytes(), _CFLAGS, str(src)),
                            sources=[str(src)],
                            extra_cflags=_CFLAGS, verbose=False)
            except Exception as e:  # no compiler, no ninja, ...: the reference still works
                _failed = f"{type(e).__name__}: {e}"
                log.warning("solo: fused CPU step unavailable (%s); using the reference step",
                            _failed.splitlines()[0])
    return _ext


def build_name(source: bytes, flags: list[str], path: str = "") -> str:
    """The extension's name, which is also its build folder under torch's extensions
    directory: ``solo_fused_step_`` and 12 hex digits of a hash of the C++ source, the compile
    flags, the torch version and the source's ``path``. Checkouts and versions sharing that
    directory then each keep their own build, and none loads a build of another source. The
    path is in the key because the build file that torch writes names the source by its path:
    two checkouts of the same source in one folder would each recompile it at every switch."""
    h = hashlib.sha256(source)
    for part in (*flags, torch.__version__, path):
        h.update(b"\0" + part.encode())
    return f"solo_fused_step_{h.hexdigest()[:12]}"


def unavailable() -> str | None:
    """Why the fused path cannot be used here (None when it can, or was not tried yet)."""
    return _failed


def vectorized() -> bool:
    """Whether whole 8-element groups of a block take the AVX2 path (else all is scalar)."""
    ext = extension()
    return ext is not None and ext.vectorized()


def set_vectorized(on: bool) -> None:
    """Switch the AVX2 path on or off (tests compare it with the scalar path)."""
    ext = extension()
    if ext is not None:
        ext.set_vectorized(bool(on))


def supports(codec_m: Codec, codec_v: Codec, p: torch.Tensor) -> bool:
    """Whether the fused kernel implements this state format for parameter ``p``."""
    return unsupported(codec_m, codec_v, p) is None


def unsupported(codec_m: Codec, codec_v: Codec, p: torch.Tensor) -> str | None:
    """Why the fused kernel cannot step ``p`` with this state format (None when it can)."""
    if p.device.type != "cpu":
        return f"it is on {p.device}; the kernel steps CPU tensors"
    if p.dtype != torch.float32:
        return f"its dtype is {p.dtype}; the kernel steps float32"
    return format_unsupported(codec_m, codec_v, p.numel())


def format_unsupported(codec_m: Codec, codec_v: Codec, n: int) -> str | None:
    """Why the fused kernels (C++ and Triton) cannot hold this state format for a tensor of
    ``n`` elements (None when they can)."""
    if not (isinstance(codec_m, BlockCodec) and codec_m.signed and not codec_m.stochastic):
        return (f"first state (m) quantizer {codec_m.name!r}; the kernel implements 'de' "
                f"and 'linear'")
    if not getattr(codec_v, "fused_kernel", True):
        return (f"second state (v) quantizer {codec_v.name!r}; its unbiased rounding is not "
                f"in the kernels")
    if not (isinstance(codec_v, LogCodec) or (isinstance(codec_v, BlockCodec)
                                              and not codec_v.signed and not codec_v.stochastic)):
        return (f"second state (v) quantizer {codec_v.name!r}; the kernel implements 'de', "
                f"'linear' and 'log'")
    block = codec_v.block_size
    # blocks must start at a whole group of packed codes (8 codes), unless there is one block
    if codec_m.block_size != block or not (block % 8 == 0 or n <= block):
        return (f"block sizes {(codec_m.block_size, block)}; the kernel needs equal block "
                f"sizes, a multiple of 8")
    if n == 0:
        return "it has no elements"
    return None


def step(p, grad, codec_m: BlockCodec, fm: dict, codec_v: Codec, fv: dict, *, lr, beta1,
         beta2, eps, weight_decay, bc1, bc2_sqrt, belief: bool, belief_eps: float | None = None,
         rand: torch.Tensor | None = None, key: int = 0) -> None:
    """Update ``p`` and the fields ``fm``/``fv`` in place (see solo/csrc/fused_step.cpp).

    ``belief_eps``: what AdaBelief adds to s each step (default ``eps``; 0 for the reference
    SOLO code's variant). ``rand``: the reference's uniform draws, at least ``p.numel()``
    (tests); else the kernel draws its own from ``key``. The kernel checks every tensor's
    dtype, device, layout and size (a RuntimeError, never a crash).
    """
    ext = extension()
    m_levels, m_bounds = codec_m._tables(p.device)
    is_log = isinstance(codec_v, LogCodec)
    if is_log:
        v_levels = v_bounds = _EMPTY
        alphas = fv["alphas"]
    else:
        v_levels, v_bounds = codec_v._tables(p.device)
        alphas = _EMPTY
    m_lut, m_bpad = _search_table(codec_m)
    v_lut, v_bpad = (_EMPTY_I, _EMPTY) if is_log else _search_table(codec_v)
    g = grad if grad.dtype == torch.float32 and grad.is_contiguous() else grad.float().contiguous()
    # the kernel pairs elements by memory position (solo.layout)
    with contiguous_params([p]) as (dense,):
        ext.fused_step(dense, g, fm["codes"], fm["scales"], m_levels, m_bounds, codec_m.bits,
                       fv["codes"], fv["scales"], alphas, v_levels, v_bounds, codec_v.bits,
                       is_log, min(codec_m.block_size, max(p.numel(), 1)),
                       float(getattr(codec_v, "quantile", 0.0)), float(lr), float(beta1),
                       float(beta2), float(eps), float(weight_decay), float(bc1),
                       float(bc2_sqrt), belief, float(eps if belief_eps is None else belief_eps),
                       _EMPTY if rand is None else rand.contiguous(),
                       int(key), m_lut, m_bpad, v_lut, v_bpad)


_EMPTY = torch.empty(0)
_EMPTY_I = torch.empty(0, dtype=torch.int32)
_LUT_SHIFT = 16  # kLutShift in fused_step.cpp
_LUT_KEYS = (0x3F800000 >> _LUT_SHIFT) + 1


def _search_table(codec: BlockCodec) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket table for the nearest-level search over an 8-bit codebook (the kernel's Search):
    the float bits of |u| <= 1 shifted right by 16 select one of 128 buckets per binade; per
    bucket (and sign) the number of boundaries below it, and the boundaries padded with as
    many +inf as fall inside any one bucket (1 for the DE codebooks). Empty for fewer bits."""
    key = ("search", _LUT_SHIFT)
    if key not in codec._cache:
        _, bounds = codec._tables(torch.device("cpu"))
        if bounds.numel() != 255:
            codec._cache[key] = (_EMPTY_I, _EMPTY)
        else:
            k = torch.arange(_LUT_KEYS, dtype=torch.int32)
            lo = (k << _LUT_SHIFT).view(torch.float32)
            hi = ((k << _LUT_SHIFT) | ((1 << _LUT_SHIFT) - 1)).view(torch.float32)
            # u >= 0 in [lo, hi]; u < 0 in [-hi, -lo]: boundaries below the bucket's lowest
            # value, and below its highest (the most a value inside can have below it).
            base = torch.cat([torch.searchsorted(bounds, lo), torch.searchsorted(bounds, -hi)])
            top = torch.cat([torch.searchsorted(bounds, hi), torch.searchsorted(bounds, -lo)])
            depth = max(int((top - base).max()), 1)
            bpad = torch.cat([bounds, torch.full((depth,), float("inf"))])
            codec._cache[key] = (base.to(torch.int32).contiguous(), bpad.contiguous())
    return codec._cache[key]
