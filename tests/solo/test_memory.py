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
