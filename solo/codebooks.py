"""Codebooks: the sorted quantization levels (docs/method.md section 4).

A codebook of ``b`` bits is a 1-D float32 tensor of ``2**b`` sorted levels in [-1, 1] (signed)
or [0, 1] (unsigned). Values are normalised by a per-block scale before they are mapped to the
nearest level, so levels are dimensionless.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["de_levels", "linear_levels", "log_levels"]


@functools.cache
def _de_levels(bits: int, signed: bool) -> tuple[float, ...]:
    # Dynamic exponent map (Dettmers 2015; bitsandbytes `create_dynamic_map(signed,
    # max_exponent_bits=bits-1, total_bits=bits)`, written from the map's description, not
    # its code): exponent E in 0..bits-2 gives magnitude 10**-E times a fraction at the
    # midpoints of evenly spaced bins over [0.1, 1]; the number of fraction bins doubles with
    # each exponent (one fewer bit of fraction for the sign when signed). 0 and 1 are always
    # levels.
    exp_bits = bits - 1
    levels = [0.0, 1.0]
    for i in range(exp_bits):
        n_frac = 2 ** (i + (0 if signed else 1))
        scale = 10.0 ** (-(exp_bits - 1) + i)
        edges = torch.linspace(0.1, 1.0, n_frac + 1, dtype=torch.float64)
        mids = ((edges[:-1] + edges[1:]) / 2 * scale).tolist()
        levels += mids
        if signed:
            levels += [-v for v in mids]
    levels.sort()
    assert len(levels) == 2**bits, (bits, signed, len(levels))
    return tuple(levels)


def de_levels(bits: int, signed: bool) -> torch.Tensor:
    """Dynamic-exponent levels: ``2**bits`` sorted float32 values (Dettmers 2015)."""
    return torch.tensor(_de_levels(bits, signed), dtype=torch.float32)


def linear_levels(bits: int, signed: bool, include_zero: bool = False) -> torch.Tensor:
    """Linear levels: ``2**bits`` sorted float32 values.

    Signed: evenly spaced from -1 to 1. Unsigned: ``(i+1)/2**bits`` (zero excluded, Li et al.),
    or ``i/(2**bits-1)`` from 0 to 1 with ``include_zero=True`` (the swamping case study).
    """
    n = 2**bits
    if signed:
        return torch.linspace(-1.0, 1.0, n, dtype=torch.float64).float()
    if include_zero:
        return (torch.arange(n, dtype=torch.float64) / (n - 1)).float()
    return (torch.arange(1, n + 1, dtype=torch.float64) / n).float()


def log_levels(bits: int, alpha: float) -> torch.Tensor:
    """Logarithmic levels ``alpha**k`` for k = 0..2**bits-1, sorted ascending (SOLO)."""
    k = torch.arange(2**bits - 1, -1, -1, dtype=torch.float64)
    return (alpha**k).float()
