"""Named optimizer configurations matching the papers' rows (docs/method.md section 7).

Each preset is defined once, below, and everything else reads it: ``optim=<name>`` in Hydra
(a ConfigStore fed from :data:`PRESETS`, experiments/optimizers.py), the tables' row labels
and paper numbers (``label``), the figures, the benchmark and the tests. A preset is called
like a torch.optim constructor::

    opt = solo.presets.solo_4_2bit(params, lr=1e-3, betas=(None, 0.999), weight_decay=0.05)

Keyword arguments beyond ``lr, betas, eps, weight_decay`` override the preset's knobs. A beta1
of ``None`` means the preset's default: 0.9 for the baselines, and for the SOLO presets the
precision rule of :mod:`solo.momentum`, ``adjusted_beta(0.9, bits_m, ref_bits=5)`` (0.818 for
4-bit m, 0.692 for 3-bit, 0.525 for 2-bit): the paper calls the 5-bit column empirically
feasible and its own code uses 0.8 for 4/2-bit. An explicit beta1 is used as given.

Every preset's state formats, default beta1 and bytes per parameter: docs/presets.md, generated
from :data:`PRESETS` by ``make docs`` (no hand-kept copy).

The AdaBelief presets follow the reference SOLO code (``eps_in_s=False``: eps only in the
denominator, not added to s every step; see :class:`solo.AdaBelief`).

Non-finite gradients: the presets with fp32 or bf16 states (``adamw32``, ``adamw_bf16``,
``adabelief32``) set ``check_finite=False`` and so behave as torch.optim does: an inf/NaN
gradient element makes that element's states and parameter NaN and nothing else, which AMP's
GradScaler and the runners' finite-loss check are built for, and ``adamw32`` costs what torch's
fused AdamW costs (the pre-check is one more read of every gradient, ~40% of a fp32 CPU step).
The block-quantized presets keep the pre-check (``check_finite=True``): there one non-finite
element would make its block's scale non-finite and silently wipe the states of up to
``block_size - 1`` neighbours, so ``step()`` raises first, with nothing modified. Either
default is one keyword away: ``adamw32(params, check_finite=True)``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

import torch

from .momentum import adjusted_beta
from .optim import AdaBelief, AdamW, _QuantizedAdam
from .overrides import keep_fp32 as keep_fp32_groups

log = logging.getLogger(__name__)

#: bits of m from which the SOLO beta1 rule starts (beta = 0.9 at 5 bits).
SOLO_REF_BITS = 5
#: ``Preset.beta1`` value that selects SOLO's precision rule for beta1.
SOLO_RULE = "solo-rule"


@dataclass(frozen=True, eq=False)
class Preset:
    """A named optimizer configuration; calling it builds the optimizer.

    name: the one name of this configuration everywhere: ``optim=<name>``, run folders,
        record paths, W&B runs. Equal to the module attribute that holds the preset.
    label: its row label in tables. For a row of the papers' tables, the name exactly as the
        paper prints it: the paper's numbers (results/paper/*.csv) are looked up by it.
    optimizer: the optimizer class, or its import path (``"torchao.optim.AdamW8bit"``) for an
        optional peer, imported on first use.
    knobs: keyword arguments given to the optimizer (``bits``, ``quantizers``, ...).
    beta1: the beta1 used when the caller passes ``None``: a number, or :data:`SOLO_RULE`.
    """

    name: str
    label: str
    optimizer: type | str
    knobs: dict = field(default_factory=dict)
    beta1: float | str = 0.9

    def default_beta1(self) -> float:
        """The beta1 this preset uses when the caller gives none."""
        if self.beta1 != SOLO_RULE:
            return float(self.beta1)
        bits = self.knobs["bits"]
        bits_m = bits[0] if isinstance(bits, tuple) else bits
        return round(adjusted_beta(0.9, bits_m, SOLO_REF_BITS), 3)

    def optimizer_class(self) -> type:
        """The optimizer class, imported now if the preset names it by path."""
        if not isinstance(self.optimizer, str):
            return self.optimizer
        module, _, attr = self.optimizer.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"optimizer {self.name!r} needs {self.optimizer}, which cannot be "
                              f"imported here ({e}); install it or pick another optimizer") from e

    def __call__(self, params, lr=1e-3, betas=(None, 0.999), eps=1e-8, weight_decay=0.0, *,
                 keep_fp32=None, **kw):
        """Build the optimizer. ``keep_fp32``: name patterns whose parameters keep fp32 states
        (``params`` must then carry names, e.g. ``model.named_parameters()``; see
        :func:`solo.overrides.keep_fp32`)."""
        if keep_fp32:
            if not issubclass(self.optimizer_class(), _QuantizedAdam):
                raise ValueError(f"keep_fp32 needs a solo optimizer; {self.name} is "
                                 f"{self.optimizer}: drop keep_fp32 or pick a solo preset")
            params = keep_fp32_groups(params, keep_fp32)
        beta1, beta2 = betas
        if beta1 is None:
            beta1 = self.default_beta1()
            log.info("%s: beta1 = %.3f (preset default)", self.name, beta1)
        return self.optimizer_class()(params, lr=lr, betas=(beta1, beta2), eps=eps,
                                      weight_decay=weight_decay, **{**self.knobs, **kw})


# The unquantized baselines behave as torch.optim.AdamW does, pre-check off (see the docstring).
adamw32 = Preset("adamw32", "32-bit AdamW", AdamW,
                 dict(bits=32, quantizers="none", check_finite=False))
adamw_bf16 = Preset("adamw_bf16", "16-bit AdamW", AdamW,
                    dict(bits=16, quantizers="bf16", check_finite=False))
adamw8bit = Preset("adamw8bit", "8-bit AdamW", AdamW, dict(bits=8, quantizers="de"))
adamw4bit = Preset("adamw4bit", "4-bit AdamW", AdamW, dict(bits=4, quantizers=("de", "linear")))
# Li et al. (arXiv 2309.01507) keep tensors of at most 4096 elements in fp32 with rank-1 v.
adamw4bit_rank1 = Preset("adamw4bit_rank1", "4-bit AdamW, rank-1 v", AdamW,
                         dict(bits=4, quantizers=("de", "rank1-linear"),
                              min_quantizable_size=4097))
adamw2bit = Preset("adamw2bit", "2-bit AdamW", AdamW, dict(bits=2, quantizers=("de", "linear")))
solo_4_2bit = Preset("solo_4_2bit", "SOLO 4/2-bit AdamW", AdamW,
                     dict(bits=(4, 2), quantizers=("de", "log")), beta1=SOLO_RULE)
solo_3bit = Preset("solo_3bit", "SOLO 3-bit AdamW", AdamW,
                   dict(bits=3, quantizers=("de", "log")), beta1=SOLO_RULE)
solo_2bit = Preset("solo_2bit", "SOLO 2-bit AdamW", AdamW,
                   dict(bits=2, quantizers=("de", "log")), beta1=SOLO_RULE)
adabelief32 = Preset("adabelief32", "32-bit AdaBelief", AdaBelief,
                     dict(bits=32, quantizers="none", eps_in_s=False, check_finite=False))
adabelief_solo_4_2bit = Preset("adabelief_solo_4_2bit", "SOLO 4/2-bit AdaBelief", AdaBelief,
                               dict(bits=(4, 2), quantizers=("de", "log"), eps_in_s=False),
                               beta1=SOLO_RULE)

#: Every preset above by name, in the order defined (the order tables list them): defining a
#: preset is the one step that registers it.
PRESETS = {v.name: v for v in list(globals().values()) if isinstance(v, Preset)}


def get(name: str) -> Preset:
    """The preset called ``name``; a ValueError listing the valid names for any other."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")


