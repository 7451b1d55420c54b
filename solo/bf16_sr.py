"""Stochastic rounding of fp32 weights into bfloat16 parameters (``bf16_stochastic_round``).

A bf16 parameter stepped without an fp32 master copy loses every update below half a bf16 ulp
(2^-9 relative) to round-to-nearest: at lr 1e-4 an Adam update (~lr) to a weight of 1.0 is
rounded away every step, and the weight never moves. Rounding up with probability equal to the
dropped fraction keeps the update in expectation. The draws come from the optimizer's own
generator (after the states' draws of the same step), so a checkpoint, which saves that
generator, resumes bit-exactly.
"""

from __future__ import annotations

import torch

__all__ = ["round_into_"]

_LOW = 1 << 16  # the fp32 mantissa bits below bfloat16's
_MASK = -_LOW  # 0xFFFF0000 as int32


def round_into_(dst: torch.Tensor, src: torch.Tensor, generator: torch.Generator) -> None:
    """Write fp32 ``src`` into bf16 ``dst`` rounded stochastically: of the two neighbouring
    bf16 values, the one away from zero with probability (dropped low 16 bits) / 2^16, so
    E[dst] = src (for finite values within bf16's range)."""
    bits = src.contiguous().view(torch.int32)
    r = torch.randint(0, _LOW, src.shape, generator=generator, device=src.device,
                      dtype=torch.int32)
    # sign-magnitude: adding to the bits grows the magnitude, for negative values too; the
    # masked result has zero low bits, so the bf16 conversion below is exact
    dst.copy_(bits.add(r).bitwise_and_(_MASK).view(torch.float32))
