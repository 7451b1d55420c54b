"""Dense bit packing of b-bit codes into uint8 storage (method.md section 3).

8-bit codes take one byte each, 4-bit two per byte, 2-bit four per byte, and 3-bit codes go
eight to three bytes (24 bits), so a b-bit state really costs b bits per element plus at most
one partial group of padding per tensor.
"""

from __future__ import annotations

import torch

__all__ = ["SUPPORTED_BITS", "packed_numel", "pack", "unpack"]

SUPPORTED_BITS = (2, 3, 4, 8)


def _check(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"packing supports bits in {SUPPORTED_BITS}, got bits={bits}")


def _group(bits: int) -> tuple[int, int]:
    """(codes per group, bytes per group)."""
    return (8, 3) if bits == 3 else (8 // bits, 1)


def packed_numel(n: int, bits: int) -> int:
    """Bytes needed to store ``n`` codes of ``bits`` bits."""
    _check(bits)
    per, nbytes = _group(bits)
    return -(-n // per) * nbytes


def pack(codes: torch.Tensor, bits: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pack a 1-D tensor of integer codes in ``[0, 2**bits)`` into a uint8 tensor.

    Returns a tensor of ``packed_numel(codes.numel(), bits)`` bytes (written into ``out`` if
    given). Padding codes are zero.
    """
    _check(bits)
    codes = codes.reshape(-1).to(torch.uint8)
    n = codes.numel()
    if bits == 8:
        packed = codes
    else:
        per, _ = _group(bits)
        pad = -n % per
        if pad:
            codes = torch.cat([codes, codes.new_zeros(pad)])
        if bits == 3:
            # 8 codes -> one 24-bit word -> 3 little-endian bytes.
            g = codes.view(-1, 8).to(torch.int32)
            shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=codes.device)
            word = (g << shifts).sum(dim=1, dtype=torch.int32)
            packed = torch.stack([(word >> s) & 0xFF for s in (0, 8, 16)], dim=1)
            packed = packed.to(torch.uint8).reshape(-1)
        else:
            g = codes.view(-1, per)
            packed = g[:, 0].clone()
            for j in range(1, per):
                packed |= g[:, j] << (bits * j)
    if out is None:
        return packed.clone() if packed is codes else packed
    out.copy_(packed)
    return out


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` codes as a 1-D uint8 tensor."""
    _check(bits)
    if packed.numel() != packed_numel(n, bits):
        raise ValueError(
            f"packed tensor has {packed.numel()} bytes, expected {packed_numel(n, bits)} "
            f"for {n} codes of {bits} bits"
        )
    if bits == 8:
        return packed.reshape(-1)[:n]
    if bits == 3:
        b = packed.view(-1, 3).to(torch.int32)
        word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=packed.device)
        codes = ((word[:, None] >> shifts) & 7).to(torch.uint8)
    else:
        per, _ = _group(bits)
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        codes = (packed.view(-1, 1) >> shifts) & (2**bits - 1)
    return codes.reshape(-1)[:n]
