"""What solo's optimizers share: their groups and knobs, state formats, stochastic-rounding
generators and the ``step()`` around the update.

:class:`_QuantizedAdam` is the base of :class:`solo.AdamW`, :class:`solo.Adam`,
:class:`solo.AdaBelief` and :class:`solo.Adafactor`. A subclass sets what differs: the update
rule (``_update``, by default :func:`solo.update.step_one`), the knob checks
(``_check_knobs``), the state layout (``codecs``/``state_spec``/``_init_state``) and whether
fused steps (``_fused_steps``) and sharded parameters (``_shardable``) are possible. The step
path of each parameter is picked by :func:`solo.dispatch.choose`; checkpoints are
:mod:`solo.checkpoint`'s.
"""

from __future__ import annotations

import torch

from . import dispatch, distributed, states
from .checkpoint import Checkpointing
from .codecs import Codec, make_codec
from .distributed import local
from .update import step_one
from .validation import check_format, check_group, format_of

__all__ = ["_QuantizedAdam"]

# Group knobs a checkpoint written before they existed may lack (load_state_dict fills them).
_NEW_KEYS = ("seed", "fused", "eps_in_s", "check_finite", "bf16_stochastic_round")
_REQUIRED_KEYS = ("params", "lr", "betas", "eps", "weight_decay", "bits", "quantizers",
                  "block_size", "quantile", "min_quantizable_size")


