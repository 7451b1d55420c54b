"""The codec interface (how one optimizer state tensor is stored between steps), full-precision
storage, and the block layout every block-scaled codec shares.

A codec turns an fp32 tensor into a few plain tensors (``fields``: packed uint8 ``codes``, fp32
per-block ``scales``, fp32 per-block ``alphas``, or the full-precision ``value``) and back. The
quantizers by name, and the codec of each: :mod:`solo.codecs`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Codec", "FullCodec"]

# Scales are clamped to this floor so an all-zero block divides safely (docs/method.md
# section 3).
_TINY = torch.finfo(torch.float32).tiny


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
