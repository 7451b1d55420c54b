"""State formats: how one optimizer state tensor is stored between steps, by quantizer name.

A codec (the interface: :class:`solo.codec_base.Codec`) turns an fp32 tensor into a few plain
tensors (its ``fields``) and back. The optimizers' update rule is written once against this
interface; a new precision is a new codec. Here: the quantizers' names and allowed bits,
:func:`make_codec`, and the codebook codecs (:class:`BlockCodec`, :class:`Rank1Codec`); the log
codec is :mod:`solo.log_codec`'s, its value-unbiased variant :mod:`solo.log_unbiased`'s.

Quantizers (docs/method.md sections 3-4):

==============  =========  ==========================================================  =====
name            bits       levels / normalisation                                      sign
==============  =========  ==========================================================  =====
none            32         fp32, no quantization                                       both
bf16            16         bfloat16                                                    both
linear          2,3,4,8    signed: even in [-1, 1]; unsigned: (i+1)/2^b (zero-free)     both
linear-sr       2,3,4,8    as ``linear``, stochastic rounding                          both
de              2,3,4,8    dynamic exponent (Dettmers), nearest                        both
de-sr           2,3,4,8    dynamic exponent, stochastic rounding                       both
log             2,3,4,8    alpha**k per block from the p-quantile, SR in log domain    unsigned
log-unbiased    2,3,4,8    as ``log``, SR between levels in value (solo.log_unbiased)  unsigned
rank1-linear    2,3,4,8    zero-free linear, rank-1 scales min(row max, col max)       unsigned
==============  =========  ==========================================================  =====
"""

from __future__ import annotations

import functools
import math

import torch

from . import codebooks
from .codec_base import _TINY, Codec, FullCodec, _blocks, _num_blocks
from .log_codec import LogCodec, block_quantile
from .log_unbiased import UnbiasedLogCodec
from .packing import SUPPORTED_BITS, pack, packed_numel, unpack

__all__ = ["QUANTIZERS", "Codec", "FullCodec", "BlockCodec", "LogCodec", "Rank1Codec",
           "make_codec", "block_quantile"]

#: quantizer name -> allowed bits
QUANTIZERS: dict[str, tuple[int, ...]] = {
    "none": (32,),
    "bf16": (16,),
    "linear": SUPPORTED_BITS,
    "linear-sr": SUPPORTED_BITS,
    "de": SUPPORTED_BITS,
    "de-sr": SUPPORTED_BITS,
    "log": SUPPORTED_BITS,
    "log-unbiased": SUPPORTED_BITS,
    "rank1-linear": SUPPORTED_BITS,
}
UNSIGNED_ONLY = ("log", "log-unbiased", "rank1-linear")


