"""SOLO's logarithmic quantizer (quantizer ``log``) and the exact per-block quantile it needs.

Per block of an unsigned state: levels alpha**k * Delta, k = 0..2**b-1, with Delta the block's
max and alpha set so that the smallest level is the block's p-quantile; codes are stochastic
roundings in the log domain (SOLO, arXiv 2505.00347; docs/method.md section 4).
"""

from __future__ import annotations

import math

import torch

from .codec_base import _TINY, Codec, _blocks, _num_blocks
from .packing import pack, packed_numel, unpack

__all__ = ["LogCodec", "block_quantile"]


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
    """SOLO's logarithmic quantizer for unsigned states.

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
