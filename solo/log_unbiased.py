"""The log quantizer with rounding that is unbiased in value (quantizer ``log-unbiased``).

Same state format as ``log`` (:class:`solo.codecs.LogCodec`: per block the max ``Delta``, the base
``alpha`` from the p-quantile, codes k with x~ = alpha**k * Delta), so it costs the same bytes.
Only the rounding differs: ``log`` adds a uniform draw to log_alpha(x/Delta) and floors, which is
unbiased in the *log* domain, so E[x~] != x (Jensen: by up to a few percent of x at 2 bits).
Here x/Delta = u lies between the neighbouring levels lo = alpha**(k+1) <= u <= hi = alpha**k and
rounds up to hi with probability (u - lo) / (hi - lo), down to lo otherwise, so E[x~] = x for
every x in [alpha**(2**b-1) * Delta, Delta]; below the smallest level (0 included) it keeps the
smallest level, as ``log`` does. This is the rule of the reference SOLO code's ``qema-unbiased``
(``solow`` 0.2.0); given the same uniform draws the codes agree except where a float rounding of
log(u) or of alpha puts u on the other side of a level boundary (tests/solo/test_log_unbiased.py
measures it), and alpha comes from the positive entries only, as for ``log``.

No fused kernel implements it: the fused C++ and Triton steps run ``log`` only
(:func:`solo.fused.supports`), and a parameter with these states takes the eager reference step.
"""

from __future__ import annotations

import torch

from .codec_base import _TINY, _blocks
from .log_codec import LogCodec
from .packing import pack

__all__ = ["UnbiasedLogCodec"]


class UnbiasedLogCodec(LogCodec):
    """:class:`LogCodec` with stochastic rounding between neighbouring levels in linear space."""

    name = "log-unbiased"
    #: the fused kernels implement the log-domain rounding of ``log`` only
    fused_kernel = False

    def encode(self, x, fields, generator):
        n = x.numel()
        xb = _blocks(x.float(), self.block_size)
        scales = xb.amax(dim=1).clamp_(min=_TINY)
        alphas = self.alphas(xb, scales, max(n, 1))
        u = xb / scales[:, None]
        a = alphas[:, None]
        top = 2**self.bits - 1
        # k: the level at or above u (hi = a**k >= u >= lo = a**(k+1)); u = 0 gives +inf,
        # and clamping to top - 1 makes lo the smallest level, which u <= lo then always takes
        k = torch.floor(torch.log(u) / torch.log(a)).clamp_(0, top - 1)
        hi = a.pow(k)
        lo = a.pow(k + 1)
        r = torch.rand(u.shape, generator=generator, device=u.device)
        # round down (code k + 1) unless r < (u - lo) / (hi - lo), written without the division
        codes = k.add_(((u - lo) < (hi - lo).mul_(r)).float()).to(torch.uint8)
        pack(codes.reshape(-1)[:n], self.bits, out=fields["codes"])
        fields["scales"].copy_(scales)
        fields["alphas"].copy_(alphas)

