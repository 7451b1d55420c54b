"""The precision-specific beta1 rule of SOLO (arXiv 2505.00347; docs/method.md section 6).

Quantizing m with stochastic rounding acts like an EMA of a noisier gradient whose extra
variance grows with beta/(1-beta) times the codebook's half-gap. To keep the noise of a setup
known to work, (beta, ref_bits), pick beta' for ``bits`` such that

    beta'/(1-beta') * r(bits) = beta/(1-beta) * r(ref_bits)

with r(b) the median half-gap of the signed dynamic-exponent codebook of b bits (the paper
does not print its definition; this choice reproduces its table within 0.012).
"""

from __future__ import annotations

import torch

from .codebooks import _de_levels

__all__ = ["half_gaps", "r_median", "adjusted_beta", "PRINTED_TABLE"]

#: The paper's table: PRINTED_TABLE[target_bits][ref_bits] = beta' for beta = 0.9.
PRINTED_TABLE = {
    4: {8: 0.350, 7: 0.518, 6: 0.695, 5: 0.820},
    3: {8: 0.211, 7: 0.348, 6: 0.531, 5: 0.694},
    2: {8: 0.116, 7: 0.207, 6: 0.357, 5: 0.527},
}


def half_gaps(bits: int) -> torch.Tensor:
    """Half the distances between neighbouring levels of the signed DE map (float64)."""
    levels = torch.tensor(_de_levels(bits, True), dtype=torch.float64)
    return (levels[1:] - levels[:-1]) / 2


def r_median(bits: int) -> float:
    """Median half-gap of the signed DE codebook of ``bits`` bits (normalised units)."""
    return half_gaps(bits).median().item()


def adjusted_beta(beta: float, bits: int, ref_bits: int) -> float:
    """beta' for ``bits``-bit m that keeps the quantization noise of (``beta``, ``ref_bits``)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"Invalid beta: {beta}; allowed: [0, 1)")
    for name, b in (("bits", bits), ("ref_bits", ref_bits)):
        if not isinstance(b, int) or not 2 <= b <= 8:
            raise ValueError(f"Invalid {name}: {b!r}; allowed: an int in 2..8")
    k = beta / (1 - beta) * r_median(ref_bits) / r_median(bits)
    return k / (1 + k)
