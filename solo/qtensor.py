"""Quantize a single tensor with any of the library's quantizers (for analyses and tests)."""

from __future__ import annotations

import torch

from .codecs import Codec, make_codec

__all__ = ["QuantizedTensor", "quantize"]


class QuantizedTensor:
    """A tensor stored as codec fields: packed ``codes`` (uint8), ``scales``, maybe ``alphas``."""

    def __init__(self, codec: Codec, fields: dict[str, torch.Tensor], shape: torch.Size):
        self.codec, self.fields, self.shape = codec, fields, torch.Size(shape)

    @property
    def codes(self) -> torch.Tensor:
        """Packed codes (uint8), or the full-precision values for ``none``/``bf16``."""
        return self.fields.get("codes", self.fields.get("value"))

    @property
    def nbytes(self) -> int:
        """Bytes of all stored fields (codes + scales + alphas)."""
        return sum(t.numel() * t.element_size() for t in self.fields.values())

    def dequantize(self) -> torch.Tensor:
        """fp32 tensor of the original shape."""
        return self.codec.decode(self.fields, self.shape).clone()

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={tuple(self.shape)}, quantizer={self.codec.name!r}, "
                f"bits={self.codec.bits}, nbytes={self.nbytes})")


def quantize(x: torch.Tensor, *, bits: int, quantizer: str, signed: bool = False,
             block_size: int = 128, quantile: float = 0.1,
             generator: torch.Generator | None = None) -> QuantizedTensor:
    """Quantize ``x`` block-wise (``block_size`` elements per scale; ``x.numel()`` = one block).

    Stochastic quantizers draw from ``generator`` (the global RNG if None).
    """
    codec = make_codec(quantizer, bits, signed=signed, block_size=block_size, quantile=quantile)
    fields = {k: torch.empty(s, dtype=d, device=x.device) for k, (s, d) in codec.spec(x.shape).items()}
    codec.encode(x.detach().float(), fields, generator)
    return QuantizedTensor(codec, fields, x.shape)
