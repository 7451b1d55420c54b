"""solo.Adam (L2 weight decay in the gradient) against torch.optim.Adam and the reference's
AdamQ."""

import copy

import pytest
import torch
from reference import draws_from, solow

import solo

SHAPES = [(64, 128), (256,), (100,), (37, 29)]


def _params(seed=0, shapes=SHAPES):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]


def _grads(ps, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 0.01


@pytest.mark.parametrize("fused", [None, False])
def test_unquantized_adam_computes_torch_adam(fused):
    ps, ref = _params(), _params()
    opt = solo.Adam(ps, lr=1e-2, weight_decay=0.1, bits=32, quantizers="none", fused=fused)
    torch_opt = torch.optim.Adam(ref, lr=1e-2, weight_decay=0.1)
    for step in range(5):
        _grads(ps, step)
        _grads(ref, step)
        opt.step()
        torch_opt.step()
    for p, q in zip(ps, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # and it is not AdamW: decoupled decay moves the parameters elsewhere
    aw = _params()
    adamw = solo.AdamW(aw, lr=1e-2, weight_decay=0.1, bits=32, quantizers="none")
    for step in range(5):
        _grads(aw, step)
        adamw.step()
    assert not torch.allclose(aw[0], ps[0], rtol=1e-4, atol=0)


def test_fused_step_equals_the_reference_step():
    # nearest-rounding states: no draws; the fused C++ step agrees with the reference to the
    # last bits (measured: 3e-8 after 4 steps, as for AdamW), far from AdamW's decay
    ps, twin, aw = _params(), _params(), _params()
    kw = dict(lr=1e-2, weight_decay=0.1, bits=4, quantizers=("de", "linear"))
    opt, ref = solo.Adam(ps, **kw), solo.Adam(twin, fused=False, **kw)
    adamw = solo.AdamW(aw, **kw)
    for step in range(4):
        for x in (ps, twin, aw):
            _grads(x, step)
        assert opt._path(opt.param_groups[0], ps[0]) == "kernel"
        opt.step()
        ref.step()
        adamw.step()
    for p, q, w in zip(ps, twin, aw):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        assert (p - w).abs().max() > 1e-4


def test_adam_equals_the_reference_adamq_given_the_same_draws():
    solow_mod = solow()
    # whole blocks only: on other sizes the reference shrinks the block to a divisor of the
    # size (1073 elements: blocks of 37) or keeps fp32 states where the codes do not fill
    # whole bytes, where ours pads the last block
    shapes = SHAPES[:3]
    ps, ref_ps = _params(shapes=shapes), _params(shapes=shapes)
    kw = dict(lr=1e-2, betas=(0.8, 0.999), weight_decay=0.1)
    opt = solo.Adam(ps, bits=(4, 2), quantizers=("de", "log"), block_size=128,
                    min_quantizable_size=128, fused=False, seed=7, **kw)
    ref = solow_mod.AdamQ(ref_ps, bits=(4, 2), quantizers=("de", "qema"), block_sizes=(128, 128),
                          quantile=0.1, min_quantizable_tensor_size=128, **kw)
    draws_from(opt.generator(torch.device("cpu")))
    group = opt.param_groups[0]
    for step in range(3):
        _grads(ps, step)
        _grads(ref_ps, step)
        opt.step()
        ref.step()
        quantized = 0
        for p, q in zip(ps, ref_ps):
            codec_m, codec_v = opt.codecs(group, p)
            st, rst = opt.state[p], ref.state[q]
            m = codec_m.decode(opt._fields(st, "exp_avg", codec_m), p.shape)
            v = codec_v.decode(opt._fields(st, "exp_avg_sq", codec_v), p.shape)
            rm, rv = (x.dequantize() if hasattr(x, "dequantize") else x
                      for x in (rst["exp_avg"], rst["exp_avg_sq"]))
            quantized += codec_v.quantized
            # the same codes: the decoded states agree to float rounding (another code would
            # differ by a whole level: >= 5% for 4-bit DE m, a factor alpha for 2-bit log v)
            torch.testing.assert_close(m, rm, rtol=1e-5, atol=1e-12)
            torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-20)
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert quantized == 2  # (64, 128) and (256,) quantized; the smaller ones fp32 in both


def test_state_dict_roundtrip_resumes_exactly():
    ps = _params()
    opt = solo.Adam(ps, lr=1e-2, weight_decay=0.1, seed=1)
    for step in range(2):
        _grads(ps, step)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    twin = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    resumed = solo.Adam(twin, lr=1e-2, weight_decay=0.1, seed=1)
    resumed.load_state_dict(saved)
    for step in range(2, 4):
        _grads(ps, step)
        _grads(twin, step)
        opt.step()
        resumed.step()
    for p, q in zip(ps, twin):
        assert torch.equal(p, q)
