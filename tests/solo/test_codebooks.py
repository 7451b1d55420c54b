import pytest
import torch

from solo import codebooks
from solo.codecs import make_codec
from solo.packing import pack, packed_numel, unpack

# docs/method.md section 4: bitsandbytes' dynamic map, as printed there.
DE = {
    (2, True): [-0.55, 0, 0.55, 1.0],
    (2, False): [0, 0.325, 0.775, 1.0],
    (3, True): [-0.775, -0.325, -0.055, 0, 0.055, 0.325, 0.775, 1.0],
    (3, False): [0, 0.0325, 0.0775, 0.2125, 0.4375, 0.6625, 0.8875, 1.0],
    (4, True): [-0.8875, -0.6625, -0.4375, -0.2125, -0.0775, -0.0325, -0.0055, 0, 0.0055,
                0.0325, 0.0775, 0.2125, 0.4375, 0.6625, 0.8875, 1.0],
    (4, False): [0, 0.00325, 0.00775, 0.02125, 0.04375, 0.06625, 0.08875, 0.15625, 0.26875,
                 0.38125, 0.49375, 0.60625, 0.71875, 0.83125, 0.94375, 1.0],
}


@pytest.mark.parametrize("bits,signed", list(DE))
def test_de_levels_match_method(bits, signed):
    assert codebooks.de_levels(bits, signed).tolist() == pytest.approx(DE[bits, signed], abs=1e-7)


def test_de_8bit_ends():
    s, u = codebooks.de_levels(8, True), codebooks.de_levels(8, False)
    assert s.numel() == u.numel() == 256
    assert s[:2].tolist() == pytest.approx([-0.992969, -0.978906], abs=1e-6)
    assert s[-4:].tolist() == pytest.approx([0.96484, 0.97891, 0.99297, 1.0], abs=1e-5)
    assert u[:5].tolist() == pytest.approx([0, 3.25e-07, 7.75e-07, 2.125e-06, 4.375e-06], rel=1e-3)
    assert u[-2:].tolist() == pytest.approx([0.99648, 1.0], abs=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_linear_levels(bits):
    n = 2**bits
    zero_free = codebooks.linear_levels(bits, signed=False)
    assert zero_free.tolist() == pytest.approx([(i + 1) / n for i in range(n)])
    assert zero_free.min() > 0
    signed = codebooks.linear_levels(bits, signed=True)
    assert signed[0] == -1 and signed[-1] == 1
    assert torch.allclose(signed.diff(), torch.full((n - 1,), 2 / (n - 1)), atol=1e-6)
    with_zero = codebooks.linear_levels(bits, signed=False, include_zero=True)
    assert with_zero[0] == 0 and with_zero[-1] == 1


def test_log_levels():
    assert codebooks.log_levels(2, 0.5).tolist() == pytest.approx([0.125, 0.25, 0.5, 1.0])


NEAREST = [(q, b, s) for q in ("de", "linear") for b in (2, 3, 4, 8) for s in (True, False)]


@pytest.mark.parametrize("quantizer,bits,signed", NEAREST)
def test_fast_nearest_equals_brute_force(quantizer, bits, signed):
    codec = make_codec(quantizer, bits, signed=signed)
    g = torch.Generator().manual_seed(bits)
    u = torch.rand(20000, generator=g) * (2 if signed else 1) - (1 if signed else 0)
    # include every level and every exact float32 midpoint neighbourhood
    lv = codec.levels.double()
    mids = ((lv[1:] + lv[:-1]) / 2).float()
    mids = mids[mids != 0]  # float64 distances cannot resolve 0 +- 1e-45 against 1/3
    special = torch.cat([codec.levels, mids, torch.nextafter(mids, mids + 1),
                         torch.nextafter(mids, mids - 1)])
    u = torch.cat([u, special.clamp(-1 if signed else 0, 1)])
    brute = (u.double()[:, None] - lv[None]).abs().argmin(dim=1)
    assert torch.equal(codec.quantize_normalized(u, None), brute)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 9, 127, 1001])
def test_pack_roundtrip(bits, n):
    codes = torch.randint(0, 2**bits, (n,), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_numel(n, bits)
    assert torch.equal(unpack(packed, bits, n), codes)


def test_packed_sizes_are_the_bits():
    assert packed_numel(8, 3) == 3 and packed_numel(800, 3) == 300
    assert packed_numel(800, 2) == 200 and packed_numel(800, 4) == 400
    assert packed_numel(800, 8) == 800
    assert packed_numel(9, 3) == 6 and packed_numel(5, 2) == 2


def test_pack_rejects_bad_bits():
    with pytest.raises(ValueError, match="bits"):
        pack(torch.zeros(4, dtype=torch.uint8), 5)
