"""solo.Adafactor against torch.optim.Adafactor (quantizers off) and the reference's AdafactorQ
(same draws)."""

import copy

import pytest
import torch
from reference import draws_from, solow

import solo

SHAPES = [(24, 40), (3, 8, 16), (50,), ()]


def _params(shapes=SHAPES, seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]


def _grads(ps, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 0.01


@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.1, maximize=True),
                                dict(lr=0.5, eps=(1e-3, 1e-2), d=2.0, beta2_decay=-0.5)],
                         ids=["defaults", "wd-maximize", "knobs"])
def test_unquantized_adafactor_computes_torch_adafactor(kw):
    ps, ref = _params(), _params()
    opt = solo.Adafactor(ps, bits=32, quantizers="none", **kw)
    torch_opt = torch.optim.Adafactor(ref, foreach=False, **kw)
    for step in range(6):
        _grads(ps, step)
        _grads(ref, step)
        opt.step()
        torch_opt.step()
    for p, q in zip(ps, ref):
        assert torch.equal(p, q)
    for key in ("row_var", "col_var"):
        assert torch.equal(opt.state[ps[0]][key], torch_opt.state[ref[0]][key])


def _reference_states(rst):
    out = {}
    for ours, theirs in (("row_var", "exp_avg_sq_row"), ("col_var", "exp_avg_sq_col"),
                         ("variance", "exp_avg_sq"), ("exp_avg", "exp_avg")):
        if theirs in rst:
            x = rst[theirs]
            out[ours] = x.dequantize() if hasattr(x, "dequantize") else x
    return out


@pytest.mark.parametrize("beta1,quantizers", [(None, ("de", "log")),
                                              (0.9, ("none", "log"))])
def test_adafactor_equals_the_reference_adafactorq_given_the_same_draws(beta1, quantizers):
    ref_mod = solow()
    # whole blocks of 128 in every quantized state (the reference shrinks blocks elsewhere)
    shapes = [(256, 384), (512,), (64, 32)]
    ps, ref_ps = _params(shapes), _params(shapes)
    opt = solo.Adafactor(ps, lr=1e-2, beta1=beta1, bits=(32 if beta1 else 4, 2),
                         quantizers=quantizers, min_quantizable_size=128, seed=5)
    ref = ref_mod.AdafactorQ(ref_ps, beta1=beta1, bits=(32 if beta1 else 4, 2),
                             quantizers=(quantizers[0], "qema"), min_quantizable_tensor_size=128)
    draws_from(opt.generator(torch.device("cpu")))
    group = opt.param_groups[0]
    for step in range(3):
        _grads(ps, step)
        _grads(ref_ps, step)
        opt.step()
        ref.step()
        quantized = set()
        for p, q in zip(ps, ref_ps):
            theirs = _reference_states(ref.state[q])
            for name, shape in opt._shapes(group, p).items():
                codec, _, ours = opt._load(group, opt.state[p], name, shape)
                if codec.quantized:
                    quantized.add((tuple(p.shape), name))
                # the same codes: a different one would differ by a factor alpha. m (fp32
                # here, ~1e-4) is the reference's mul_/add_ where ours is lerp_: last bits, and
                # more relative error where its terms cancel
                torch.testing.assert_close(ours.reshape(-1), theirs[name].reshape(-1),
                                           rtol=1e-5, atol=1e-9 if name == "exp_avg" else 1e-20)
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-8)
        # the (64, 32) factors (64, 32 elements) stay fp32 in both
        assert quantized == {((256, 384), "row_var"), ((256, 384), "col_var"),
                             ((512,), "variance")}


def test_quantized_states_train_and_resume_exactly():
    ps = _params()
    kw = dict(beta1=0.9, bits=(4, 2), quantizers=("de", "log"), seed=1)
    opt = solo.Adafactor(ps, **kw)
    for step in range(3):
        _grads(ps, step)
        opt.step()
    assert "row_var_codes" in opt.state[ps[0]] and "exp_avg_codes" in opt.state[ps[0]]
    saved = copy.deepcopy(opt.state_dict())
    twin = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    resumed = solo.Adafactor(twin, **kw)
    resumed.load_state_dict(saved)
    for step in range(3, 6):
        _grads(ps, step)
        _grads(twin, step)
        opt.step()
        resumed.step()
    for p, q in zip(ps, twin):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="quantizers"):
        solo.Adafactor(twin, **{**kw, "quantizers": ("de", "linear")}).load_state_dict(saved)


def test_state_bytes_are_estimated():
    model = torch.nn.Sequential(torch.nn.Linear(256, 384), torch.nn.LayerNorm(384))
    kw = dict(bits=(4, 2), quantizers=("de", "log"), beta1=0.9)
    est = solo.estimate_state_bytes(model, optimizer=solo.Adafactor, **kw)
    opt = solo.Adafactor(model.parameters(), **kw)
    model(torch.randn(2, 256)).sum().backward()
    opt.step()
    assert solo.state_bytes(opt) == est
    # factored 2-bit second moment: far below a 2-bit full one (~0.25 byte per element)
    assert est["total"] < 0.6 * 256 * 384


@pytest.mark.parametrize("kw,match", [(dict(beta2_decay=0.5), "beta2_decay"),
                                      (dict(d=0.5), "clipping threshold"),
                                      (dict(eps=(None,)), "eps"),
                                      (dict(beta1=1.0), "beta1"),
                                      (dict(quantizers=("log", "log")), "unsigned")])
def test_invalid_knobs_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        solo.Adafactor(_params(), **kw)
