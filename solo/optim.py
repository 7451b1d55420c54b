"""AdamW and AdaBelief with quantized states (method.md section 2).

The update rule is written once (:func:`_update`); the state format is a pair of codecs (first
and second moment). Between steps each state lives only in its codec's fields, e.g.
``exp_avg_codes`` (packed uint8) + ``exp_avg_scales`` (fp32 per block), or ``exp_avg`` (fp32) for
unquantized states, so ``state_dict()`` is plain tensors and ``torch.load(weights_only=True)``
works. This eager per-tensor loop is the reference implementation.

Sharded (FSDP2, DTensor) parameters step their local shard with per-shard blocks and SR
generators, and checkpoint per rank: see :mod:`solo.distributed`.

Non-finite gradients: ``step()`` raises ``FloatingPointError`` naming the parameter before any
parameter or state is modified (so a caller may skip the batch and go on). Mixed-precision users
with a GradScaler never reach this: the scaler skips ``step()`` on inf/NaN gradients. A group
with ``check_finite=False`` skips this read of every gradient (torch.optim's behaviour; the
default of the fp32/bf16-state presets, see :mod:`solo.presets`).
"""

from __future__ import annotations

import math

import torch

from . import distributed, fused, reshard, triton_step
from .bf16_sr import round_into_
from .codecs import Codec, make_codec
from .distributed import local
from .full_precision import takes_torch_step, torch_step
from .overrides import check_names
from .validation import check_format, check_group, format_of

__all__ = ["AdamW", "Adam", "AdaBelief"]

_STATES = ("exp_avg", "exp_avg_sq")
# Group knobs a checkpoint written before they existed may lack (load_state_dict fills them).
_NEW_KEYS = ("seed", "fused", "eps_in_s", "check_finite", "bf16_stochastic_round")
# _path's names -> the names kernels() reports
_KERNEL_NAMES = {"meta": "meta", "torch": "torch", "kernel": "cpu_fused", "triton": "triton",
                 "reference": "reference"}
_REQUIRED_KEYS = ("params", "lr", "betas", "eps", "weight_decay", "bits", "quantizers",
                  "block_size", "quantile", "min_quantizable_size")


