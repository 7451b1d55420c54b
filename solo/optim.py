"""AdamW and AdaBelief with quantized states (method.md section 2).

The update rule is written once (:func:`_update`); the state format is a pair of codecs (first
and second moment). Between steps each state lives only in its codec's fields, e.g.
``exp_avg_codes`` (packed uint8) + ``exp_avg_scales`` (fp32 per block), or ``exp_avg`` (fp32) for
unquantized states, so ``state_dict()`` is plain tensors and ``torch.load(weights_only=True)``
works. This eager per-tensor loop is the reference implementation.

Non-finite gradients: ``step()`` raises ``FloatingPointError`` naming the parameter before any
parameter or state is modified (so a caller may skip the batch and go on). Mixed-precision users
with a GradScaler never reach this: the scaler skips ``step()`` on inf/NaN gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import fused
from .codecs import Codec, make_codec

__all__ = ["AdamW", "AdaBelief"]

_QUANT_KEYS = ("bits", "quantizers", "block_size", "quantile", "min_quantizable_size")
_STATES = ("exp_avg", "exp_avg_sq")


def _pair(x, name: str) -> tuple:
    # any sequence (tuple, list, an OmegaConf ListConfig from a config) but a string
    if isinstance(x, Sequence) and not isinstance(x, str):
        if len(x) != 2:
            raise ValueError(f"Invalid {name}: {x!r}; expected one value or a pair "
                             f"(first state, second state)")
        return tuple(x)
    return (x, x)


class _QuantizedAdam(torch.optim.Optimizer):
    _belief = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 bits=(4, 2), quantizers=("de", "log"), block_size=128, quantile=0.1,
                 min_quantizable_size=0, seed=None, fused=None):
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
            if lr.item() < 0:
                raise ValueError(f"Invalid learning rate: {lr}")
        elif not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r}; expected (beta1, beta2)")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}; allowed: [0, 1)")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        bits, quantizers, block_size = (_pair(bits, "bits"), _pair(quantizers, "quantizers"),
                                        _pair(block_size, "block_size"))
        for bs in block_size:
            if not isinstance(bs, int) or bs <= 0:
                raise ValueError(f"Invalid block_size: {bs!r}; allowed: a positive int "
                                 f"(elements) or a pair of them")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"Invalid quantile: {quantile}; allowed: 0 < quantile < 1")
        if not isinstance(min_quantizable_size, int) or min_quantizable_size < 0:
            raise ValueError(f"Invalid min_quantizable_size: {min_quantizable_size!r}; "
                             f"allowed: an int >= 0 (elements)")
        # Build once to validate (bits, quantizer, sign) combinations early.
        for i in (0, 1):
            make_codec(quantizers[i], bits[i], signed=(i == 0), block_size=block_size[i],
                       quantile=quantile)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bits=bits, quantizers=quantizers, block_size=block_size,
                        quantile=quantile, min_quantizable_size=min_quantizable_size)
        super().__init__(params, defaults)
        if fused not in (None, True, False):
            raise ValueError(f"Invalid fused: {fused!r}; allowed: None (auto), True, False")
        self._seed = seed
        self._fused = fused
        self._generators: dict[str, torch.Generator] = {}

    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        param_group = {**param_group, "params": params}
        if len(set(map(id, params))) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for p in params:
            if isinstance(p, torch.Tensor) and p.is_complex():
                raise ValueError("complex parameters are not supported; "
                                 "use torch.view_as_real(param)")
        super().add_param_group(param_group)

    # --- state format ---------------------------------------------------------------------
    def codecs(self, group: dict, p: torch.Tensor) -> tuple[Codec, Codec]:
        """The (first, second) state codecs of parameter ``p`` in ``group``."""
        if p.numel() < group["min_quantizable_size"]:
            full = make_codec("none", 32, signed=False)
            return full, full
        return tuple(make_codec(group["quantizers"][i], group["bits"][i], signed=(i == 0),
                                block_size=group["block_size"][i], quantile=group["quantile"])
                     for i in (0, 1))

    def state_spec(self, group: dict, p: torch.Tensor) -> dict:
        """State key -> (shape, dtype) that ``p`` will hold (also for meta tensors)."""
        spec = {"step": ((), torch.float32)}
        for name, codec in zip(_STATES, self.codecs(group, p)):
            for field, sd in codec.spec(p.shape).items():
                spec[name if field == "value" else f"{name}_{field}"] = sd
        return spec

    @staticmethod
    def _fields(state: dict, name: str, codec: Codec) -> dict:
        if not codec.quantized:
            return {"value": state[name]}
        return {f: state[f"{name}_{f}"] for f in codec.spec(torch.Size([1]))}

    def _init_state(self, group, p, state):
        state["step"] = torch.zeros((), dtype=torch.float32)
        for name, codec in zip(_STATES, self.codecs(group, p)):
            for field, t in codec.init(p.shape, p.device).items():
                state[name if field == "value" else f"{name}_{field}"] = t

    def generator(self, device: torch.device) -> torch.Generator:
        """The optimizer's own SR generator for ``device`` (seeded from ``seed``)."""
        key = str(torch.device(device))
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self._seed if self._seed is not None else torch.initial_seed())
            self._generators[key] = g
        return self._generators[key]

    # --- step -------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                work.append((gi, pi, group, p))
        bad = self._nonfinite(work)
        if bad:
            raise FloatingPointError(
                f"non-finite gradient in param_groups[{bad[0][0]}]['params'][{bad[0][1]}] "
                f"({len(bad)} tensor(s) in all); nothing was updated")
        for _, _, group, p in work:
            state = self.state[p]
            if not state:
                self._init_state(group, p, state)
            self._update(group, p, state)
        return loss

    @staticmethod
    def _nonfinite(work) -> list[tuple[int, int]]:
        """(group, index) of gradients with an inf/NaN. A sum is non-finite whenever an element
        is, and costs one read (``isfinite().all()`` costs several): only tensors whose sum is
        not finite (or overflowed) get the exact check."""
        if not work:
            return []
        sums = [p.grad.sum(dtype=torch.float32) for _, _, _, p in work]
        dev = sums[0].device
        finite = torch.isfinite(torch.stack([s.to(dev) for s in sums])).tolist()
        return [(gi, pi) for (gi, pi, _, p), ok in zip(work, finite)
                if not ok and not torch.isfinite(p.grad).all()]

    def _update(self, group, p, state):
        codec_m, codec_v = self.codecs(group, p)
        fm, fv = self._fields(state, "exp_avg", codec_m), self._fields(state, "exp_avg_sq", codec_v)
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        lr = lr.item() if isinstance(lr, torch.Tensor) else lr
        state["step"] += 1
        step = state["step"].item()
        gen = self.generator(p.device)

        if self._fused is not False and fused.supports(codec_m, codec_v, p):
            if fused.extension() is not None:
                # One 63-bit key per tensor per step from the optimizer's generator: the
                # kernel's SR draws are a function of (key, element), so resuming is exact.
                key = (int(torch.randint(0, 2**63 - 1, (1,), generator=gen))
                       if codec_v.stochastic else 0)
                fused.step(p, p.grad, codec_m, fm, codec_v, fv, lr=lr, beta1=beta1,
                           beta2=beta2, eps=eps, weight_decay=wd, bc1=1 - beta1**step,
                           bc2_sqrt=math.sqrt(1 - beta2**step), belief=self._belief, key=key)
                return
            if self._fused:
                raise RuntimeError(f"fused=True but the fused CPU step is unavailable: "
                                   f"{fused.unavailable()}")
        elif self._fused:
            raise RuntimeError("fused=True but this parameter's state format has no fused "
                               "kernel (see solo.fused.supports); use fused=None")
        g = p.grad.float()
        m = codec_m.decode(fm, p.shape)
        v = codec_v.decode(fv, p.shape)
        p32 = p if p.dtype == torch.float32 else p.float()
        if wd != 0:
            p32.mul_(1 - lr * wd)
        m.lerp_(g, 1 - beta1)
        if self._belief:
            # AdaBelief (Zhuang et al. 2020, arXiv 2010.07468, Alg. 2): EMA of (g - m)^2 + eps.
            d = g - m
            v.mul_(beta2).addcmul_(d, d, value=1 - beta2).add_(eps)
        else:
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p32.addcdiv_(m, denom, value=-lr / bc1)
        if p32 is not p:
            p.copy_(p32)
        # The update used the fresh fp32 m and v; only now are they requantized.
        codec_m.encode(m, fm, gen)
        codec_v.encode(v, fv, gen)

    def __getstate__(self):
        state = super().__getstate__()
        state["_seed"] = self._seed
        state["_generator_states"] = {k: g.get_state() for k, g in self._generators.items()}
        return state

    def __setstate__(self, state):
        gen_states = state.pop("_generator_states", {})
        state.setdefault("_seed", None)
        super().__setstate__(state)
        self._generators = {}
        for key, gs in gen_states.items():
            self.generator(torch.device(key)).set_state(gs)

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["sr_generators"] = {k: g.get_state() for k, g in self._generators.items()}
        return sd

    def load_state_dict(self, state_dict):
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)} (field: param_groups)")
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            for key in _QUANT_KEYS:
                if key in saved and _norm(saved[key]) != _norm(group[key]):
                    raise ValueError(f"checkpoint mismatch in param_groups[{gi}] field {key!r}: "
                                     f"saved {saved[key]!r}, optimizer has {group[key]!r}")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"checkpoint mismatch in param_groups[{gi}] field 'params': "
                                 f"saved {len(saved['params'])} tensors, optimizer has "
                                 f"{len(group['params'])}")
        # torch.optim casts every floating state tensor to the param dtype; keep ours as saved
        # (fp32 scales stay fp32 with bf16 params, uint8 codes stay uint8).
        originals = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for pid, p in zip(saved["params"], group["params"]):
                if pid in state_dict["state"]:
                    originals[p] = (state_dict["state"][pid], group)
        for p, (st, group) in originals.items():
            spec = self.state_spec(group, p)
            for key, (shape, dtype) in spec.items():
                if key not in st:
                    raise ValueError(f"checkpoint mismatch: state field {key!r} missing for a "
                                     f"parameter of shape {tuple(p.shape)}")
                if tuple(st[key].shape) != tuple(shape) or st[key].dtype != dtype:
                    raise ValueError(
                        f"checkpoint mismatch in state field {key!r} for a parameter of shape "
                        f"{tuple(p.shape)}: saved {tuple(st[key].shape)} {st[key].dtype}, "
                        f"expected {tuple(shape)} {dtype}")
        super().load_state_dict(state_dict)
        for p, (st, _) in originals.items():
            self.state[p] = {k: (v.to(p.device).clone() if isinstance(v, torch.Tensor) else v)
                             for k, v in st.items()}
            self.state[p]["step"] = self.state[p]["step"].cpu()
        for key, gstate in state_dict.get("sr_generators", {}).items():
            self.generator(torch.device(key)).set_state(gstate)


