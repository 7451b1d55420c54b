"""Adafactor (Shazeer & Stern 2018, arXiv 1804.04235) with low-bit states.

The second moment of a matrix is kept factored, as its row and column means (``row_var``,
``col_var``); of a vector or scalar, in full (``variance``). As in the reference SOLO code's
``AdafactorQ`` (``solow`` 0.2.0, itself built on the Adafactor of the pytorch-optimizer
package), those second-moment states are stored with the second quantizer (unsigned; ``log`` by
default) and the optional first moment ``exp_avg`` (``beta1`` not None) with the first (signed).
Whether a state is quantized is decided per state by its own size (``min_quantizable_size``),
as the reference does, so a small factor vector may stay fp32 while its matrix's would not.

The update is torch.optim.Adafactor's, op for op (with quantizers ``none`` it computes what
``torch.optim.Adafactor`` computes): relative step size rho_t = min(lr, t^-1/2), scaled by
max(eps2, RMS(p)); beta2_t = 1 - t^beta2_decay; the variance estimate clamped at eps1^2 before
the inverse square root; the update clipped to RMS <= d; decoupled weight decay p *= 1 - lr * wd.
The first moment, absent from torch's, follows the reference: an EMA of the scaled, clipped
update, which is then applied.

Against ``AdafactorQ`` given the same draws (tests/solo/test_adafactor.py), with ``lr=1e-2``
(its relative step) and no weight decay, the codes are the same and the parameters agree to
float rounding. It differs elsewhere: it adds 1e-30 to g^2 where torch clamps at eps1^2 (equal
for gradients above ~1e-7), decays weights by the scaled step instead of lr, shrinks a block to a
divisor of the state's size and keeps fp32 where the packing does not divide it (ours pads the
last block), and its quantized first moment does not run (torchao's state tensors lack the
in-place ``mul_`` it calls).

States are decoded, updated in fp32 and re-encoded per parameter (an eager step; no fused
kernel). Sharded (DTensor) parameters are refused: the factored means would need the whole row.
"""

from __future__ import annotations

import math

import torch

from . import states
from .base import _QuantizedAdam
from .bf16_sr import round_into_
from .codecs import Codec, make_codec
from .validation import check_group

__all__ = ["Adafactor"]

_REQUIRED = ("params", "lr", "beta2_decay", "eps", "d", "weight_decay", "beta1", "bits",
             "quantizers", "block_size", "quantile", "min_quantizable_size")