def check_quantizer(quantizer: str, bits: int, *, signed: bool, what: str = "state") -> None:
    """Raise ValueError naming the bad value and the allowed set."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"Invalid quantizer for {what}: {quantizer!r}; "
                         f"allowed: {', '.join(QUANTIZERS)}")
    if bits not in QUANTIZERS[quantizer]:
        raise ValueError(f"Invalid bits for {what} with quantizer {quantizer!r}: {bits!r}; "
                         f"allowed: {QUANTIZERS[quantizer]}")
    if signed and quantizer in UNSIGNED_ONLY:
        raise ValueError(f"Quantizer {quantizer!r} is for unsigned states only and cannot store "
                         f"the signed {what}; use one of 'de', 'linear', 'de-sr', 'linear-sr'")



def _boundaries(levels: torch.Tensor) -> torch.Tensor:
    """float32 decision boundaries b_k with ``x <= b_k`` iff x is at most the exact midpoint.

    Rounding the float64 midpoint to float32 could move a float32 input across it, so the
    boundary is the largest float32 not above the exact midpoint: ties go to the lower level,
    exactly like ``argmin`` over float64 distances.
    """
    lv = levels.double()
    mid = (lv[1:] + lv[:-1]) / 2
    b = mid.float()
    too_high = b.double() > mid
    b[too_high] = torch.nextafter(b[too_high], torch.full_like(b[too_high], -math.inf))
    return b


class BlockCodec(Codec):
    """Block-wise absmax scaling + a fixed codebook; nearest or stochastic rounding."""

    quantized = True

    def __init__(self, levels: torch.Tensor, bits: int, *, signed: bool, block_size: int,
                 stochastic: bool, name: str):
        self.levels, self.bits, self.signed = levels, bits, signed
        self.block_size, self.stochastic, self.name = block_size, stochastic, name
        self._bounds = _boundaries(levels)
        self._cache: dict = {}

    def _tables(self, device):
        if device not in self._cache:
            self._cache[device] = (self.levels.to(device), self._bounds.to(device))
        return self._cache[device]

    def spec(self, shape):
        n = math.prod(shape)
        return {"codes": ((packed_numel(n, self.bits),), torch.uint8),
                "scales": ((_num_blocks(n, self.block_size),), torch.float32)}

    def quantize_normalized(self, u: torch.Tensor, generator) -> torch.Tensor:
        """Codes (int64) of normalised values ``u``."""
        levels, bounds = self._tables(u.device)
        if not self.stochastic:
            return torch.bucketize(u, bounds)
        # Stochastic rounding between the enclosing levels T[k] <= u <= T[k+1].
        k = (torch.bucketize(u, levels, right=True) - 1).clamp_(0, levels.numel() - 2)
        lo, hi = levels[k], levels[k + 1]
        p_up = ((u - lo) / (hi - lo)).clamp_(0, 1)
        r = torch.rand(u.shape, generator=generator, device=u.device)
        return k + (r < p_up)

    def encode(self, x, fields, generator):
        n = x.numel()
        xb = _blocks(x.float(), self.block_size)
        absx = xb.abs() if self.signed else xb
        scales = absx.amax(dim=1).clamp_(min=_TINY)
        codes = self.quantize_normalized(xb / scales[:, None], generator)
        pack(codes.reshape(-1)[:n], self.bits, out=fields["codes"])
        fields["scales"].copy_(scales)

    def decode(self, fields, shape):
        n = math.prod(shape)
        levels, _ = self._tables(fields["codes"].device)
        codes = unpack(fields["codes"], self.bits, n).long()
        vals = _blocks(levels[codes], self.block_size) * fields["scales"][:, None]
        return vals.reshape(-1)[:n].reshape(shape)



class Rank1Codec(Codec):
    """Li et al.'s rank-1 normalisation + zero-free linear levels (unsigned, nearest).

    For a tensor with >= 2 dims the scale of an element is the minimum over dims d of the max
    over all other dims (for a matrix, min(row max, column max)); the stored scales are the
    concatenated per-dim maxima (sum(shape) fp32 values). 1-D tensors fall back to blocks.
    """

    quantized = True
    stochastic = False
    name = "rank1-linear"

    def __init__(self, bits: int, *, block_size: int):
        self.bits = bits
        self.levels = codebooks.linear_levels(bits, signed=False)
        self._block = BlockCodec(self.levels, bits, signed=False, block_size=block_size,
                                 stochastic=False, name="rank1-linear")

    def spec(self, shape):
        if len(shape) < 2:
            return self._block.spec(shape)
        return {"codes": ((packed_numel(math.prod(shape), self.bits),), torch.uint8),
                "scales": ((sum(shape),), torch.float32)}

    @staticmethod
    def _scale_matrix(maxes: list[torch.Tensor], shape) -> torch.Tensor:
        out = None
        for d, m in enumerate(maxes):
            view = [1] * len(shape)
            view[d] = shape[d]
            m = m.view(view)
            out = m if out is None else torch.minimum(out, m)
        return out.expand(shape)

    def encode(self, x, fields, generator):
        if x.dim() < 2:
            return self._block.encode(x, fields, generator)
        x = x.float()
        dims = range(x.dim())
        maxes = [x.amax(dim=[e for e in dims if e != d]).clamp_(min=_TINY) for d in dims]
        scale = self._scale_matrix(maxes, x.shape)
        codes = self._block.quantize_normalized(x / scale, generator)
        pack(codes.reshape(-1), self.bits, out=fields["codes"])
        fields["scales"].copy_(torch.cat(maxes))

    def decode(self, fields, shape):
        if len(shape) < 2:
            return self._block.decode(fields, shape)
        maxes = list(fields["scales"].split(list(shape)))
        levels, _ = self._block._tables(fields["codes"].device)
        codes = unpack(fields["codes"], self.bits, math.prod(shape)).long()
        return levels[codes].view(shape) * self._scale_matrix(maxes, shape)


def make_codec(quantizer: str, bits: int, *, signed: bool, block_size: int = 128,
               quantile: float = 0.1) -> Codec:
    """The codec for one state. ``bits`` in bits; ``block_size`` in elements.

    Codecs hold no per-tensor state, so one instance per configuration is shared (building the
    codebook and its boundaries every step would cost more than quantizing a small tensor).
    """
    check_quantizer(quantizer, bits, signed=signed)
    return _make_codec(quantizer, bits, signed, block_size, quantile)


@functools.lru_cache(maxsize=256)
def _make_codec(quantizer: str, bits: int, signed: bool, block_size: int,
                quantile: float) -> Codec:
    if quantizer == "none":
        return FullCodec(torch.float32)
    if quantizer == "bf16":
        return FullCodec(torch.bfloat16)
    if quantizer == "log":
        return LogCodec(bits, block_size=block_size, quantile=quantile)
    if quantizer == "log-unbiased":
        return UnbiasedLogCodec(bits, block_size=block_size, quantile=quantile)
    if quantizer == "rank1-linear":
        return Rank1Codec(bits, block_size=block_size)
    family = quantizer.removesuffix("-sr")
    levels = (codebooks.de_levels(bits, signed) if family == "de"
              else codebooks.linear_levels(bits, signed))
    return BlockCodec(levels, bits, signed=signed, block_size=block_size,
                      stochastic=quantizer.endswith("-sr"), name=quantizer)
