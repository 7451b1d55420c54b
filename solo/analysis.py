"""Signal swamping case study (SOLO, arXiv 2505.00347; docs/method.md section 5).

A state x in R^n starts at all ones; each step x <- Q(beta * x~ + (1 - beta) * z) with fresh
z ~ U[0, 1] and one block for the whole tensor (per-tensor scale recomputed each step). With
beta near 1 the increment is smaller than the level gaps, nearest rounding returns the same
code and the EMA stops moving ("swamping"); the true limit is 0.5.
"""

from __future__ import annotations

import torch

from . import codebooks
from .codecs import BlockCodec, Codec, make_codec

__all__ = ["CASE_STUDY_QUANTIZERS", "case_study_codec", "swamping_case_study",
           "swamping_threshold"]

#: quantizers of the paper's figure: linear *with* zero (the thresholds' setting), DE, log, fp32
CASE_STUDY_QUANTIZERS = ("linear0", "de", "log", "fp32")


def case_study_codec(quantizer: str, bits: int, n: int) -> Codec:
    """Codec for the case study, one block of ``n`` elements."""
    if quantizer == "fp32":
        return make_codec("none", 32, signed=False)
    if quantizer == "linear0":
        levels = codebooks.linear_levels(bits, signed=False, include_zero=True)
        return BlockCodec(levels, bits, signed=False, block_size=n, stochastic=False,
                          name="linear0")
    return make_codec(quantizer, bits, signed=False, block_size=n)


def swamping_case_study(quantizer: str, bits: int, beta: float, *, steps: int = 100,
                        n: int = 1000, seed: int = 0) -> float:
    """Mean of the dequantized state after ``steps`` EMA steps (true EMA limit 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    codec = case_study_codec(quantizer, bits, n)
    shape = torch.Size([n])
    fields = {k: torch.empty(s, dtype=d) for k, (s, d) in codec.spec(shape).items()}
    codec.encode(torch.ones(n), fields, gen)
    for _ in range(steps):
        z = torch.rand(n, generator=gen)
        x = codec.decode(fields, shape).clone()
        codec.encode(beta * x + (1 - beta) * z, fields, gen)
    return codec.decode(fields, shape).mean().item()


def swamping_threshold(quantizer: str, bits: int) -> float:
    """The beta above which nearest rounding swamps (SOLO's corollary on swamping).

    A level of half-gap r keeps its code once 1 - beta <= r (the increment (1 - beta) z with
    z <= Delta cannot cross it), so the linear map with zero (``linear0``) swamps every level
    above 1 - min(r) and ``de`` half its levels above 1 - median(r), r over the half-gaps of
    the unsigned codebook (the lower median, as :func:`solo.momentum.r_median`).
    """
    if quantizer not in ("linear0", "de"):
        raise ValueError(f"Invalid quantizer: {quantizer!r}; allowed: 'linear0', 'de'")
    levels = case_study_codec(quantizer, bits, 1).levels.double()
    r = (levels[1:] - levels[:-1]) / 2
    return 1.0 - (r.min() if quantizer == "linear0" else r.median()).item()