class _QuantizedAdam(torch.optim.Optimizer):
    _belief = False
    # Adam's L2 decay: weight_decay * p joins the gradient (so m and v see it) instead of the
    # decoupled p *= 1 - lr * weight_decay
    _l2 = False
    # the group keys every checkpoint has, and those an older checkpoint may lack
    _required_keys = _REQUIRED_KEYS
    _new_keys = _NEW_KEYS

    def __init__(self, params, lr, betas, eps, weight_decay, *, bits, quantizers, block_size,
                 quantile, min_quantizable_size, seed, fused, **extra):
        if seed is None:
            # Resolved now so that the groups, and so every checkpoint, carry the seed.
            seed = torch.initial_seed()
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bits=bits,
                        quantizers=quantizers, block_size=block_size, quantile=quantile,
                        min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
                        **extra)
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
        where = f"param_groups[{len(self.param_groups)}]"
        self._check_group(group, where)
        if self.param_groups and group["seed"] != self.param_groups[0]["seed"]:
            raise ValueError(f"{where}: seed {group['seed']!r} differs from param_groups[0]'s "
                             f"{self.param_groups[0]['seed']!r}; the SR generator is per "
                             f"optimizer: give every group the same seed")
        super().add_param_group(group)

    def _check_group(self, group: dict, where: str = "") -> None:
        """Validate (and normalise) one group's knobs; ``where`` prefixes the message."""
        check_group(group, self._belief, where)
        sr = group.setdefault("bf16_stochastic_round", False)
        if not isinstance(sr, bool):
            raise ValueError(f"{where + ': ' if where else ''}Invalid bf16_stochastic_round: "
                             f"{sr!r}; allowed: True, False")

    @staticmethod
    def _rounds_bf16(group, p) -> bool:
        """Whether ``p``'s weight update is rounded stochastically (a bf16 parameter of a group
        with ``bf16_stochastic_round``)."""
        return group["bf16_stochastic_round"] and p.dtype == torch.bfloat16

    def _check_groups(self) -> None:
        """Re-validate every group (they may have been edited since the last step)."""
        for gi, group in enumerate(self.param_groups):
            where = f"param_groups[{gi}]"
            self._check_group(group, where)
            if gi in self._formats:
                check_format(self._formats[gi], group, where)
            if group["seed"] != self.param_groups[0]["seed"]:
                raise ValueError(f"{where}: seed {group['seed']!r} differs from param_groups[0]'s "
                                 f"{self.param_groups[0]['seed']!r}; the SR generator is per "
                                 f"optimizer: give every group the same seed")

    def _record_formats(self) -> None:
        for gi, group in enumerate(self.param_groups):
            if gi not in self._formats and any(p in self.state for p in group["params"]):
                self._formats[gi] = format_of(group)

    # --- state format ---------------------------------------------------------------------
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
        return _spec(*self.codecs(group, p), local(p).shape)

    @staticmethod
    def _fields(state: dict, name: str, codec: Codec) -> dict:
        if not codec.quantized:
            return {"value": state[name]}
        return {f: state[f"{name}_{f}"] for f in codec.spec(torch.Size([1]))}

    def _init_state(self, group, p, state):
        state["step"] = torch.zeros((), dtype=torch.float32)
        if p.device.type == "meta":  # shapes only, as torch.optim steps meta tensors
            for key, (shape, dtype) in self.state_spec(group, p).items():
                if key != "step":
                    state[key] = torch.empty(shape, dtype=dtype, device="meta")
            return
        for name, codec in zip(_STATES, self.codecs(group, p)):
            for field, t in codec.init(local(p).shape, p.device).items():
                state[name if field == "value" else f"{name}_{field}"] = t

    def generator(self, device: torch.device, shard: int | None = None) -> torch.Generator:
        """The optimizer's own SR generator for ``device`` (seeded from the groups' ``seed``);
        with ``shard``, the generator of that shard index of sharded parameters (seeded with
        ``solo.distributed.shard_seed(seed, shard)``)."""
        key = str(torch.device(device)) + ("" if shard is None else f"/shard{shard}")
        if key not in self._generators:
            seed = self.param_groups[0]["seed"]
            g = torch.Generator(device=device)
            g.manual_seed(seed if shard is None else distributed.shard_seed(seed, shard))
            self._generators[key] = g
        return self._generators[key]

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
        work = []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
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
        # every path is chosen (and fused=True refused where none exists) before any change
        paths = [self._path(group, p, f"param_groups[{gi}]['params'][{pi}]")
                 for gi, pi, group, p in work]
        self._kernels = {}
        for (gi, *_), path in zip(work, paths):
            self._kernels.setdefault(gi, set()).add(_KERNEL_NAMES[path])
        full: dict[int, list] = {}
        tri: dict[int, list] = {}
        for (gi, _, group, p), path in zip(work, paths):
            state = self.state[p]
            if not state:
                self._init_state(group, p, state)
            if path == "meta":
                state["step"] += 1
            elif path == "torch":
                full.setdefault(gi, []).append(p)
            elif path == "triton":
                tri.setdefault(gi, []).append(p)
            else:
                self._update(group, p, state, kernel=path == "kernel")
        for gi, ps in full.items():
            torch_step(self.param_groups[gi], ps, [self.state[p] for p in ps], l2=self._l2)
        for gi, ps in tri.items():
            self._triton_step(self.param_groups[gi], ps)
        self._record_formats()
        return loss

    def kernels(self) -> dict[int, list[str]]:
        """Which step ran in the last ``step()``, per param group index: a sorted list of
        ``"reference"`` (the eager loop), ``"cpu_fused"`` (the fused C++ step), ``"triton"``,
        ``"torch"`` (torch's fused/foreach AdamW, fp32/bf16 states) or ``"meta"``. Empty
        before the first step. Run records store it (provenance.kernel)."""
        return {gi: sorted(names) for gi, names in getattr(self, "_kernels", {}).items()}

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

    def _path(self, group, p, where: str = "this parameter") -> str:
        """How ``p`` (``where``: its place in the groups, for messages) steps: "meta" (shapes
        only), "torch" (torch's fused/foreach AdamW), "kernel" (the fused C++ step), "triton"
        (the Triton step, CUDA) or "reference" (the eager loop)."""
        codec_m, codec_v = self.codecs(group, p)
        if p in self.state:
            _check_shapes(self.state[p], _spec(codec_m, codec_v, local(p).shape), p, where)
        if p.device.type == "meta":
            return "meta"
        if self._rounds_bf16(group, p):
            if group["fused"]:
                raise RuntimeError("fused=True but bf16_stochastic_round has no fused step (its "
                                   "bf16 parameters take the reference step); use fused=None")
            return "reference"
        if takes_torch_step(group, p, codec_m, codec_v, self._belief):
            return "torch"
        if group["fused"] is False:
            return "reference"
        # one choice, two kernels: the Triton step on CUDA, the C++ step elsewhere (on the local
        # shard of a DTensor); the kernel is loaded only for a format it supports
        if triton_step.handles(p):
            path, mod, q, what = "triton", triton_step, p, "the Triton step"
            load = triton_step.kernel
        else:
            path, mod, q, what = "kernel", fused, local(p), "the fused CPU step"
            load = fused.extension
        why = mod.unsupported(codec_m, codec_v, q)
        if why is None:
            if load() is not None:
                return path
            if group["fused"]:
                raise RuntimeError(f"fused=True but {what} is unavailable: {mod.unavailable()}")
        elif group["fused"]:
            raise RuntimeError(f"fused=True but {what} has no fused kernel for {where} "
                               f"(shape {tuple(p.shape)}): {why}; use fused=None (the fused "
                               f"step where it exists) or fused=False")
        return "reference"

    # --- quantized states ---------------------------------------------------------------------
    def _update(self, group, p, state, kernel: bool):
        # The fused C++ step (solo/csrc/fused_step.cpp) and the Triton step
        # (solo/triton_kernel.py) repeat the float32 operations below in this order.
        codec_m, codec_v = self.codecs(group, p)
        fm, fv = self._fields(state, "exp_avg", codec_m), self._fields(state, "exp_avg_sq", codec_v)
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        lr = lr.item() if isinstance(lr, torch.Tensor) else lr
        # AdaBelief's eps inside s (see AdaBelief); 0 is exact: s + 0 == s for s >= 0
        eps_s = eps if self._belief and group["eps_in_s"] else 0.0
        state["step"] += 1
        step = state["step"].item()
        gen = self._generator_of(p)
        p, grad = local(p), local(p.grad)
        if self._l2 and wd != 0:
            grad, wd = grad.float().add(p.float(), alpha=wd), 0.0
        if kernel:
            # One 63-bit key per tensor per step from the optimizer's generator: the kernel's
            # SR draws are a function of (key, element), so resuming is exact.
            key = (int(torch.randint(0, 2**63 - 1, (1,), generator=gen))
                   if codec_v.stochastic else 0)
            fused.step(p, grad, codec_m, fm, codec_v, fv, lr=lr, beta1=beta1, beta2=beta2,
                       eps=eps, weight_decay=wd, bc1=1 - beta1**step,
                       bc2_sqrt=math.sqrt(1 - beta2**step), belief=self._belief,
                       belief_eps=eps_s, key=key)
            return
        g = grad.float()
        m = codec_m.decode(fm, p.shape)
        v = codec_v.decode(fv, p.shape)
        p32 = p if p.dtype == torch.float32 else p.float()
        if wd != 0:
            p32.mul_(1 - lr * wd)
        m.lerp_(g, 1 - beta1)
        if self._belief:
            # AdaBelief (Zhuang et al. 2020, arXiv 2010.07468, Alg. 2): EMA of (g - m)^2 + eps.
            d = g - m
            v.mul_(beta2).addcmul_(d, d, value=1 - beta2)
            if eps_s:
                v.add_(eps_s)
        else:
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p32.addcdiv_(m, denom, value=-lr / bc1)
        sr = self._rounds_bf16(group, p)
        if p32 is not p and not sr:
            p.copy_(p32)
        # The update used the fresh fp32 m and v; only now are they requantized.
        codec_m.encode(m, fm, gen)
        codec_v.encode(v, fv, gen)
        if sr:  # after the states' draws, so they are those of a run without it
            round_into_(p, p32, gen)

    def _triton_step(self, group, params) -> None:
        """The quantized step of ``params`` (one group, one format) in one Triton launch per
        device and dtype: the update of :meth:`_update`, keys drawn as for the C++ kernel."""
        codec_m, codec_v = self.codecs(group, params[0])
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        lr = lr.item() if isinstance(lr, torch.Tensor) else lr
        eps_s = eps if self._belief and group["eps_in_s"] else 0.0
        by_device: dict[torch.device, list] = {}
        for p in params:
            by_device.setdefault(p.device, []).append(p)
        for device, ps in by_device.items():
            steps = []
            for p in ps:
                self.state[p]["step"] += 1
                steps.append(self.state[p]["step"].item())
            gen = self.generator(device)
            # one key per tensor, in order: on a CPU generator the same numbers as the C++
            # step's one-at-a-time draws; kept on the device (no sync)
            keys = (torch.randint(0, 2**63 - 1, (len(ps),), generator=gen, device=device)
                    if codec_v.stochastic else None)
            grads = [p.grad.contiguous() for p in ps]
            if self._l2 and wd != 0:
                grads = [g.float().add(p.float(), alpha=wd) for g, p in zip(grads, ps)]
            triton_step.step(
                ps, grads,
                [self._fields(self.state[p], "exp_avg", codec_m) for p in ps],
                [self._fields(self.state[p], "exp_avg_sq", codec_v) for p in ps],
                codec_m, codec_v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=0.0 if self._l2 else wd, bc1s=[1 - beta1**t for t in steps],
                bc2s=[math.sqrt(1 - beta2**t) for t in steps], belief=self._belief,
                belief_eps=eps_s, keys=keys)

    # --- copies and checkpoints ---------------------------------------------------------------
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

    def _restore_generators(self, states: dict) -> None:
        """Generators from ``{key: state}`` (keys as :meth:`generator` makes them)."""
        self._generators = {}
        for key, gstate in states.items():
            device, _, shard = key.partition("/shard")
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
                    _check_state(st, self.state_spec(saved, p), p,
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
            for key in self._required_keys:
                if key not in saved:
                    raise ValueError(f"checkpoint {where} lacks the field {key!r}; it is not a "
                                     f"state dict of this optimizer (or was edited)")
            saved = dict(saved)
            for key in self._new_keys:
                if key in group and key not in saved:
                    # eps_in_s: AdaBelief added eps to s before the knob existed
                    saved[key] = True if key == "eps_in_s" else group[key]
            self._check_group(saved, f"checkpoint {where}")
            for key in ("bits", "quantizers", "block_size", "quantile", "min_quantizable_size"):
                if saved[key] != group[key]:
                    raise ValueError(f"checkpoint mismatch in {where} field {key!r}: "
                                     f"saved {saved[key]!r}, optimizer has {group[key]!r}")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"checkpoint mismatch in {where} field 'params': "
                                 f"saved {len(saved['params'])} tensors, optimizer has "
                                 f"{len(group['params'])}")
            if out and saved["seed"] != out[0]["seed"]:
                raise ValueError(f"checkpoint {where}: seed {saved['seed']!r} differs from "
                                 f"param_groups[0]'s {out[0]['seed']!r}")
            out.append(saved)
        return out