class _QuantizedAdam(Checkpointing, torch.optim.Optimizer):
    _belief = False
    # Adam's L2 decay: weight_decay * p joins the gradient (so m and v see it) instead of the
    # decoupled p *= 1 - lr * weight_decay
    _l2 = False
    # the group keys every checkpoint has, and those an older checkpoint may lack
    _required_keys = _REQUIRED_KEYS
    _new_keys = _NEW_KEYS
    # whether a parameter may take a fused step (solo.dispatch), and may be a DTensor shard
    _fused_steps = True
    _shardable = True

    def __init__(self, params, defaults: dict):
        if defaults["seed"] is None:
            # Resolved now so that the groups, and so every checkpoint, carry the seed.
            defaults["seed"] = torch.initial_seed()
        self._check_group(defaults)
        self._generators: dict[str, torch.Generator] = {}
        # group index -> its state-format knobs, once the group holds states
        self._formats: dict[int, dict] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        group = {**self.defaults, **param_group, "params": params}
        if group["seed"] is None:
            group["seed"] = self.defaults["seed"]
        if len(set(map(id, params))) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for p in params:
            if isinstance(p, torch.Tensor) and p.is_complex():
                raise ValueError("complex parameters are not supported; "
                                 "use torch.view_as_real(param)")
        first = self.param_groups[0]["seed"] if self.param_groups else None
        self._check_group(group, f"param_groups[{len(self.param_groups)}]", first_seed=first)
        super().add_param_group(group)

    # --- knobs ------------------------------------------------------------------------------
    def _check_group(self, group: dict, where: str = "", *, first_seed=None,
                     fmt: dict | None = None) -> None:
        """Validate (and normalise) one group wherever it enters: the constructor's defaults,
        ``add_param_group``, a checkpoint's groups, every group at each ``step()``. ``where``
        prefixes the messages; ``fmt``: the state-format knobs the group's states were made
        with (they cannot change); ``first_seed``: the seed of ``param_groups[0]``, which
        every group shares (the SR generator is per optimizer)."""
        at = f"{where}: " if where else ""
        self._check_knobs(group, where)
        sr = group.setdefault("bf16_stochastic_round", False)
        if not isinstance(sr, bool):
            raise ValueError(f"{at}Invalid bf16_stochastic_round: {sr!r}; allowed: True, False")
        if fmt is not None:
            check_format(fmt, group, where)
        if first_seed is not None and group["seed"] != first_seed:
            raise ValueError(f"{at}seed {group['seed']!r} differs from param_groups[0]'s "
                             f"{first_seed!r}; the SR generator is per optimizer: give every "
                             f"group the same seed")

    def _check_knobs(self, group: dict, where: str) -> None:
        """The optimizer's own knob checks (:func:`solo.validation.check_group`)."""
        check_group(group, self._belief, where)

    def _check_groups(self) -> None:
        """Re-validate every group (they may have been edited since the last step)."""
        for gi, group in enumerate(self.param_groups):
            self._check_group(group, f"param_groups[{gi}]", fmt=self._formats.get(gi),
                              first_seed=self.param_groups[0]["seed"])

    def _record_formats(self) -> None:
        for gi, group in enumerate(self.param_groups):
            if gi not in self._formats and any(p in self.state for p in group["params"]):
                self._formats[gi] = format_of(group)

    @staticmethod
    def _rounds_bf16(group, p) -> bool:
        """Whether ``p``'s weight update is rounded stochastically (a bf16 parameter of a group
        with ``bf16_stochastic_round``)."""
        return group["bf16_stochastic_round"] and p.dtype == torch.bfloat16

    # --- state format -----------------------------------------------------------------------
    def codecs(self, group: dict, p: torch.Tensor) -> tuple[Codec, Codec]:
        """The (first, second) state codecs of parameter ``p`` in ``group``. For a DTensor the
        threshold compares the whole parameter's numel, so every rank picks the same format."""
        if p.numel() < group["min_quantizable_size"]:
            full = make_codec("none", 32, signed=False)
            return full, full
        return tuple(make_codec(group["quantizers"][i], group["bits"][i], signed=(i == 0),
                                block_size=group["block_size"][i], quantile=group["quantile"])
                     for i in (0, 1))

    def state_spec(self, group: dict, p: torch.Tensor) -> dict:
        """State key -> (shape, dtype) that ``p`` will hold (also for meta tensors; for a
        DTensor, this rank's shard)."""
        return states.spec(*self.codecs(group, p), local(p).shape)

    _fields = staticmethod(states.fields)

    def _init_state(self, group, p, state):
        state["step"] = torch.zeros((), dtype=torch.float32)
        if p.device.type == "meta":  # shapes only, as torch.optim steps meta tensors
            for k, (shape, dtype) in self.state_spec(group, p).items():
                if k != "step":
                    state[k] = torch.empty(shape, dtype=dtype, device="meta")
            return
        for name, codec in zip(states.STATES, self.codecs(group, p)):
            for field, t in codec.init(local(p).shape, p.device).items():
                state[states.key(name, field)] = t

    # --- generators -------------------------------------------------------------------------
    def generator(self, device: torch.device, shard: int | None = None) -> torch.Generator:
        """The optimizer's own SR generator for ``device`` (seeded from the groups' ``seed``);
        with ``shard``, the generator of that shard index of sharded parameters (seeded with
        ``solo.distributed.shard_seed(seed, shard)``)."""
        k = str(torch.device(device)) + ("" if shard is None else f"/shard{shard}")
        if k not in self._generators:
            seed = self.param_groups[0]["seed"]
            g = torch.Generator(device=device)
            g.manual_seed(seed if shard is None else distributed.shard_seed(seed, shard))
            self._generators[k] = g
        return self._generators[k]

    def _generator_of(self, p: torch.Tensor) -> torch.Generator:
        shard = distributed.shard_of(p)
        return self.generator(p.device, None if shard is None else shard[0])

    # --- step -------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_groups()
        name, work = type(self).__name__, []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if not self._shardable and distributed.is_dtensor(p):
                    raise RuntimeError(f"{name} does not support sharded (DTensor) "
                                       f"parameters: use solo.AdamW, or replicate them")
                work.append((gi, pi, group, p))
        bad = self._nonfinite([w for w in work if w[2]["check_finite"]])
        sharded = next((p for *_, p in work if distributed.is_dtensor(p)), None)
        # each rank sees only its shards' gradients: all ranks must agree to skip the step
        elsewhere = sharded is not None and distributed.any_over_mesh(int(bool(bad)), sharded)
        if bad:
            raise FloatingPointError(
                f"non-finite gradient in param_groups[{bad[0][0]}]['params'][{bad[0][1]}] "
                f"({len(bad)} tensor(s) in all); nothing was updated")
        if elsewhere:
            raise FloatingPointError("non-finite gradient in another rank's shard of this "
                                     "optimizer's parameters; nothing was updated")
        dispatch.run(self, work)
        self._record_formats()
        return loss

    def kernels(self) -> dict[int, list[str]]:
        """Which step ran in the last ``step()``, per param group index: a sorted list of
        ``"reference"`` (the eager loop), ``"cpu_fused"`` (the fused C++ step), ``"triton"``,
        ``"torch"`` (torch's fused/foreach AdamW, fp32/bf16 states) or ``"meta"``. Empty
        before the first step. Run records store it (provenance.kernel)."""
        return {gi: sorted(names) for gi, names in getattr(self, "_kernels", {}).items()}

    def _path(self, group, p, where: str = "this parameter") -> str:
        """How ``p`` steps: :func:`solo.dispatch.choose`."""
        return dispatch.choose(self, group, p, where)

    def _update(self, group, p, state, kernel: bool) -> None:
        """One parameter's reference (or, with ``kernel``, fused C++) step."""
        step_one(self, group, p, state, kernel)

    @staticmethod
    def _nonfinite(work) -> list[tuple[int, int]]:
        """(group, index) of gradients with an inf/NaN. A sum is non-finite whenever an element
        is, and costs one read (``isfinite().all()`` costs several): only tensors whose sum is
        not finite (or overflowed) get the exact check."""
        work = [w for w in work if w[3].device.type != "meta"]
        if not work:
            return []
        sums = [local(p.grad).sum(dtype=torch.float32) for _, _, _, p in work]
        dev = sums[0].device
        finite = torch.isfinite(torch.stack([s.to(dev) for s in sums])).tolist()
        return [(gi, pi) for (gi, pi, _, p), ok in zip(work, finite)
                if not ok and not torch.isfinite(local(p.grad)).all()]
