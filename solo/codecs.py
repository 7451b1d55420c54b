"""State formats: how one optimizer state tensor is stored between steps.

A codec turns an fp32 tensor into a few plain tensors (``fields``: packed uint8 ``codes``, fp32
per-block ``scales``, fp32 per-block ``alphas``, or the full-precision ``value``) and back. The
optimizers' update rule is written once against this interface; a new precision is a new codec.

Quantizers (method.md sections 3-4):

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

# Scales are clamped to this floor so an all-zero block divides safely (method.md section 3).
_TINY = torch.finfo(torch.float32).tiny


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


class Codec:
    """Interface: the fields that store a tensor of a given shape, and the maps to/from fp32."""

    name = "codec"
    bits = 32
    quantized = False

    def spec(self, shape: torch.Size) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Field name -> (shape, dtype) of the stored tensors."""
        raise NotImplementedError

    def nbytes(self, shape: torch.Size) -> int:
        """Exact bytes of the stored fields for a tensor of ``shape``."""
        return sum(math.prod(s) * torch.empty((), dtype=d).element_size()
                   for s, d in self.spec(shape).values())

    def init(self, shape: torch.Size, device) -> dict[str, torch.Tensor]:
        """Fields of an all-zero tensor."""
        fields = {k: torch.zeros(s, dtype=d, device=device) for k, (s, d) in self.spec(shape).items()}
        # zeros need no random draws (log codes of 0 are deterministic); a private generator
        # keeps the global RNG untouched anyway
        self.encode(torch.zeros(shape, device=device), fields, torch.Generator(device=device))
        return fields

    def encode(self, x: torch.Tensor, fields: dict, generator: torch.Generator | None) -> None:
        """Quantize fp32 ``x`` into ``fields`` in place."""
        raise NotImplementedError

    def decode(self, fields: dict, shape: torch.Size) -> torch.Tensor:
        """Return an fp32 tensor of ``shape`` (may alias the field for fp32 storage)."""
        raise NotImplementedError


class FullCodec(Codec):
    """Unquantized storage in fp32 (``none``) or bfloat16 (``bf16``)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.name = "none" if dtype == torch.float32 else "bf16"
        self.bits = 32 if dtype == torch.float32 else 16

    def spec(self, shape):
        return {"value": (tuple(shape), self.dtype)}

    def encode(self, x, fields, generator):
        if x is not fields["value"]:
            fields["value"].copy_(x)

    def decode(self, fields, shape):
        v = fields["value"]
        return v if v.dtype == torch.float32 else v.float()


def _num_blocks(n: int, block: int) -> int:
    return max(1, -(-n // block))


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Flatten and zero-pad to whole blocks: shape (num_blocks, block). A tensor smaller than
    a block is one block of its own size: a block never exceeds its tensor, so a huge
    ``block_size`` costs nothing (the zeros of a padded block change no scale or quantile)."""
    flat = x.reshape(-1)
    block = min(block, max(flat.numel(), 1))
    pad = -flat.numel() % block if flat.numel() else block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block)


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


def block_quantile(xb: torch.Tensor, q: float, lengths: int | None = None, *,
                   positive_only: bool = False) -> torch.Tensor:
    """Per-row ``q``-quantile of ``xb`` (rows, cols), torch.quantile's linear interpolation.

    Exact, with no input-size limit (torch.quantile refuses more than 16M elements): only the
    two order statistics around position q*(n-1) are needed, so for small q a partial sort
    (``topk`` of the smallest) replaces a full sort. Only the first ``lengths`` columns of the
    last row count when given (a shorter last block). With ``positive_only`` the quantile is
    over each row's entries > 0 (0 for a row without any).
    """
    rows, cols = xb.shape
    valid = xb > 0 if positive_only else torch.ones_like(xb, dtype=torch.bool)
    if lengths is not None and lengths != cols:
        valid[-1, lengths:] = False
    n = valid.sum(dim=1)
    last = (n - 1).clamp(min=0)
    pos = q * last.to(xb.dtype)
    # float32(n - 1) may round above n - 1 once n > 2^24: the ranks stay inside the row
    lo = torch.minimum(pos.floor().long(), last)
    hi = torch.minimum(lo + 1, last)
    need = math.floor(q * (cols - 1)) + 2  # hi + 1 <= need for every row
    vals = torch.where(valid, xb, torch.full_like(xb, math.inf))
    if need <= cols // 2:
        s = vals.topk(need, dim=1, largest=False, sorted=True).values
    else:
        s = vals.sort(dim=1).values
    a, b = s.gather(1, lo[:, None])[:, 0], s.gather(1, hi[:, None])[:, 0]
    out = a + (pos - lo) * (b - a)
    return torch.where(n > 0, out, torch.zeros_like(out))


