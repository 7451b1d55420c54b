"""Named optimizer configurations matching the papers' rows (method.md section 7).

Each preset is ``f(params, lr=1e-3, betas=(None, 0.999), eps=1e-8, weight_decay=0.0, **kw)``
returning a :class:`solo.AdamW` / :class:`solo.AdaBelief`; ``kw`` overrides any quantization
knob. A beta1 of ``None`` means the preset's default: 0.9 for the baselines, and for the SOLO
presets the precision rule of method.md section 6, ``adjusted_beta(0.9, bits_m, ref_bits=5)``
(0.818 for 4-bit m, 0.692 for 3-bit, 0.525 for 2-bit): the paper calls the 5-bit column
empirically feasible and its own code uses 0.8 for 4/2-bit. An explicit beta1 is used as given.

=====================  ==========  ===========================  =========================
preset                 optimizer   m (signed)                   v (unsigned)
=====================  ==========  ===========================  =========================
adamw32                AdamW       fp32                         fp32
adamw_bf16             AdamW       bf16                         bf16
adamw8bit              AdamW       8-bit DE, B128               8-bit DE, B128
adamw4bit              AdamW       4-bit DE, B128               4-bit zero-free linear, B128
adamw4bit_rank1        AdamW       4-bit DE, B128               4-bit rank-1 linear (<=4096 fp32)
adamw2bit              AdamW       2-bit DE, B128               2-bit zero-free linear, B128
solo_4_2bit            AdamW       4-bit DE, B128, beta1 rule   2-bit log, B128, SR, p=0.1
solo_3bit              AdamW       3-bit DE, B128, beta1 rule   3-bit log, B128, SR, p=0.1
solo_2bit              AdamW       2-bit DE, B128, beta1 rule   2-bit log, B128, SR, p=0.1
adabelief32            AdaBelief   fp32                         fp32
adabelief_solo_4_2bit  AdaBelief   4-bit DE, B128, beta1 rule   2-bit log, B128, SR, p=0.1
=====================  ==========  ===========================  =========================

The AdaBelief presets follow the reference SOLO code (``eps_in_s=False``: eps only in the
denominator, not added to s every step; see :class:`solo.AdaBelief`).
"""

from __future__ import annotations

import functools
import logging

from .momentum import adjusted_beta
from .optim import AdaBelief, AdamW

log = logging.getLogger(__name__)

#: bits of m from which the SOLO beta1 rule starts (beta = 0.9 at 5 bits).
SOLO_REF_BITS = 5

_CONFIGS = {
    "adamw32": (AdamW, dict(bits=32, quantizers="none"), False),
    "adamw_bf16": (AdamW, dict(bits=16, quantizers="bf16"), False),
    "adamw8bit": (AdamW, dict(bits=8, quantizers="de"), False),
    "adamw4bit": (AdamW, dict(bits=4, quantizers=("de", "linear")), False),
    "adamw4bit_rank1": (AdamW, dict(bits=4, quantizers=("de", "rank1-linear"),
                                    min_quantizable_size=4097), False),
    "adamw2bit": (AdamW, dict(bits=2, quantizers=("de", "linear")), False),
    "solo_4_2bit": (AdamW, dict(bits=(4, 2), quantizers=("de", "log")), True),
    "solo_3bit": (AdamW, dict(bits=3, quantizers=("de", "log")), True),
    "solo_2bit": (AdamW, dict(bits=2, quantizers=("de", "log")), True),
    "adabelief32": (AdaBelief, dict(bits=32, quantizers="none", eps_in_s=False), False),
    "adabelief_solo_4_2bit": (AdaBelief, dict(bits=(4, 2), quantizers=("de", "log"),
                                              eps_in_s=False), True),
}


def default_beta1(name: str) -> float:
    """The beta1 a preset uses when the caller gives none."""
    _, knobs, solo_rule = _CONFIGS[name]
    if not solo_rule:
        return 0.9
    bits = knobs["bits"]
    bits_m = bits[0] if isinstance(bits, tuple) else bits
    return round(adjusted_beta(0.9, bits_m, SOLO_REF_BITS), 3)


def _make(name, params, lr=1e-3, betas=(None, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    cls, knobs, _ = _CONFIGS[name]
    beta1, beta2 = betas
    if beta1 is None:
        beta1 = default_beta1(name)
        log.info("%s: beta1 = %.3f (preset default)", name, beta1)
    return cls(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
               **{**knobs, **kw})


PRESETS = {}
for _name in _CONFIGS:
    PRESETS[_name] = functools.partial(_make, _name)
    PRESETS[_name].__doc__ = f"The {_name!r} preset (see module docstring)."
    globals()[_name] = PRESETS[_name]

__all__ = ["PRESETS", "default_beta1", *PRESETS]
