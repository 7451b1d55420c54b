"""Validation of the optimizers' knobs, in torch.optim's message style.

A group's knobs are checked wherever they can enter (docs/optimizers.md, "Validation and failures"): the constructor, which
checks its defaults; ``add_param_group``; ``load_state_dict``, which checks the saved groups; and
``step()``, which re-checks every group, since ``param_groups`` may be edited between steps
(an lr schedule does). The knobs that fix a state's format (``FORMAT_KEYS``) cannot change once
a group holds states; :func:`check_format` refuses that with the knob, the old and the new value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .codecs import check_quantizer

__all__ = ["FORMAT_KEYS", "check_group", "check_format", "format_of", "pair"]

#: Knobs fixed once a group holds states: the codes and scales already stored would be read with
#: another format (or the SR stream would change). lr, betas, eps, weight_decay, quantile and
#: fused and check_finite may change between steps.
FORMAT_KEYS = ("bits", "quantizers", "block_size", "min_quantizable_size", "seed")

_STATE_NAMES = ("first state (m)", "second state (v)")


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def pair(x, name: str) -> tuple:
    """``x`` as a (first state, second state) pair: any sequence but a string, or one value."""
    if isinstance(x, Sequence) and not isinstance(x, str):
        if len(x) != 2:
            raise ValueError(f"Invalid {name}: {x!r}; expected one value or a pair "
                             f"(first state, second state)")
        return tuple(x)
    return (x, x)


def _finite_at_least_zero(x, what: str) -> None:
    if not _real(x) or not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"Invalid {what}: {x!r}; allowed: a finite number >= 0")


def check_group(group: dict, belief: bool, where: str = "") -> None:
    """Raise ValueError naming the first bad knob of ``group``; normalise pairs in place.

    ``where`` (e.g. ``"param_groups[1]"``) prefixes the message.
    """
    at = f"{where}: " if where else ""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{at}Tensor lr must be 1-element")
        value = lr.item()
    else:
        value = lr
    if not _real(value) or not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{at}Invalid learning rate: {lr!r}; allowed: a finite number >= 0 "
                         f"or a 1-element tensor holding one")
    for key, what in (("eps", "epsilon value"), ("weight_decay", "weight_decay value")):
        try:
            _finite_at_least_zero(group[key], what)
        except ValueError as e:
            raise ValueError(f"{at}{e}") from None
    betas = group["betas"]
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise ValueError(f"{at}Invalid betas: {betas!r}; expected (beta1, beta2)")
    for i, b in enumerate(betas):
        if not _real(b) or not 0.0 <= b < 1.0:
            raise ValueError(f"{at}Invalid beta parameter at index {i}: {b!r}; allowed: [0, 1)")
    group["betas"] = tuple(betas)

    bits, quantizers, block_size = (pair(group["bits"], "bits"),
                                    pair(group["quantizers"], "quantizers"),
                                    pair(group["block_size"], "block_size"))
    for i in (0, 1):
        if not isinstance(quantizers[i], str):
            raise ValueError(f"{at}Invalid quantizer for {_STATE_NAMES[i]}: {quantizers[i]!r}; "
                             f"allowed: a name (see solo.codecs.QUANTIZERS)")
        if not _int(bits[i]):
            raise ValueError(f"{at}Invalid bits for {_STATE_NAMES[i]}: {bits[i]!r}; allowed: an "
                             f"int (2, 3, 4, 8, 16 or 32 by quantizer)")
        if not _int(block_size[i]) or block_size[i] <= 0:
            raise ValueError(f"{at}Invalid block_size: {block_size[i]!r}; allowed: a positive "
                             f"int (elements) or a pair of them")
        try:
            check_quantizer(quantizers[i], int(bits[i]), signed=(i == 0), what=_STATE_NAMES[i])
        except ValueError as e:
            raise ValueError(f"{at}{e}") from None
    group["bits"] = tuple(int(b) for b in bits)
    group["quantizers"] = quantizers
    group["block_size"] = tuple(int(b) for b in block_size)

    q = group["quantile"]
    if not _real(q) or not 0.0 < q < 1.0:
        raise ValueError(f"{at}Invalid quantile: {q!r}; allowed: 0 < quantile < 1")
    mqs = group["min_quantizable_size"]
    if not _int(mqs) or mqs < 0:
        raise ValueError(f"{at}Invalid min_quantizable_size: {mqs!r}; "
                         f"allowed: an int >= 0 (elements)")
    seed = group["seed"]
    if not _int(seed) or not 0 <= seed < 2**64:
        raise ValueError(f"{at}Invalid seed: {seed!r}; allowed: an int in [0, 2**64)")
    fused = group["fused"]
    if not (fused is None or fused is True or fused is False):
        raise ValueError(f"{at}Invalid fused: {fused!r}; allowed: None (auto), True, False")
    if not isinstance(group["check_finite"], bool):
        raise ValueError(f"{at}Invalid check_finite: {group['check_finite']!r}; "
                         f"allowed: True, False")
    if belief and not isinstance(group["eps_in_s"], bool):
        raise ValueError(f"{at}Invalid eps_in_s: {group['eps_in_s']!r}; allowed: True, False")


def format_of(group: dict) -> dict:
    """The group's state-format knobs (after :func:`check_group`)."""
    return {k: group[k] for k in FORMAT_KEYS}


def check_format(old: dict, group: dict, where: str) -> None:
    """Refuse a change of a state-format knob of a group that already holds states."""
    for key in FORMAT_KEYS:
        if old[key] != group[key]:
            raise ValueError(
                f"{where}['{key}'] changed from {old[key]!r} to {group[key]!r} after the "
                f"group's states were created; a state's format is fixed once created: restore "
                f"{old[key]!r}, or build a new optimizer for the new format")
