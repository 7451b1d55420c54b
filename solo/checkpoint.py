"""Copies and checkpoints of solo's optimizers: pickling, ``state_dict``, ``load_state_dict``.

A state dict is torch.optim's (plain tensors: ``torch.load(weights_only=True)`` works) plus
``sr_generators`` (the optimizer's own stochastic-rounding generators, so a resumed run draws
what the straight run drew) and, for sharded parameters, ``sharding`` (:mod:`solo.distributed`);
under torch.distributed.checkpoint the reshardable form of :mod:`solo.reshard`. Loading checks
every saved group and state against this optimizer before anything changes.
"""

from __future__ import annotations

import torch

from . import distributed, reshard, states
from .overrides import check_names

__all__ = ["Checkpointing"]


class Checkpointing:
    """The checkpoint methods of :class:`solo.base._QuantizedAdam` (a mixin before
    ``torch.optim.Optimizer``)."""

    def __getstate__(self):
        state = super().__getstate__()
        state["_generator_states"] = {k: g.get_state() for k, g in self._generators.items()}
        state["_formats"] = self._formats
        return state

    def __setstate__(self, state):
        gen_states = state.pop("_generator_states", {})
        formats = state.pop("_formats", {})
        legacy_seed = state.pop("_seed", None)  # pickles from before seed was a group knob
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("seed", legacy_seed if legacy_seed is not None
                             else torch.initial_seed())
            group.setdefault("fused", None)
            group.setdefault("check_finite", True)
            group.setdefault("bf16_stochastic_round", False)
            if self._belief:
                group.setdefault("eps_in_s", True)
        self._formats = dict(formats)
        self._restore_generators(gen_states)

    def _restore_generators(self, gen_states: dict) -> None:
        """Generators from ``{key: state}`` (keys as :meth:`generator` makes them)."""
        self._generators = {}
        for k, gstate in gen_states.items():
            device, _, shard = k.partition("/shard")
            self.generator(torch.device(device), int(shard) if shard else None).set_state(gstate)

    def state_dict(self):
        sd = super().state_dict()
        sd["sr_generators"] = {k: g.get_state() for k, g in self._generators.items()}
        sharding = self._sharding()
        if sharding is not None:
            sd["sharding"] = sharding
        if reshard.called_by_dcp():  # torch.distributed.checkpoint: the reshardable form
            return reshard.to_dcp(self, sd)
        return sd

    def _sharding(self) -> dict | None:
        return distributed.sharding_of(p for g in self.param_groups for p in g["params"])

    def load_state_dict(self, state_dict):
        if reshard.is_dcp_form(state_dict):  # from set_optimizer_state_dict, any world size
            state_dict = reshard.from_dcp(self, state_dict)
        distributed.check_sharding(state_dict.get("sharding"), self._sharding())
        state_dict = {**state_dict, "param_groups": self._saved_groups(state_dict)}
        saved_groups = state_dict["param_groups"]
        # torch.optim casts every floating state tensor to the param dtype; keep ours as saved
        # (fp32 scales stay fp32 with bf16 params, uint8 codes stay uint8).
        originals = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            for pi, (pid, p) in enumerate(zip(saved["params"], group["params"])):
                if pid in state_dict["state"]:
                    st = state_dict["state"][pid]
                    states.check_saved(st, self.state_spec(saved, p), p,
                                       f"param_groups[{gi}]['params'][{pi}]")
                    originals[p] = st
        super().load_state_dict(state_dict)
        for p, st in originals.items():
            # contiguous whatever was saved (torch.optim keeps the parameter's layout): the
            # fused steps pair elements by memory position (solo.layout)
            self.state[p] = {k: (v.to(p.device).clone(memory_format=torch.contiguous_format)
                                 if isinstance(v, torch.Tensor) else v)
                             for k, v in st.items()}
            self.state[p]["step"] = self.state[p]["step"].cpu()
        # A checkpoint without a generator for a device (taken before the first step there)
        # resumes from the checkpoint's seed, as the straight run did.
        self._restore_generators(state_dict.get("sr_generators", {}))
        self._formats = {}
        self._record_formats()

    def _saved_groups(self, state_dict) -> list[dict]:
        """The checkpoint's groups, validated, with knobs newer than it filled in."""
        saved_groups = state_dict["param_groups"]
        check_names(saved_groups, self.param_groups)  # names the parameter (keep_fp32)
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)} (field: param_groups)")
        out = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            where = f"param_groups[{gi}]"
            for k in self._required_keys:
                if k not in saved:
                    raise ValueError(f"checkpoint {where} lacks the field {k!r}; it is not a "
                                     f"state dict of this optimizer (or was edited)")
            saved = dict(saved)
            for k in self._new_keys:
                if k in group and k not in saved:
                    # eps_in_s: AdaBelief added eps to s before the knob existed
                    saved[k] = True if k == "eps_in_s" else group[k]
            self._check_group(saved, f"checkpoint {where}",
                              first_seed=out[0]["seed"] if out else None)
            for k in ("bits", "quantizers", "block_size", "quantile", "min_quantizable_size"):
                if saved[k] != group[k]:
                    raise ValueError(f"checkpoint mismatch in {where} field {k!r}: "
                                     f"saved {saved[k]!r}, optimizer has {group[k]!r}")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"checkpoint mismatch in {where} field 'params': "
                                 f"saved {len(saved['params'])} tensors, optimizer has "
                                 f"{len(group['params'])}")
            out.append(saved)
        return out
