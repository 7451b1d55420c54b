"""Quantize a single tensor with any of the library's quantizers (for analyses and tests)."""

from __future__ import annotations

import torch

from .codecs import UNSIGNED_ONLY, Codec, make_codec

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


def quantize(x: torch.Tensor, *, bits: int, quantizer: str, signed: bool | None = None,
             block_size: int = 128, quantile: float = 0.1,
             generator: torch.Generator | None = None) -> QuantizedTensor:
    """Quantize ``x`` block-wise (``block_size`` elements per scale; ``x.numel()`` = one block).

    ``signed``: whether the codebook holds negative levels. ``None`` (default) takes it from
    the data: signed when ``x`` holds a negative value. An unsigned codebook cannot store a
    negative value, so ``signed=False`` with negative input is a ValueError, as is negative
    input for the unsigned-only quantizers (``log``, ``rank1-linear``: quantize ``x.abs()``,
    or use ``de``/``linear``). Stochastic quantizers draw from ``generator`` (the global RNG if
    None).
    """
    negative = bool((x < 0).any()) if x.numel() else False
    if signed is None:
        signed = negative and quantizer not in UNSIGNED_ONLY
    codec = make_codec(quantizer, bits, signed=bool(signed), block_size=block_size,
                       quantile=quantile)
    if negative and codec.quantized and not signed:
        if quantizer in UNSIGNED_ONLY:
            raise ValueError(f"quantizer {quantizer!r} stores unsigned values only, but x holds "
                             f"negative values; quantize x.abs(), or use a signed quantizer "
                             f"('de', 'linear', 'de-sr', 'linear-sr')")
        raise ValueError("signed=False but x holds negative values, which an unsigned codebook "
                         "cannot store; pass signed=True (or leave signed=None to infer it)")
    fields = {k: torch.empty(s, dtype=d, device=x.device)
              for k, (s, d) in codec.spec(x.shape).items()}
    codec.encode(x.detach().float(), fields, generator)
    return QuantizedTensor(codec, fields, x.shape)