def build(name: str, params, **kw):
    """The preset ``name`` built on ``params`` (``keep_fp32=`` and knobs as its call takes)."""
    return get(name)(params, **kw)


def default_beta1(name: str) -> float:
    """The beta1 the preset ``name`` uses when the caller gives none."""
    return get(name).default_beta1()


__all__ = ["Preset", "PRESETS", "SOLO_RULE", "build", "default_beta1", "for_hf", "get", *PRESETS]


def for_hf(name: str, *, lr: float, **overrides) -> tuple[type, dict]:
    """``(optimizer class, keyword arguments)`` of preset ``name``, as Hugging Face's
    ``Trainer(optimizer_cls_and_kwargs=...)`` takes them::

        Trainer(model, args, optimizer_cls_and_kwargs=solo.presets.for_hf("solo_4_2bit", lr=1e-3))

    ``lr`` is required because the Trainer builds the optimizer from these keywords alone:
    ``TrainingArguments.learning_rate`` is not passed (its LR schedule scales this ``lr``).
    ``weight_decay`` is refused: the Trainer sets it on each of its param groups from
    ``TrainingArguments.weight_decay`` (0 for biases and norms), so a value here would be
    ignored. ``overrides``: ``betas``, ``eps`` and the preset's knobs (``bits``, ``seed``, ...);
    a beta1 of ``None``, or none given, is the preset's default, as when calling the preset.
    Everything is validated now by building the optimizer on a one-element tensor.
    """
    if "weight_decay" in overrides:
        raise ValueError("for_hf: weight_decay is set per param group by the Trainer; "
                         "give it as TrainingArguments(weight_decay=...)")
    preset = get(name)
    beta1, beta2 = overrides.pop("betas", (None, 0.999))
    betas = (preset.default_beta1() if beta1 is None else beta1, beta2)
    kwargs = {**preset.knobs, "lr": lr, "betas": betas, **overrides}
    cls = preset.optimizer_class()
    cls([torch.zeros(1, requires_grad=True)], **kwargs)
    return cls, kwargs