def _norm(x):
    return tuple(_norm(v) for v in x) if isinstance(x, (list, tuple)) else x


class AdamW(_QuantizedAdam):
    """AdamW (decoupled weight decay) with quantized first and second moments.

    Signature mirrors ``torch.optim.AdamW``; quantization knobs are keyword-only and given as
    (first state m, second state v) pairs or a single value for both:

    - ``bits``: bits per element: 2, 3, 4, 8 for quantizers, 16 for ``bf16``, 32 for ``none``.
    - ``quantizers``: ``none``, ``bf16``, ``linear``, ``linear-sr``, ``de``, ``de-sr``,
      ``log`` (SOLO; v only), ``rank1-linear`` (Li et al.; v only).
    - ``block_size``: elements per block sharing one fp32 scale (and alpha for ``log``).
    - ``quantile``: p of the log quantizer's per-block p-quantile (0 < p < 1).
    - ``min_quantizable_size``: tensors with fewer elements keep fp32 states.
    - ``seed``: seeds the optimizer's own stochastic-rounding generator (default
      ``torch.initial_seed()``); the global RNG is never used.
    - ``fused``: ``None`` (default) uses the fused C++ CPU step (:mod:`solo.fused`) where it
      supports the state format and falls back to the eager reference elsewhere; ``False``
      always runs the reference; ``True`` raises where the fused step cannot run.

    With both quantizers ``none`` it computes exactly what ``torch.optim.AdamW`` computes.
    """


class AdaBelief(_QuantizedAdam):
    """AdaBelief (Zhuang et al. 2020) with decoupled weight decay and quantized states.

    The second state is the EMA of (g - m)^2 (+ eps), unsigned like Adam's v; same knobs as
    :class:`AdamW`.
    """

    _belief = True
