import pytest
import torch

import solo
from solo.codecs import block_quantile

BLOCK_QUANTIZERS = [(q, b) for q in ("de", "linear", "de-sr", "linear-sr") for b in (2, 3, 4, 8)]


def _x(n, signed, seed=0):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return x if signed else x.abs()


@pytest.mark.parametrize("quantizer,bits", BLOCK_QUANTIZERS)
@pytest.mark.parametrize("signed", [True, False])
def test_error_within_gap(quantizer, bits, signed):
    x = _x(1000, signed)
    q = solo.quantize(x, bits=bits, quantizer=quantizer, signed=signed, block_size=128,
                      generator=torch.Generator().manual_seed(1))
    y = q.dequantize()
    levels = q.codec.levels
    gap = levels.diff().max().item()
    scales = q.fields["scales"].repeat_interleave(128)[:1000]
    # values beyond the extreme levels (signed DE has no -1; zero-free linear no 0) clamp there
    edge = max(levels[0].item() - (-1 if signed else 0), 1 - levels[-1].item())
    budget = max(gap if quantizer.endswith("-sr") else gap / 2, edge) * scales
    assert ((y - x).abs() <= budget + 1e-6).all()


def test_partial_last_block_keeps_block_size():
    x = torch.arange(1, 301, dtype=torch.float32)
    q = solo.quantize(x, bits=8, quantizer="de", signed=False, block_size=128)
    # 128 + 128 + 44: three scales, each the max of its own block
    assert q.fields["scales"].tolist() == [128.0, 256.0, 300.0]
    assert q.dequantize().shape == x.shape


def test_whole_tensor_one_block():
    x = _x(1000, False)
    q = solo.quantize(x, bits=4, quantizer="linear", block_size=x.numel())
    assert q.fields["scales"].numel() == 1
    assert q.nbytes == 500 + 4


def test_nbytes_and_shape():
    x = torch.rand(3, 50)
    q = solo.quantize(x, bits=2, quantizer="log", block_size=64)
    assert q.codes.numel() == 38 and q.nbytes == 38 + 3 * 4 + 3 * 4
    assert q.dequantize().shape == (3, 50)
    assert "log" in repr(q)


@pytest.mark.parametrize("quantizer,bits", [("de-sr", 2), ("linear-sr", 3), ("log", 2), ("log", 4)])
def test_sr_unbiased(quantizer, bits):
    signed = quantizer != "log"
    x = _x(256, signed, seed=3)
    g = torch.Generator().manual_seed(0)
    draws = 400
    ys = torch.stack([solo.quantize(x, bits=bits, quantizer=quantizer, signed=signed,
                                    block_size=256, generator=g).dequantize()
                      for _ in range(draws)])
    q = solo.quantize(x, bits=bits, quantizer=quantizer, signed=signed, block_size=256)
    scale = q.fields["scales"].item()
    if quantizer == "log":
        # unbiased in the log domain, between the smallest level (x_p) and the max
        lo = q.fields["alphas"].item() ** (2**bits - 1) * scale
        inside = x >= lo
        ys, target = ys.log(), x.log()
        gap = -torch.log(torch.tensor(q.fields["alphas"].item())).item()
    else:
        # unbiased where x lies between two levels (no clamping at the range ends)
        lo, hi = q.codec.levels[0].item() * scale, q.codec.levels[-1].item() * scale
        inside = (x >= lo) & (x <= hi)
        target = x
        gap = q.codec.levels.diff().max().item() * scale
    # a draw between two levels has std <= gap/2: bound per element and for the average bias
    err = (ys.mean(0) - target)[inside]
    sd = gap / 2 / draws**0.5
    assert inside.sum() > 100
    assert err.abs().max() < 5 * sd
    assert err.mean().abs() < 4 * sd / inside.sum() ** 0.5


def test_sr_uses_given_generator_only():
    x = torch.rand(1000)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = solo.quantize(x, bits=2, quantizer="log", generator=torch.Generator().manual_seed(7))
    b = solo.quantize(x, bits=2, quantizer="log", generator=torch.Generator().manual_seed(7))
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a.codes, b.codes)


def test_log_worked_example():
    x = torch.tensor([0.06, 0.08, 0.21, 0.22, 0.29, 0.54, 0.54, 0.58, 0.77, 0.90, 0.91])
    q = solo.quantize(x, bits=2, quantizer="log", block_size=x.numel(),
                      generator=torch.Generator().manual_seed(0))
    assert q.fields["scales"].item() == pytest.approx(0.91)
    assert q.fields["alphas"].item() == pytest.approx(0.4446, abs=1e-4)
    y = q.dequantize()
    # every value is one of the four levels alpha^k * Delta, and the extremes are exact
    levels = 0.4446 ** torch.arange(4.0) * 0.91
    assert ((y[:, None] - levels[None]).abs().min(dim=1).values < 1e-3).all()
    assert y[0].item() == pytest.approx(0.08, abs=1e-3) and y[-1].item() == pytest.approx(0.91)
    # values between two levels land on one of the two neighbours (SR in the log domain)
    assert min(abs(y[5].item() - 0.40457), abs(y[5].item() - 0.91)) < 1e-3


def test_quantile_matches_torch_quantile():
    x = torch.rand(37, 128)
    for p in (0.01, 0.1, 0.5, 0.9):
        assert torch.allclose(block_quantile(x, p), torch.quantile(x, p, dim=1))
    # a shorter last block uses its own length
    q = block_quantile(x, 0.1, lengths=50)
    assert q[-1] == pytest.approx(torch.quantile(x[-1, :50], 0.1).item())


