"""bf16 parameters without a master copy: stochastic rounding of the weight update."""

import copy

import pytest
import torch

import solo
from solo.bf16_sr import round_into_


def test_rounding_is_unbiased():
    x = torch.full((200_000,), 1.0 + 2**-10) * torch.tensor([1.0, -1.0]).repeat(100_000)
    out = torch.empty_like(x, dtype=torch.bfloat16)
    round_into_(out, x, torch.Generator().manual_seed(0))
    assert set(out.float().abs().unique().tolist()) == {1.0, 1.0 + 2**-7}
    # 1/8 of a bf16 ulp above 1: up with probability 1/8, for either sign
    torch.testing.assert_close(out.float().abs().mean(), x.abs().mean(), rtol=1e-4, atol=0)


def _bf16_run(sr, steps, lr=1e-4, opt=None, p=None, **kw):
    if p is None:
        p = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = solo.presets.solo_4_2bit([p], lr=lr, seed=3, bf16_stochastic_round=sr, **kw)
    for _ in range(steps):
        p.grad = torch.ones_like(p)
        opt.step()
    return p, opt


MAKERS = {"solo_4_2bit": solo.presets.solo_4_2bit, "adamw32": solo.presets.adamw32,
          "adafactor": solo.Adafactor}


@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_a_small_lr_moves_bf16_weights_on_average(maker):
    lr, steps = 1e-4, 50
    for sr in (False, True):
        p = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = MAKERS[maker]([p], lr=lr, seed=3, bf16_stochastic_round=sr)
        for _ in range(steps):
            p.grad = torch.ones_like(p)
            opt.step()
        moved = 1.0 - p.float().mean().item()
        if sr:  # each step moves a weight by ~lr (Adam's m/sqrt(v), Adafactor's RMS-1 step)
            assert moved == pytest.approx(lr * steps, rel=0.1)
        else:  # lr is under half a bf16 ulp at 1.0 (2^-9): nearest rounds every update away
            assert moved == 0.0


def test_checkpoint_resumes_bit_exactly():
    p, opt = _bf16_run(True, 3)
    saved_opt, saved_p = copy.deepcopy(opt.state_dict()), p.detach().clone()
    _bf16_run(True, 4, opt=opt, p=p)
    q = torch.nn.Parameter(saved_p.clone())
    resumed = solo.presets.solo_4_2bit([q], lr=1e-4, seed=99, bf16_stochastic_round=True)
    resumed.load_state_dict(saved_opt)
    _bf16_run(True, 4, opt=resumed, p=q)
    assert torch.equal(p, q)


def test_fp32_parameters_are_untouched_and_fused_true_refuses():
    ps = [torch.nn.Parameter(torch.ones(256)) for _ in range(2)]
    a = solo.presets.solo_4_2bit([ps[0]], lr=1e-3, seed=1)
    b = solo.presets.solo_4_2bit([ps[1]], lr=1e-3, seed=1, bf16_stochastic_round=True)
    for _ in range(3):
        for p, o in zip(ps, (a, b)):
            p.grad = torch.ones_like(p)
            o.step()
    assert torch.equal(ps[0], ps[1])
    p = torch.nn.Parameter(torch.ones(256, dtype=torch.bfloat16))
    p.grad = torch.ones_like(p)
    opt = solo.presets.solo_4_2bit([p], bf16_stochastic_round=True, fused=True)
    with pytest.raises(RuntimeError, match="bf16_stochastic_round"):
        opt.step()


def test_invalid_value_is_named():
    with pytest.raises(ValueError, match="bf16_stochastic_round"):
        solo.AdamW([torch.nn.Parameter(torch.ones(2))], bf16_stochastic_round=1)