class Adafactor(_QuantizedAdam):
    """Adafactor with quantized states; signature mirrors ``torch.optim.Adafactor``.

    ``lr``: the relative step size's upper bound; ``beta2_decay``: beta2_t = 1 - t**beta2_decay
    (<= 0); ``eps``: (eps1, eps2), eps1 the floor of sqrt(variance) (None: the parameter dtype's
    machine epsilon), eps2 the floor of RMS(p) in the step size; ``d``: clipping threshold of
    the update's RMS (>= 1); ``weight_decay``: decoupled, p *= 1 - lr * weight_decay;
    ``maximize``. Keyword-only: ``beta1`` (None: no first moment, as torch's; else its EMA
    coefficient, as the reference's), and the quantization knobs of :class:`solo.AdamW`
    (``bits``, ``quantizers``, ``block_size``, ``quantile``, ``min_quantizable_size`` compared
    with each state's own size, ``seed``, ``check_finite``), the first of each pair for
    ``exp_avg``, the second for the variance states; ``bf16_stochastic_round`` as AdamW's.
    """

    _required_keys = _REQUIRED
    _new_keys = ("seed", "check_finite", "bf16_stochastic_round")
    # the eager step only (no fused kernel); the factored means would need a shard's whole row
    _fused_steps = False
    _shardable = False

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, maximize=False, beta1=None, bits=(4, 2),
                 quantizers=("de", "log"), block_size=128, quantile=0.1,
                 min_quantizable_size=0, seed=None, check_finite=True,
                 bf16_stochastic_round=False):
        super().__init__(params, dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
            maximize=maximize, beta1=beta1, bits=bits, quantizers=quantizers,
            block_size=block_size, quantile=quantile, min_quantizable_size=min_quantizable_size,
            seed=seed, check_finite=check_finite, bf16_stochastic_round=bf16_stochastic_round))

    def _check_knobs(self, group: dict, where: str) -> None:
        at = f"{where}: " if where else ""
        # the knobs shared with AdamW, by its checks (Adam's betas/eps/fused stand in)
        proxy = dict(group, betas=(0.0, 0.0), eps=0.0, fused=None)
        check_group(proxy, False, where)
        for key in ("bits", "quantizers", "block_size"):
            group[key] = proxy[key]
        if not _real(group["beta2_decay"]) or not group["beta2_decay"] <= 0:
            raise ValueError(f"{at}Invalid beta2_decay: {group['beta2_decay']!r}; "
                             f"allowed: a number <= 0")
        eps = group["eps"]
        if (not isinstance(eps, (tuple, list)) or len(eps) != 2
                or not (eps[0] is None or (_real(eps[0]) and eps[0] >= 0))
                or not (_real(eps[1]) and eps[1] >= 0)):
            raise ValueError(f"{at}Invalid eps: {eps!r}; allowed: (eps1 >= 0 or None, "
                             f"eps2 >= 0)")
        group["eps"] = tuple(eps)
        if not _real(group["d"]) or not group["d"] >= 1.0:
            raise ValueError(f"{at}Invalid d (clipping threshold): {group['d']!r}; "
                             f"allowed: a number >= 1")
        b1 = group["beta1"]
        if not (b1 is None or (_real(b1) and 0.0 <= b1 < 1.0)):
            raise ValueError(f"{at}Invalid beta1: {b1!r}; allowed: None or [0, 1)")
        if not isinstance(group["maximize"], bool):
            raise ValueError(f"{at}Invalid maximize: {group['maximize']!r}; allowed: True, False")

    # --- state format ---------------------------------------------------------------------
    @staticmethod
    def _shapes(group: dict, p: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """State name -> shape: factored (row, column) for >= 2 dims, else the full shape."""
        shape = tuple(p.shape)
        out = {}
        if len(shape) > 1:
            out["row_var"] = shape[:-1] + (1,)
            out["col_var"] = shape[:-2] + (1, shape[-1])
        else:
            out["variance"] = shape
        if group["beta1"] is not None:
            out["exp_avg"] = shape
        return out

    def state_codec(self, group: dict, name: str, shape) -> Codec:
        """The codec of state ``name`` (of ``shape``): ``exp_avg`` takes the first quantizer,
        the variance states the second; fp32 below ``min_quantizable_size`` elements."""
        if math.prod(shape) < group["min_quantizable_size"]:
            return make_codec("none", 32, signed=False)
        i = 0 if name == "exp_avg" else 1
        return make_codec(group["quantizers"][i], group["bits"][i], signed=(i == 0),
                          block_size=group["block_size"][i], quantile=group["quantile"])

    def state_spec(self, group: dict, p: torch.Tensor) -> dict:
        spec = {"step": ((), torch.float32)}
        for name, shape in self._shapes(group, p).items():
            for field, sd in self.state_codec(group, name, shape).spec(shape).items():
                spec[states.key(name, field)] = sd
        return spec

    def _init_state(self, group, p, state):
        state["step"] = torch.zeros((), dtype=torch.float32)
        for name, shape in self._shapes(group, p).items():
            self._init_one(group, p, state, name, shape)

    def _init_one(self, group, p, state, name, shape):
        for field, t in self.state_codec(group, name, shape).init(shape, p.device).items():
            state[states.key(name, field)] = t

    def _load(self, group, state, name, shape):
        codec = self.state_codec(group, name, shape)
        fields = self._fields(state, name, codec)
        return codec, fields, codec.decode(fields, shape)

    # --- step (solo.base's step(); every parameter takes this reference step) -------------
    def _update(self, group, p, state, kernel: bool = False):
        # torch.optim.Adafactor's single-tensor step, op for op, on decoded states
        grad = p.grad.float()
        if group["maximize"]:
            grad = -grad
        lr = group["lr"]
        lr = lr.item() if isinstance(lr, torch.Tensor) else lr
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = torch.finfo(p.dtype).eps
        p32 = p if p.dtype == torch.float32 else p.float()
        state["step"] += 1
        t = state["step"].item()
        one_minus_beta2_t = t ** group["beta2_decay"]
        rho_t = min(lr, 1 / (t**0.5))
        alpha = max(eps2, p32.norm(2).item() / (p.numel() ** 0.5)) * rho_t
        if group["weight_decay"] != 0:
            p32.mul_(1 - lr * group["weight_decay"])
        gen = self.generator(p.device)
        shapes = self._shapes(group, p)
        if grad.dim() > 1:
            cr, fr, row = self._load(group, state, "row_var", shapes["row_var"])
            cc, fc, col = self._load(group, state, "col_var", shapes["col_var"])
            row_mean = torch.linalg.vector_norm(grad, dim=-1, keepdim=True).square_()
            row.lerp_(row_mean.div_(grad.size(-1)), one_minus_beta2_t)
            col_mean = torch.linalg.vector_norm(grad, dim=-2, keepdim=True).square_()
            col.lerp_(col_mean.div_(grad.size(-2)), one_minus_beta2_t)
            var = row @ col
            var.div_(row.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            # the update used the fresh fp32 factors; only now are they requantized
            cr.encode(row, fr, gen)
            cc.encode(col, fc, gen)
        else:
            cv, fv, v = self._load(group, state, "variance", shapes["variance"])
            v.lerp_(grad * grad, one_minus_beta2_t)
            var = v.clone()
            cv.encode(v, fv, gen)
        update = var.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
        denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * group["d"]))
        if group["beta1"] is None:
            p32.add_(update, alpha=-alpha / denom)
        else:
            if "exp_avg" not in state and "exp_avg_codes" not in state:  # beta1 set later
                self._init_one(group, p, state, "exp_avg", shapes["exp_avg"])
            cm, fm, m = self._load(group, state, "exp_avg", shapes["exp_avg"])
            m.lerp_(update.mul_(alpha / denom), 1 - group["beta1"])
            p32.sub_(m)
            cm.encode(m, fm, gen)
        if self._rounds_bf16(group, p):
            round_into_(p, p32, gen)
        elif p32 is not p:
            p.copy_(p32)


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