def _spec(codec_m: Codec, codec_v: Codec, shape: torch.Size) -> dict:
    """State key -> (shape, dtype) of a parameter of ``shape`` with these codecs."""
    spec = {"step": ((), torch.float32)}
    for name, codec in zip(_STATES, (codec_m, codec_v)):
        for field, sd in codec.spec(shape).items():
            spec[name if field == "value" else f"{name}_{field}"] = sd
    return spec


def _check_shapes(state: dict, spec: dict, p: torch.Tensor, where: str) -> None:
    """Refuse a parameter whose shape changed after its states were made (they would be read
    as another tensor's), naming it, before anything is updated."""
    for key, (shape, _) in spec.items():
        t = state.get(key)
        if isinstance(t, torch.Tensor) and tuple(t.shape) != tuple(shape):
            raise RuntimeError(
                f"{where} has shape {tuple(p.shape)} but its optimizer states were made for "
                f"another shape ({key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}); "
                f"a parameter cannot change shape once it has states: restore its shape, or "
                f"drop its states (del optimizer.state[param]) to start them afresh")


def _check_state(st: dict, spec: dict, p: torch.Tensor, where: str) -> None:
    """A saved state has every field of ``spec`` with its shape and dtype, and finite values
    (scales >= 0, alphas in (0, 1)): a NaN loaded into a scale would turn the parameter NaN."""
    for key, (shape, dtype) in spec.items():
        if key not in st:
            raise ValueError(f"checkpoint mismatch: state field {key!r} missing for {where} "
                             f"(shape {tuple(p.shape)})")
        t = st[key]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"checkpoint state field {key!r} of {where} is a "
                             f"{type(t).__name__}, expected a tensor")
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ValueError(
                f"checkpoint mismatch in state field {key!r} for {where} (shape "
                f"{tuple(p.shape)}): saved {tuple(t.shape)} {t.dtype}, expected "
                f"{tuple(shape)} {dtype}")
        if not t.is_floating_point() or t.device.type == "meta":
            continue
        ok = bool(torch.isfinite(t).all())
        if ok and (key == "step" or key.endswith("_scales") or key == "exp_avg_sq"):
            ok = bool((t >= 0).all())
        if ok and key.endswith("_alphas"):
            ok = bool(((t > 0) & (t < 1)).all())
        if not ok:
            allowed = ("in (0, 1)" if key.endswith("_alphas") else
                       ">= 0 and finite" if key in ("step", "exp_avg_sq")
                       or key.endswith("_scales") else "finite")
            raise ValueError(f"checkpoint state field {key!r} of {where} holds values that are "
                             f"not {allowed} (NaN or inf?); it would corrupt the parameters")


