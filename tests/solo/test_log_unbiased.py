"""The ``log-unbiased`` quantizer (solo/log_unbiased.py): the reference's rule, unbiasedness,
and the fallback of the fused steps."""

import sys

import pytest
import torch
from reference import solow

import solo
from solo import fused, triton_step
from solo.codecs import make_codec


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_equal_the_reference_given_the_same_draws(bits):
    solow()
    cls = getattr(sys.modules["solow.quantizer"], f"UnbiasedQemaOptimState{bits}bit")
    torch.manual_seed(bits)
    # second-moment-like values spread over ~8 orders of magnitude, 512 blocks of 128
    x = torch.randn(512 * 128).mul(3).exp().mul(1e-6)
    ref = cls.zeros(x.shape, signed=False, block_size=128, quantile=0.1)
    sys.modules["solow.quantizer.utils"].adaq_generator = torch.Generator().manual_seed(5)
    ref.copy_(x)
    codec = make_codec("log-unbiased", bits, signed=False, block_size=128, quantile=0.1)
    fields = codec.init(x.shape, "cpu")
    codec.encode(x, fields, torch.Generator().manual_seed(5))
    assert torch.equal(fields["scales"], ref.scale)
    # alpha: the same quantile by another interpolation formula, within 1 ulp
    torch.testing.assert_close(fields["alphas"], ref.alpha, rtol=2e-7, atol=0)
    alpha = fields["alphas"].repeat_interleave(128)
    scale = fields["scales"].repeat_interleave(128)

    def codes(values):
        return torch.round(torch.log(values / scale) / torch.log(alpha))

    # measured: every code equal, for every bit width
    assert torch.equal(codes(codec.decode(fields, x.shape)), codes(ref.dequantize()))


# (bits, bound on log-unbiased's mean relative bias (~3 sampling sigmas), log's least bias);
# measured: 2 bits 0.0002 vs 0.122, 4 bits -0.0001 vs 0.0046
@pytest.mark.parametrize("bits,bound,log_bias", [(2, 0.005, 0.05), (4, 0.0005, 0.002)])
def test_rounding_is_unbiased_in_value_where_log_is_not(bits, bound, log_bias):
    torch.manual_seed(0)
    block = torch.rand(128).mul(4).neg().exp()  # one block, values in (e^-4, 1)
    reps = 4000
    x = block.repeat(reps)  # identical blocks: the same scale and alpha, independent draws
    bias = {}
    for name in ("log", "log-unbiased"):
        codec = make_codec(name, bits, signed=False, block_size=128, quantile=0.1)
        fields = codec.init(x.shape, "cpu")
        codec.encode(x, fields, torch.Generator().manual_seed(1))
        low = fields["alphas"][0] ** (2**bits - 1)  # smallest level; below it both clip
        mean = codec.decode(fields, x.shape).view(reps, 128).mean(0)
        inside = block >= low
        bias[name] = (mean[inside] / block[inside] - 1).mean().item()
    assert abs(bias["log-unbiased"]) < bound
    assert bias["log"] > log_bias  # log-domain rounding overestimates (Jensen)


def test_unsigned_only():
    with pytest.raises(ValueError, match="unsigned states only"):
        solo.AdamW([torch.nn.Parameter(torch.zeros(4))], quantizers=("log-unbiased", "log"))


def test_fused_steps_fall_back_to_the_reference(monkeypatch):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(512))
    twin = torch.nn.Parameter(p.detach().clone())
    kw = dict(lr=1e-2, quantizers=("de", "log-unbiased"), seed=3)
    opt, ref = solo.AdamW([p], **kw), solo.AdamW([twin], fused=False, **kw)
    group = opt.param_groups[0]
    cm, cv = opt.codecs(group, p)
    assert not fused.supports(cm, cv, p)
    monkeypatch.setattr(triton_step, "_on_cpu", True)  # the Triton step must refuse it too
    assert not triton_step.supports(cm, cv, p)
    monkeypatch.undo()
    for _ in range(3):
        p.grad = torch.randn(512)
        twin.grad = p.grad.clone()
        assert opt._path(group, p) == "reference"
        opt.step()
        ref.step()
    assert torch.equal(p, twin)
    with pytest.raises(RuntimeError, match="no fused"):
        solo.AdamW([p], fused=True, **kw).step()


def test_state_bytes_as_log():
    model = torch.nn.Linear(64, 64)
    kw = dict(bits=(4, 2), quantizers=("de", "log-unbiased"))
    est = solo.estimate_state_bytes(model, **kw)
    assert est == solo.estimate_state_bytes(model, bits=(4, 2), quantizers=("de", "log"))
    opt = solo.AdamW(model.parameters(), **kw)
    model(torch.randn(3, 64)).sum().backward()
    opt.step()
    assert solo.state_bytes(opt) == est
