"""solo: AdamW / AdaBelief with 2-, 3-, 4- and 8-bit optimizer states.

Implements SOLO (Xu et al., arXiv 2505.00347) and the 4-bit optimizers of Li et al. (arXiv
2309.01507); the algorithm is described in docs/method.md. Quick start::

    import solo
    opt = solo.presets.solo_4_2bit(model.parameters(), lr=1e-3, weight_decay=0.05)
    solo.state_bytes(opt)   # {"total": ..., "quantized": ..., "full_precision": ...} bytes
"""

from . import codebooks, codecs, memory, momentum, packing, presets
from .adafactor import Adafactor
from .memory import estimate_state_bytes, state_bytes
from .optim import AdaBelief, Adam, AdamW
from .overrides import keep_fp32
from .presets import PRESETS
from .qtensor import QuantizedTensor, quantize

__version__ = "0.1.0"
__all__ = ["AdamW", "Adam", "AdaBelief", "Adafactor", "quantize", "QuantizedTensor", "state_bytes",
           "estimate_state_bytes", "keep_fp32", "PRESETS", "codebooks", "codecs", "memory", "momentum",
           "packing", "presets"]
