"""Signal swamping case study (method.md section 5).

A state x in R^n starts at all ones; each step x <- Q(beta * x~ + (1 - beta) * z) with fresh
z ~ U[0, 1] and one block for the whole tensor (per-tensor scale recomputed each step). With
beta near 1 the increment is smaller than the level gaps, nearest rounding returns the same
code and the EMA stops moving ("swamping"); the true limit is 0.5.
"""

from __future__ import annotations

import torch

from . import codebooks
from .codecs import BlockCodec, Codec, make_codec

__all__ = ["CASE_STUDY_QUANTIZERS", "case_study_codec", "swamping_case_study"]

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
