import math

import pytest
import torch
from solo_helpers import small_model, train_steps

import solo
from solo.packing import packed_numel
from solo.presets import PRESETS

# bits per element the preset name promises for (m, v), and whether v stores alphas
PROMISED = {
    "adamw32": (32, 32, False), "adamw_bf16": (16, 16, False), "adamw8bit": (8, 8, False),
    "adamw4bit": (4, 4, False), "adamw2bit": (2, 2, False), "solo_4_2bit": (4, 2, True),
    "solo_3bit": (3, 3, True), "solo_2bit": (2, 2, True), "adabelief32": (32, 32, False),
    "adabelief_solo_4_2bit": (4, 2, True),
}


def _expected(shape, bits, alphas, block=128):
    n = math.prod(shape)
    if bits >= 16:
        return n * bits // 8
    nb = max(1, -(-n // block))
    return packed_numel(n, bits) + 4 * nb * (2 if alphas else 1)


@pytest.mark.parametrize("name", sorted(PROMISED))
def test_state_bytes_equal_the_bits(name):
    m = small_model()
    opt = PRESETS[name](m.parameters(), seed=0)
    train_steps(m, opt, 1)
    bm, bv, alphas = PROMISED[name]
    shapes = [p.shape for p in m.parameters()]
    want = sum(_expected(s, bm, False) + _expected(s, bv, alphas) for s in shapes)
    got = solo.state_bytes(opt)
    steps = 4 * len(shapes)  # fp32 step counters
    assert got["total"] == want + steps
    assert got["total"] == got["quantized"] + got["full_precision"]
    if bm < 16:
        assert got["quantized"] == want and got["full_precision"] == steps
    assert solo.estimate_state_bytes(m, preset=name) == got


def test_rank1_preset_memory():
    m = small_model()
    opt = PRESETS["adamw4bit_rank1"](m.parameters())
    train_steps(m, opt, 1)
    want_q = want_f = 0
    for p in m.parameters():
        if p.numel() < 4097:  # Li et al.: tensors of at most 4096 elements stay fp32
            want_f += 8 * p.numel()
        else:
            scales_v = 4 * (sum(p.shape) if p.dim() > 1 else -(-p.numel() // 128))
            want_q += _expected(p.shape, 4, False) + packed_numel(p.numel(), 4) + scales_v
    got = solo.state_bytes(opt)
    assert got["quantized"] == want_q
    assert got["full_precision"] == want_f + 4 * len(list(m.parameters()))


def test_min_quantizable_counted_full_precision():
    p, q = torch.nn.Parameter(torch.randn(1000)), torch.nn.Parameter(torch.randn(10))
    opt = solo.AdamW([p, q], min_quantizable_size=100)
    p.grad, q.grad = torch.randn(1000), torch.randn(10)
    opt.step()
    got = solo.state_bytes(opt)
    assert got["full_precision"] == 2 * 4 * 10 + 2 * 4
    assert got["quantized"] == _expected((1000,), 4, False) + _expected((1000,), 2, True)


def test_estimate_on_meta_device_allocates_nothing():
    with torch.device("meta"):
        big = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.Linear(4096, 11008))
    est = solo.estimate_state_bytes(big, preset="solo_4_2bit")
    n = sum(p.numel() for p in big.parameters())
    # 4.25 bits (m: codes + scale/128) + 2.5 bits (v: codes + scale + alpha per 128)
    assert est["quantized"] == pytest.approx(n * (4.25 + 2.5) / 8, rel=1e-3)
    assert est["full_precision"] == 4 * 4


def test_state_bytes_torch_and_peers():
    m = small_model()
    opt = torch.optim.AdamW(m.parameters())
    train_steps(m, opt, 1)
    n = sum(p.numel() for p in m.parameters())
    got = solo.state_bytes(opt)
    assert got["quantized"] == 0 and got["full_precision"] == 8 * n + 4 * len(opt.state)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("quantizers,bits,alphas", [
    (("de", "log"), (4, 2), True), (("de", "linear"), (4, 4), False),
    (("de", "linear"), (8, 8), False), (("linear", "log"), (3, 3), True),
])
def test_a_block_never_exceeds_its_tensor(quantizers, bits, alphas, fused):
    """block_size=2**40 on small tensors: one block of the tensor's own size (it used to pad
    to a whole block: 2**31-1 allocated ~20 GB). State memory is the bits plus one scale (and
    alpha) per tensor, measured and estimated alike; the step runs and stays finite."""
    m = small_model()
    opt = solo.AdamW(m.parameters(), lr=1e-3, bits=bits, quantizers=quantizers,
                     block_size=2**40, fused=fused)
    train_steps(m, opt, 3)
    shapes = [p.shape for p in m.parameters()]
    want = sum(_expected(s, bits[0], False, block=2**40) + _expected(s, bits[1], alphas,
                                                                    block=2**40)
               for s in shapes)
    got = solo.state_bytes(opt)
    assert got["quantized"] == want
    assert solo.estimate_state_bytes(m, bits=bits, quantizers=quantizers,
                                     block_size=2**40) == got
    for p in m.parameters():
        assert opt.state[p]["exp_avg_scales"].numel() == 1
        assert torch.isfinite(p).all()


def test_clamped_block_equals_a_block_of_the_tensor_size():
    """Clamping changes nothing but memory: block_size=2**40 computes what block_size=n does
    for a tensor of n elements (same draws, same codes)."""
    runs = []
    for block in (2**40, 1000):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 1000))
        opt = solo.AdamW([p], block_size=block, seed=0, fused=False)
        for i in range(3):
            p.grad = torch.sin(torch.arange(1000.0) * (i + 1))
            opt.step()
        runs.append((p.detach().clone(), opt.state[p]))
    (pa, sa), (pb, sb) = runs
    assert torch.equal(pa, pb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_state_bytes_counts_every_meta_tensor():
    """Meta tensors all have data_ptr 0: each counts by its size (not once for all), so a
    stepped meta model reports what estimate_state_bytes predicts."""
    ps = [torch.nn.Parameter(torch.empty(3000, device="meta")) for _ in range(3)]
    opt = PRESETS["solo_4_2bit"](ps)
    for p in ps:
        p.grad = torch.empty_like(p)
    opt.step()
    est = solo.estimate_state_bytes(torch.nn.ParameterList(ps), preset="solo_4_2bit")
    assert est["total"] == 7626
    assert solo.state_bytes(opt) == est


def test_estimate_names_the_valid_presets():
    with pytest.raises(ValueError, match="unknown preset 'solo_5bit'; valid presets: adamw32, "):
        solo.estimate_state_bytes(small_model(), preset="solo_5bit")
    with pytest.raises(ValueError, match="solo_4_2bit"):
        solo.presets.default_beta1("solo_5bit")
