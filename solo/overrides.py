"""Per-parameter state formats by name: keep chosen parameters at fp32 states.

``keep_fp32(model.named_parameters(), ("embed", "lm_head", "norm"))`` returns param groups in
which every parameter whose name contains one of the patterns sits in a group of its own with
fp32 states (``bits=32, quantizers="none"``, marked ``keep_fp32=True``), beside the other
groups' knobs (weight decay, lr) it came with. Every group carries ``param_names``
(torch.optim's key for names), so a state dict records which parameter has which format, and
:func:`check_names` refuses a checkpoint whose parameters sit in other groups than this
optimizer's, naming the parameter. The presets take ``keep_fp32=`` directly
(``solo.presets.solo_4_2bit(model.named_parameters(), keep_fp32=("embed",))``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["keep_fp32", "check_names", "FP32_KNOBS"]

#: the group knobs of a kept parameter
FP32_KNOBS = {"bits": 32, "quantizers": "none", "keep_fp32": True}


def _named_groups(params) -> list[dict]:
    """``params`` as groups with ``param_names``: (name, tensor) pairs, or dicts whose params
    are such pairs or come with a ``param_names`` list."""
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    out = []
    for g in groups:
        ps = list(g["params"])
        if ps and all(isinstance(p, tuple) and len(p) == 2 for p in ps):
            names, tensors = [n for n, _ in ps], [t for _, t in ps]
        elif "param_names" in g and len(g["param_names"]) == len(ps):
            names, tensors = list(g["param_names"]), ps
        else:
            raise ValueError("keep_fp32 needs parameter names: pass model.named_parameters() "
                             "(or groups of (name, tensor) pairs)")
        out.append({**g, "params": tensors, "param_names": names})
    return out


def keep_fp32(params: Iterable, patterns: Sequence[str]) -> list[dict]:
    """Param groups with every parameter whose name contains one of ``patterns`` (substrings)
    moved to a group of fp32 states next to its source group's other knobs. Groups left empty
    are dropped; kept groups come after the others, in source order."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    patterns = tuple(patterns)
    rest, kept = [], []
    matched = set()
    for g in _named_groups(params):
        sel = [(n, t) for n, t in zip(g["param_names"], g["params"])
               if any(pat in n for pat in patterns)]
        matched.update(pat for n, _ in sel for pat in patterns if pat in n)
        others = [(n, t) for n, t in zip(g["param_names"], g["params"])
                  if not any(pat in n for pat in patterns)]
        for part, out, extra in ((others, rest, {}), (sel, kept, FP32_KNOBS)):
            if part:
                out.append({**g, **extra, "params": [t for _, t in part],
                            "param_names": [n for n, _ in part]})
    unused = [pat for pat in patterns if pat not in matched]
    if unused:
        raise ValueError(f"keep_fp32 pattern {unused[0]!r} matches no parameter name; fix the "
                         f"pattern (substrings of model.named_parameters() names)")
    return rest + kept


def _where(groups: list[dict]) -> dict[str, tuple[int, bool]]:
    return {n: (gi, bool(g.get("keep_fp32"))) for gi, g in enumerate(groups)
            for n in g.get("param_names", ())}


def check_names(saved_groups: list[dict], groups: list[dict]) -> None:
    """Raise ValueError naming the first parameter that sits in another group (or another
    state format) in the checkpoint than in this optimizer; no-op when either lacks names."""
    if not all("param_names" in g for g in (*saved_groups, *groups)):
        return
    saved, here = _where(saved_groups), _where(groups)

    def fmt(loc):
        state = "fp32 states (keep_fp32)" if loc[1] else "the group's format"
        return f"param_groups[{loc[0]}], {state}"

    for name, loc in here.items():
        if name not in saved:
            raise ValueError(f"checkpoint mismatch: parameter {name!r} is not in the "
                             f"checkpoint; load it into the model it was saved from")
        if saved[name] != loc:
            raise ValueError(f"checkpoint mismatch for parameter {name!r}: {fmt(saved[name])} "
                             f"in the checkpoint, {fmt(loc)} here; build the optimizer with the "
                             f"checkpoint's keep_fp32")

