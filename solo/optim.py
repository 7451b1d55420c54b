"""AdamW, Adam and AdaBelief with quantized states: SOLO (Xu et al., arXiv 2505.00347) and the
low-bit optimizers it compares with (Li et al., arXiv 2309.01507; docs/method.md section 2).

The update rule is written once (:mod:`solo.update`); the state format is a pair of codecs (first
and second moment). Between steps each state lives only in its codec's fields, e.g.
``exp_avg_codes`` (packed uint8) + ``exp_avg_scales`` (fp32 per block), or ``exp_avg`` (fp32) for
unquantized states (:mod:`solo.states`), so ``state_dict()`` is plain tensors and
``torch.load(weights_only=True)`` works (:mod:`solo.checkpoint`). The eager per-tensor loop is
the reference implementation; :func:`solo.dispatch.choose` picks, per parameter, the step that
runs (the reference, a fused kernel or torch's), and ``kernels()`` reports it.

Sharded (FSDP2, DTensor) parameters step their local shard with per-shard blocks and SR
generators, and checkpoint per rank: see :mod:`solo.distributed`.

Non-finite gradients: ``step()`` raises ``FloatingPointError`` naming the parameter before any
parameter or state is modified (so a caller may skip the batch and go on). Mixed-precision users
with a GradScaler never reach this: the scaler skips ``step()`` on inf/NaN gradients. A group
with ``check_finite=False`` skips this read of every gradient (torch.optim's behaviour; the
default of the fp32/bf16-state presets, see :mod:`solo.presets`).
"""

from __future__ import annotations

from .base import _QuantizedAdam

__all__ = ["AdamW", "Adam", "AdaBelief"]


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
        # the base by name, not super(): Adam's __init__ is this function
        _QuantizedAdam.__init__(self, params, dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bits=bits,
            quantizers=quantizers, block_size=block_size, quantile=quantile,
            min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
            check_finite=check_finite, bf16_stochastic_round=bf16_stochastic_round))


class Adam(_QuantizedAdam):
    """Adam with L2 weight decay (``weight_decay * p`` added to the gradient, as
    ``torch.optim.Adam`` and the reference SOLO code's ``AdamQ`` do) and quantized states.

    The update rule, knobs and fused paths are :class:`AdamW`'s; only the weight decay differs.
    With both quantizers ``none`` it computes what ``torch.optim.Adam`` computes.
    """

    _l2 = True
    # AdamW's signature and knobs
    __init__ = AdamW.__init__


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
        super().__init__(params, dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bits=bits,
            quantizers=quantizers, block_size=block_size, quantile=quantile,
            min_quantizable_size=min_quantizable_size, seed=seed, fused=fused,
            eps_in_s=eps_in_s, check_finite=check_finite,
            bf16_stochastic_round=bf16_stochastic_round))