class LogCodec(Codec):
    """SOLO's logarithmic quantizer for unsigned states (method.md section 4).

    Per block: Delta = max, x_p = p-quantile of the positive entries,
    alpha = (x_p/Delta)**(1/(2**b-1)); codes are
    stochastic roundings of log_alpha(x/Delta) clipped to [0, 2**b-1]; x~ = alpha**code * Delta.
    """

    quantized = True
    stochastic = True
    name = "log"

    def __init__(self, bits: int, *, block_size: int, quantile: float):
        self.bits, self.block_size, self.quantile = bits, block_size, quantile
        top = 2**bits - 1
        # alpha stays inside (0, 1): alpha = 1 (constant block) would divide by log(1) = 0 and
        # alpha = 0 (quantile 0) by log(0); the floor keeps alpha**top a normal float32.
        self._alpha_min = _TINY ** (1.0 / top)
        self._alpha_max = 1.0 - 2.0**-24

    def spec(self, shape):
        n = math.prod(shape)
        nb = _num_blocks(n, self.block_size)
        return {"codes": ((packed_numel(n, self.bits),), torch.uint8),
                "scales": ((nb,), torch.float32), "alphas": ((nb,), torch.float32)}

    def alphas(self, xb: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
        last = n - (xb.shape[0] - 1) * xb.shape[1]
        # Over the block's positive entries: a log map cannot represent 0, and counting zeros
        # (never-updated embedding rows, padding) drives x_p and alpha to 0 so every non-max
        # value collapses towards 0 and m/sqrt(v) explodes (a DCN embedding table diverged).
        # Identical to torch.quantile on blocks without zeros; a documented deviation.
        xp = block_quantile(xb, self.quantile, lengths=last, positive_only=True)
        ratio = (xp / scales).clamp_(min=0.0)
        return ratio.pow_(1.0 / (2**self.bits - 1)).clamp_(self._alpha_min, self._alpha_max)

    def encode(self, x, fields, generator):
        n = x.numel()
        xb = _blocks(x.float(), self.block_size)
        scales = xb.amax(dim=1).clamp_(min=_TINY)
        alphas = self.alphas(xb, scales, max(n, 1))
        t = torch.log(xb / scales[:, None]) / torch.log(alphas)[:, None]
        r = torch.rand(t.shape, generator=generator, device=t.device)
        # floor(t + U[0,1)) == round(t + U[-1/2,1/2]): unbiased rounding in the log domain;
        # x = 0 gives t = +inf and clips to the smallest level.
        codes = torch.floor(t.add_(r)).clamp_(0, 2**self.bits - 1).to(torch.uint8)
        pack(codes.reshape(-1)[:n], self.bits, out=fields["codes"])
        fields["scales"].copy_(scales)
        fields["alphas"].copy_(alphas)

    def decode(self, fields, shape):
        n = math.prod(shape)
        codes = unpack(fields["codes"], self.bits, n).float()
        cb = _blocks(codes, self.block_size)
        vals = fields["alphas"][:, None].pow(cb) * fields["scales"][:, None]
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
        from .log_unbiased import UnbiasedLogCodec  # it builds on LogCodec, defined here

        return UnbiasedLogCodec(bits, block_size=block_size, quantile=quantile)
    if quantizer == "rank1-linear":
        return Rank1Codec(bits, block_size=block_size)
    family = quantizer.removesuffix("-sr")
    levels = (codebooks.de_levels(bits, signed) if family == "de"
              else codebooks.linear_levels(bits, signed))
    return BlockCodec(levels, bits, signed=signed, block_size=block_size,
                      stochastic=quantizer.endswith("-sr"), name=quantizer)
