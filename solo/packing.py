"""Dense bit packing of b-bit codes into uint8 storage.

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
        packed = _PACK[bits](codes.contiguous())
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
    codes = _UNPACK[bits](packed.contiguous())
    return codes.reshape(-1)[:n]


# Byte tricks: reinterpret groups of codes (one per byte) as one little-endian integer word and
# move each code's bits into place with a few shifts, instead of one op per code position.
def _pack2(c):
    w = c.view(torch.int32)
    return ((w | (w >> 6) | (w >> 12) | (w >> 18)) & 0xFF).to(torch.uint8)


def _pack4(c):
    w = c.view(torch.int16)
    return ((w | (w >> 4)) & 0xFF).to(torch.uint8)


def _pack3(c):
    w = c.view(torch.int64)
    out = w & 7
    for i in range(1, 8):
        out |= (w >> (5 * i)) & (7 << (3 * i))
    return out.view(torch.uint8).view(-1, 8)[:, :3].reshape(-1)


def _unpack2(b):
    w = b.to(torch.int32)
    w = (w | (w << 6) | (w << 12) | (w << 18)) & 0x03030303
    return w.view(torch.uint8)


def _unpack4(b):
    w = b.to(torch.int16)
    w = (w | (w << 4)) & 0x0F0F
    return w.view(torch.uint8)


def _unpack3(b):
    g = b.view(-1, 3).to(torch.int64)
    w = g[:, 0] | (g[:, 1] << 8) | (g[:, 2] << 16)
    out = w & 7
    for i in range(1, 8):
        out |= (w << (5 * i)) & (7 << (8 * i))
    return out.view(torch.uint8)


_PACK = {2: _pack2, 3: _pack3, 4: _pack4}
_UNPACK = {2: _unpack2, 3: _unpack3, 4: _unpack4}