class AdamW(_QuantizedAdam):
    """AdamW (decoupled weight decay) with quantized first and second moments.

    Signature mirrors ``torch.optim.AdamW``; quantization knobs are keyword-only and given as
    (first state m, second state v) pairs or a single value for both:

    - ``bits``: bits per element: 2, 3, 4, 8 for quantizers, 16 for ``bf16``, 32 for ``none``.
    - ``quantizers``: ``none``, ``bf16``, ``linear``, ``linear-sr``, ``de``, ``de-sr``,
      ``log`` (SOLO; v only), ``log-unbiased`` (as ``log``, rounding unbiased in value; v
      only; :mod:`solo.log_unbiased`), ``rank1-linear`` (Li et al.; v only).
    - ``block_size``: elements per block sharing one fp32 scale (and alpha for ``log``); a
      tensor smaller than a block is one block of its own size (no padding).
    - ``quantile``: p of the log quantizer's per-block p-quantile (0 < p < 1).
    - ``min_quantizable_size``: tensors with fewer elements keep fp32 states.
    - ``seed``: seeds the optimizer's own stochastic-rounding generator; ``None`` means
      ``torch.initial_seed()`` at construction. Kept in every param group (one value for all),
      so checkpoints carry it; the global RNG is never used.
    - ``fused``: ``None`` (default) uses a fused step where one exists and falls back to the
      eager reference elsewhere: the fused C++ CPU step (:mod:`solo.fused`) for block-quantized
      states on CPU, the Triton step (:mod:`solo.triton_step`) for them on CUDA, torch's
      fused AdamW kernel for ``none``/``bf16`` states of fp32 CPU parameters;
      ``False`` always runs the reference; ``True`` raises where no fused step can run.
    - ``check_finite``: ``True`` (default) reads every gradient once before the step and raises
      ``FloatingPointError`` naming the parameter, with nothing modified, if one holds an
      inf/NaN. ``False`` skips that read (torch.optim's behaviour: a non-finite gradient then
      reaches the states; leave it to AMP's GradScaler or a finite-loss check). On a
      memory-bound CPU the read costs ~13-42% of a fp32 step; the presets with fp32/bf16
      states default to ``False``, the block-quantized ones to ``True``.
    - ``bf16_stochastic_round``: for bfloat16 parameters (no fp32 master copy), round the
      updated weight to bf16 stochastically (unbiased; :mod:`solo.bf16_sr`) instead of to
      nearest, which drops updates below half a bf16 ulp; draws from the optimizer's own
      generator (checkpoints stay exact). Such parameters take the reference step. No effect
      on fp32 parameters.

    Every knob is validated in the constructor, ``add_param_group``, ``load_state_dict`` and
    again at each ``step()``; ``bits``, ``quantizers``, ``block_size``,
    ``min_quantizable_size`` and ``seed`` cannot change once a group holds states.
    With both quantizers ``none`` it computes what ``torch.optim.AdamW`` computes.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 bits=(4, 2), quantizers=("de", "log"), block_size=128, quantile=0.1,
                 min_quantizable_size=0, seed=None, fused=None, check_finite=True,
                 bf16_stochastic_round=False):
        super().__init__(params, lr, betas, eps, weight_decay, bits=bits, quantizers=quantizers,
                         block_size=block_size, quantile=quantile,
                         min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
                         check_finite=check_finite, bf16_stochastic_round=bf16_stochastic_round)


class Adam(_QuantizedAdam):
    """Adam with L2 weight decay (``weight_decay * p`` added to the gradient, as
    ``torch.optim.Adam`` and the reference SOLO code's ``AdamQ`` do) and quantized states.

    The update rule, knobs and fused paths are :class:`AdamW`'s; only the weight decay differs.
    With both quantizers ``none`` it computes what ``torch.optim.Adam`` computes.
    """

    _l2 = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 bits=(4, 2), quantizers=("de", "log"), block_size=128, quantile=0.1,
                 min_quantizable_size=0, seed=None, fused=None, check_finite=True,
                 bf16_stochastic_round=False):
        super().__init__(params, lr, betas, eps, weight_decay, bits=bits, quantizers=quantizers,
                         block_size=block_size, quantile=quantile,
                         min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
                         check_finite=check_finite, bf16_stochastic_round=bf16_stochastic_round)


class AdaBelief(_QuantizedAdam):
    """AdaBelief (Zhuang et al. 2020) with decoupled weight decay and quantized states.

    The second state s is the EMA of (g - m)^2, unsigned like Adam's v; the update divides by
    sqrt(s / (1 - beta2^t)) + eps. ``eps_in_s`` (default True) also adds eps to s every step,
    as the AdaBelief paper (Alg. 2) and its official code do; the reference SOLO code
    (``solow`` 0.2.0, ``AdaBeliefQ``) does not, which the presets of the paper's AdaBelief rows
    follow (``eps_in_s=False``). At eps 1e-8 the two differ visibly. Other knobs as
    :class:`AdamW` (fused: the C++ CPU step or, on CUDA, the Triton step, for block-quantized
    states only).
    """

    _belief = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 bits=(4, 2), quantizers=("de", "log"), block_size=128, quantile=0.1,
                 min_quantizable_size=0, seed=None, fused=None, eps_in_s=True,
                 check_finite=True, bf16_stochastic_round=False):
        super().__init__(params, lr, betas, eps, weight_decay, bits=bits, quantizers=quantizers,
                         block_size=block_size, quantile=quantile,
                         min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
                         eps_in_s=eps_in_s, check_finite=check_finite,
                         bf16_stochastic_round=bf16_stochastic_round)
