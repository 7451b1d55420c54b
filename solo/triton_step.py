"""Fused GPU step for block-quantized states: one Triton launch per parameter group.

The kernel (solo/triton_kernel.py) updates one block per program; a launch covers every
parameter of a group with the same parameter and gradient dtype, through a small table of
per-tensor addresses (multi-tensor, as torch's ``_foreach`` kernels), so a step costs one
launch per group instead of one per tensor. It follows the eager reference
(solo/update.py ``step_one``) and the C++ CPU step (solo/csrc/fused_step.cpp) operation by
operation in float32, and draws its stochastic-rounding numbers from the same counter-based
generator as the C++ step, keyed per tensor per step from the optimizer's own generator:
given the same key both kernels write the same codes, and a checkpoint resumes exactly.

Selected by ``fused=None`` (the default) for CUDA parameters and required by ``fused=True``.
Supported: the formats of the fused CPU step (m: ``de``/``linear`` nearest; v:
``de``/``linear`` nearest or ``log``; equal block sizes, a multiple of 8, at most
:data:`MAX_BLOCK`), float32 or bfloat16 parameters of any layout (:mod:`solo.layout`).
Without a GPU the kernel runs in Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``
set before triton is imported) when tests switch :data:`_on_cpu` on; the optimizer never
picks it on CPU itself.
"""

from __future__ import annotations

import contextlib

import torch

from .codecs import BlockCodec, Codec, LogCodec
from .fused import format_unsupported
from .layout import contiguous_params
from .packing import packed_numel

#: largest block (elements) one program holds; larger blocks take the reference step
MAX_BLOCK = 4096
#: tests: also run CPU tensors through the kernel (in Triton's interpreter)
_on_cpu = False
_kernel = None
_failed: str | None = None
_DTYPES = (torch.float32, torch.bfloat16)
_TINY = torch.finfo(torch.float32).tiny


def kernel():
    """The jitted kernel, or None when triton cannot be imported (reason: :func:`unavailable`)."""
    global _kernel, _failed
    if _kernel is None and _failed is None:
        try:
            from .triton_kernel import quantized_step_kernel
            _kernel = quantized_step_kernel
        except Exception as e:  # no triton on this install: the reference still works
            _failed = f"{type(e).__name__}: {e}"
    return _kernel


def unavailable() -> str | None:
    """Why the Triton step cannot run here (None when it can, or was not tried yet)."""
    return _failed


def handles(p: torch.Tensor) -> bool:
    """Whether the Triton step is this device's fused path (CUDA; CPU only for tests)."""
    return p.device.type == "cuda" or (_on_cpu and p.device.type == "cpu")


def supports(codec_m: Codec, codec_v: Codec, p: torch.Tensor) -> bool:
    """Whether the kernel implements this state format for parameter ``p``."""
    return unsupported(codec_m, codec_v, p) is None


def unsupported(codec_m: Codec, codec_v: Codec, p: torch.Tensor) -> str | None:
    """Why the kernel cannot step ``p`` with this state format (None when it can)."""
    if not handles(p):
        return f"it is on {p.device}; the kernel steps CUDA tensors"
    if p.dtype not in _DTYPES:
        return f"its dtype is {p.dtype}; the kernel steps float32 and bfloat16"
    if type(p) not in (torch.Tensor, torch.nn.Parameter):
        # DTensor shards and other subclasses: data_ptr is not the data
        return f"it is a {type(p).__name__}; the kernel steps plain tensors"
    why = format_unsupported(codec_m, codec_v, p.numel())
    if why is None and min(codec_v.block_size, p.numel()) > MAX_BLOCK:
        why = f"block size {codec_v.block_size}; the kernel holds at most {MAX_BLOCK}"
    return why


def step(params, grads, fields_m, fields_v, codec_m: BlockCodec, codec_v: Codec, *, lr, beta1,
         beta2, eps, weight_decay, bc1s, bc2s, belief: bool, belief_eps: float,
         keys: torch.Tensor | None = None, rands=None) -> None:
    """Update ``params`` and their state fields in place, one launch per (param, grad) dtype.

    ``fields_m``/``fields_v``: per parameter the codec fields (``codes``, ``scales``,
    ``alphas``); ``bc1s``/``bc2s``: per parameter 1 - beta1^t and sqrt(1 - beta2^t);
    ``keys``: int64 SR keys, one per parameter, on the parameters' device (stochastic v
    codecs); ``rands``: per parameter the reference's uniform draws (tests), else None. Every
    tensor's dtype, device, layout and size is checked first (RuntimeError, never a bad
    address).
    """
    if not params:
        return
    device = params[0].device
    if any(p.device != device for p in params):
        raise RuntimeError("Triton step: every parameter of one call must be on one device, "
                           f"got {sorted({str(p.device) for p in params})}")
    if keys is not None and (keys.device != device or keys.numel() != len(params)):
        raise RuntimeError(f"Triton step: keys must hold {len(params)} int64 on {device}, got "
                           f"{keys.numel()} on {keys.device}")
    kern = kernel()
    if kern is None:
        raise RuntimeError(f"the Triton step is unavailable: {_failed}")
    is_log = isinstance(codec_v, LogCodec)
    if is_log and keys is None and rands is None:
        raise ValueError("the log codec rounds stochastically: pass keys (or rands)")
    for i, p in enumerate(params):
        _check(p, grads[i], fields_m[i], fields_v[i], codec_m, codec_v, is_log,
               None if rands is None else rands[i], f"params[{i}]")
    # the kernel pairs elements by memory position (solo.layout)
    with contiguous_params(params) as dense:
        _launch(dense, grads, fields_m, fields_v, codec_m, codec_v, is_log, kern, lr=lr,
                beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, bc1s=bc1s,
                bc2s=bc2s, belief=belief, belief_eps=belief_eps, keys=keys, rands=rands)