@pytest.mark.parametrize("case", ["zeros", "constant", "outlier", "quantile_zero", "tiny"])
def test_log_blocks_stay_finite(case):
    x = {"zeros": torch.zeros(256), "constant": torch.full((256,), 3.0),
         "outlier": torch.cat([torch.full((255,), 1e-6), torch.tensor([1e6])]),
         "quantile_zero": torch.cat([torch.zeros(200), torch.rand(56)]),
         "tiny": torch.full((256,), 1e-40)}[case]
    q = solo.quantize(x, bits=2, quantizer="log", block_size=128)
    y = q.dequantize()
    assert torch.isfinite(y).all() and torch.isfinite(q.fields["alphas"]).all()
    assert (q.fields["alphas"] > 0).all() and (q.fields["alphas"] < 1).all()
    if case == "constant":
        assert torch.allclose(y, x)
    if case == "zeros":
        assert (y == 0).all()


def test_rank1_scales():
    x = torch.rand(6, 10)
    q = solo.quantize(x, bits=8, quantizer="rank1-linear")
    rows, cols = x.amax(1), x.amax(0)
    assert torch.equal(q.fields["scales"], torch.cat([rows, cols]))
    scale = torch.minimum(rows[:, None], cols[None])
    assert ((q.dequantize() - x).abs() <= scale / 2**8 + 1e-7).all()
    assert q.nbytes == 60 + 16 * 4
    one_d = solo.quantize(torch.rand(300), bits=4, quantizer="rank1-linear")
    assert one_d.fields["scales"].numel() == 3  # 1-D falls back to blocks of 128


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=5, quantizer="de"), "bits"),
    (dict(bits=4, quantizer="fancy"), "quantizer"),
    (dict(bits=2, quantizer="log", signed=True), "unsigned"),
    (dict(bits=4, quantizer="rank1-linear", signed=True), "unsigned"),
    (dict(bits=16, quantizer="none"), "bits"),
])
def test_quantize_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solo.quantize(torch.rand(8), **kwargs)


def test_codes_in_range():
    """Codes span the codebook: each block's absmax element takes the top code (+1) or the
    code of the smallest level (-1 maps to the lowest code for signed DE), none beyond."""
    from solo.packing import unpack

    for bits in (2, 3, 4, 8):
        x = torch.randn(999, generator=torch.Generator().manual_seed(bits))
        q = solo.quantize(x, bits=bits, quantizer="de", signed=True)
        codes = unpack(q.codes, bits, 999).long()
        assert codes.max() <= 2**bits - 1 and codes.min() >= 0
        levels = q.codec.levels
        for b, block in enumerate(x.split(128)):
            i = block.abs().argmax()
            top = codes[b * 128 + i]
            want = levels.numel() - 1 if block[i] > 0 else 0
            assert top == want, (bits, b)


def test_log_quantile_ignores_zeros():
    # a block that is 90% exact zeros: alpha comes from the positive entries
    x = torch.cat([torch.zeros(115), torch.linspace(0.1, 1.0, 13)])
    q = solo.quantize(x, bits=2, quantizer="log", block_size=128)
    xp = torch.quantile(x[x > 0], 0.1)
    assert q.fields["alphas"].item() == pytest.approx((xp.item() / 1.0) ** (1 / 3), rel=1e-5)
    assert (block_quantile(x[None], 0.1, positive_only=True) == xp).all()
    assert block_quantile(torch.zeros(2, 8), 0.1, positive_only=True).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("quantizer", ["de", "linear", "de-sr", "linear-sr"])
def test_signed_is_taken_from_the_data(quantizer):
    """signed=None (default): a tensor with negatives gets the signed codebook and keeps its
    negatives (an unsigned one decoded all 150 of them to 0); a non-negative one the unsigned
    codebook."""
    x = _x(300, True, seed=5)
    q = solo.quantize(x, bits=4, quantizer=quantizer, generator=torch.Generator().manual_seed(0))
    assert q.codec.signed
    y = q.dequantize()
    neg = x < -0.5
    assert neg.sum() > 50 and (y[neg] < 0).all()
    assert not solo.quantize(x.abs(), bits=4, quantizer=quantizer).codec.signed
    assert torch.equal(solo.quantize(x, bits=4, quantizer=quantizer, signed=True,
                                     generator=torch.Generator().manual_seed(0)).codes, q.codes)


@pytest.mark.parametrize("kwargs,match", [
    (dict(quantizer="log"), r"quantizer 'log' stores unsigned values only.*x\.abs\(\)"),
    (dict(quantizer="rank1-linear"), "unsigned values only"),
    (dict(quantizer="de", signed=False), "signed=False but x holds negative values.*signed=True"),
])
def test_negative_input_for_an_unsigned_codebook_is_refused(kwargs, match):
    x = torch.tensor([[0.5, -0.25], [1.0, 2.0]])
    with pytest.raises(ValueError, match=match):
        solo.quantize(x, bits=4, **kwargs)


def test_full_precision_quantizers_keep_negatives_whatever_signed():
    x = torch.tensor([-1.5, 0.25, 3.0])
    for signed in (None, False, True):
        assert torch.equal(solo.quantize(x, bits=32, quantizer="none",
                                         signed=signed).dequantize(), x)