def _launch(params, grads, fields_m, fields_v, codec_m, codec_v, is_log, kern, *, lr, beta1,
            beta2, eps, weight_decay, bc1s, bc2s, belief, belief_eps, keys, rands) -> None:
    device = params[0].device
    buckets: dict[tuple, list[int]] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        buckets.setdefault((p.dtype, g.dtype), []).append(i)
    m_levels, m_bounds = codec_m._tables(device)
    v_levels, v_bounds = (m_levels, m_bounds) if is_log else codec_v._tables(device)
    vtop = 2**codec_v.bits - 1
    small_w = abs(float(1.0 - beta1)) < 0.5  # which of torch's two lerp formulas
    quantile = float(getattr(codec_v, "quantile", 0.0))
    for (pdt, gdt), idx in buckets.items():
        rows, first, nblocks = [], [], 0
        block = min(codec_m.block_size, max(params[i].numel() for i in idx))
        for i in idx:
            fm, fv = fields_m[i], fields_v[i]
            n = params[i].numel()
            rows.append([params[i].data_ptr(), grads[i].data_ptr(), fm["codes"].data_ptr(),
                         fm["scales"].data_ptr(), fv["codes"].data_ptr(),
                         fv["scales"].data_ptr(), fv["alphas"].data_ptr() if is_log else 0,
                         rands[i].data_ptr() if rands is not None else 0, n])
            first.append(nblocks)
            nblocks += -(-n // block)
        floats = torch.tensor([[-lr / bc1s[i], bc2s[i]] for i in idx], dtype=torch.float32)
        ptrs = torch.tensor(rows, dtype=torch.int64)
        first_t = torch.tensor(first, dtype=torch.int64)
        sel = keys[idx] if keys is not None else torch.zeros(len(idx), dtype=torch.int64)
        bp2 = max(8, 1 << (block - 1).bit_length())
        # Triton launches on the current CUDA device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            kern[(nblocks,)](
                ptrs.to(device), floats.to(device), sel.to(device), first_t.to(device),
                len(idx), m_levels, m_bounds, v_levels, v_bounds,
                float(1.0 - lr * weight_decay), float(1.0 - beta1), float(beta2),
                float(1.0 - beta2), float(eps), float(belief_eps), quantile,
                float(_TINY ** (1.0 / vtop)), 1.0 - 2.0**-24,
                float(torch.tensor(1.0 / vtop, dtype=torch.float32)),
                P_DTYPE=_TL[pdt], G_DTYPE=_TL[gdt], MBITS=codec_m.bits, VBITS=codec_v.bits,
                LOG=is_log, BELIEF=bool(belief), HAS_WD=weight_decay != 0, SMALL_W=small_w,
                HAS_RAND=rands is not None, SMALL_Q=quantile <= 0.5, BLOCK=block,
                BLOCK_P2=bp2, LOG2_T=(len(idx) - 1).bit_length(),
                num_warps=1 if bp2 <= 256 else 4, enable_fp_fusion=False)


class _TritonDtypes(dict):
    """torch dtype -> triton dtype, importing triton only when first asked."""

    def __missing__(self, key):
        import triton.language as tl
        self.update({torch.float32: tl.float32, torch.bfloat16: tl.bfloat16})
        return self[key]


_TL = _TritonDtypes()


def _check(p, g, fm, fv, codec_m, codec_v, is_log, rand, where) -> None:
    n = p.numel()
    nb = max(1, -(-n // min(codec_m.block_size, max(n, 1))))
    want = [("grad", g, (torch.float32, torch.bfloat16), n),
            ("exp_avg_codes", fm["codes"], (torch.uint8,), packed_numel(n, codec_m.bits)),
            ("exp_avg_scales", fm["scales"], (torch.float32,), nb),
            ("exp_avg_sq_codes", fv["codes"], (torch.uint8,), packed_numel(n, codec_v.bits)),
            ("exp_avg_sq_scales", fv["scales"], (torch.float32,), nb)]
    if is_log:
        want.append(("exp_avg_sq_alphas", fv["alphas"], (torch.float32,), nb))
    if rand is not None:
        want.append(("rand", rand, (torch.float32,), None))
    for name, t, dtypes, numel in want:
        if t.device != p.device or t.dtype not in dtypes or not t.is_contiguous():
            raise RuntimeError(f"Triton step: {where} {name} must be a contiguous "
                               f"{'/'.join(map(str, dtypes))} tensor on {p.device}, got "
                               f"{t.dtype} on {t.device}")
        if numel is not None and t.numel() != numel:
            raise RuntimeError(f"Triton step: {where} {name} has {t.numel()} elements, "
                               f"expected {numel} (shape {tuple(p.shape)})")
        if numel is None and t.numel() < n:
            raise RuntimeError(f"Triton step: {where} rand has {t.numel()} elements, "
                               f"expected at least {n}")
