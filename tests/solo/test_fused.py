"""The fused CPU step (solo/fused.py, solo/csrc/fused_step.cpp) against the eager reference."""

import copy
import math

import pytest
import torch

import solo
from solo import fused


def _fused_presets():
    """The presets whose state format the fused kernel implements (fused.supports)."""
    p = torch.zeros(256)
    opts = {name: preset([torch.nn.Parameter(p)]) for name, preset in solo.PRESETS.items()}
    return [n for n, o in opts.items() if fused.supports(*o.codecs(o.param_groups[0], p), p)]


FUSED_PRESETS = _fused_presets()
# odd sizes: a partial last block, 3-bit groups cut short, a tensor smaller than a block
SHAPES = [(37, 29), (1000,), (5,), (128 * 3,)]


@pytest.fixture(scope="module", autouse=True)
def built():
    if fused.extension() is None:
        pytest.fail(f"the fused CPU step did not build: {fused.unavailable()} "
                    "(needs a C++ compiler and ninja; `make setup` installs both)")


def _warm(preset, steps=3, **kw):
    """Parameters and a reference-stepped optimizer with non-trivial states."""
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s) * 0.05) for s in SHAPES]
    opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=False, **kw)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape) * 1e-2
        opt.step()
    for p in ps:
        p.grad = torch.randn(p.shape) * 1e-2
    return ps, opt


def test_every_block_quantized_preset_has_the_fused_step():
    # Guards the derived list: a preset must not lose its fused tests to a wrong `supports`.
    for name, preset in solo.PRESETS.items():
        quantizers = preset.knobs["quantizers"]
        block = quantizers not in ("none", "bf16") and "rank1-linear" not in quantizers
        assert (name in FUSED_PRESETS) == block, name


@pytest.mark.parametrize("preset,kw", [(p, {}) for p in FUSED_PRESETS]
                         + [("adabelief_solo_4_2bit", {"eps_in_s": True})],
                         ids=FUSED_PRESETS + ["adabelief_solo_4_2bit-eps_in_s"])
def test_fused_step_equals_reference_given_the_same_draws(preset, kw):
    ps, ref = _warm(preset, **kw)
    twin = copy.deepcopy(ref)  # same states, its own copies of the parameters
    twin_ps = twin.param_groups[0]["params"]
    for p, q in zip(ps, twin_ps):
        q.grad = p.grad.clone()

    g = ref.generator(torch.device("cpu"))
    draws_state = g.get_state()
    ref.step()  # reference: log codec draws torch.rand((blocks, block)) per tensor, in order

    g2 = torch.Generator().manual_seed(0)
    g2.set_state(draws_state)
    group = twin.param_groups[0]
    beta1, beta2 = group["betas"]
    codes_equal = codes_total = 0
    for p, q in zip(ps, twin_ps):
        st = twin.state[q]
        st["step"] += 1
        step = st["step"].item()
        cm, cv = twin.codecs(group, q)
        assert fused.supports(cm, cv, q)
        fm, fv = twin._fields(st, "exp_avg", cm), twin._fields(st, "exp_avg_sq", cv)
        rand = None
        if cv.stochastic:
            block = min(cv.block_size, q.numel())  # a block never exceeds its tensor
            rand = torch.rand((math.ceil(q.numel() / block), block), generator=g2)
        belief_eps = group["eps"] if twin._belief and group["eps_in_s"] else 0.0
        fused.step(q, q.grad, cm, fm, cv, fv, lr=group["lr"], beta1=beta1, beta2=beta2,
                   eps=group["eps"], weight_decay=group["weight_decay"], bc1=1 - beta1**step,
                   bc2_sqrt=math.sqrt(1 - beta2**step), belief=twin._belief,
                   belief_eps=belief_eps, rand=rand)
        torch.testing.assert_close(q.detach(), p.detach(), rtol=0, atol=1e-7)
        for key, t in st.items():
            if key.endswith("_codes"):
                a = torch.tensor(list(t.numpy().tobytes()))
                b = torch.tensor(list(ref.state[p][key].numpy().tobytes()))
                codes_equal += int((a == b).sum())
                codes_total += a.numel()
            elif key != "step":
                torch.testing.assert_close(t, ref.state[p][key], rtol=1e-5, atol=0)
    # Identical (100% on this machine) but for possible last-ulp differences of vectorized float
    # math at rounding boundaries on other CPUs.
    assert codes_equal / codes_total >= 0.999, (codes_equal, codes_total)


@pytest.mark.parametrize("preset", FUSED_PRESETS)
def test_vectorized_blocks_equal_the_scalar_blocks(preset):
    """The AVX2 path (blocks whose length is a multiple of 8) writes the same bits as the
    scalar path, codes, scales, alphas and parameters, over several steps with its own draws."""
    if not fused.vectorized():
        pytest.skip("the fused step was built without AVX2 here: only the scalar path exists")
    runs = {}
    for vec in (True, False):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s) * 0.05) for s in SHAPES]
        opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=True)
        fused.set_vectorized(vec)
        try:
            for _ in range(4):
                for p in ps:
                    p.grad = torch.randn(p.shape) * 1e-2
                opt.step()
        finally:
            fused.set_vectorized(True)
        runs[vec] = ps, opt
    (pv, ov), (ps_, os_) = runs[True], runs[False]
    for p, q in zip(pv, ps_):
        assert torch.equal(p, q)
        for key, t in ov.state[p].items():
            assert torch.equal(t, os_.state[q][key]), key


@pytest.mark.parametrize("signed", [True, False])
def test_search_table_counts_the_boundaries_below(signed):
    """The kernel's 8-bit bucket search (lut[key] + depth compares) equals bucketize, including
    exact boundaries, zeros of both signs, denormals and +-1."""
    opt = solo.PRESETS["adamw8bit"]([torch.nn.Parameter(torch.zeros(256))])
    group = opt.param_groups[0]
    cm, cv = opt.codecs(group, group["params"][0])
    codec = cm if signed else cv
    _, bounds = codec._tables(torch.device("cpu"))
    lut, bpad = fused._search_table(codec)
    depth = bpad.numel() - bounds.numel()
    assert lut.numel() == 2 * fused._LUT_KEYS and depth == 1
    torch.manual_seed(0)
    lo = -1.0 if signed else 0.0
    u = torch.cat([torch.empty(200_000).uniform_(lo, 1.0),
                   torch.logspace(-45, 0, 5000) * (torch.randint(0, 2, (5000,)) * 2 - 1
                                                   if signed else 1),
                   bounds, torch.nextafter(bounds, torch.tensor(2.0)),
                   torch.nextafter(bounds, torch.tensor(-2.0)),
                   torch.tensor([0.0, -0.0, 1.0, -1.0, 1e-40, -1e-40])])
    if not signed:
        u = u[(u >= 0) | (u == 0)].abs()
    bits = u.view(torch.int32)
    key = ((bits & 0x7FFFFFFF) >> fused._LUT_SHIFT).clamp(max=fused._LUT_KEYS - 1)
    key = key + (bits < 0).int() * fused._LUT_KEYS
    base = lut[key.long()].long()
    count = base.clone()
    for j in range(depth):
        count += (bpad[base + j] < u).long()
    assert torch.equal(count, torch.bucketize(u, bounds))


def test_fused_log_rounding_is_unbiased_in_the_log_domain():
    """Over many keys, the mean code of each element is t = log_alpha(v / max), clipped."""
    ps, opt = _warm("solo_2bit")
    p = ps[1]
    group = opt.param_groups[0]
    cm, cv = opt.codecs(group, p)
    st0 = copy.deepcopy(opt.state[p])
    p0 = p.detach().clone()
    counts = torch.zeros(p.numel())
    n = 400
    for key in range(1, n + 1):
        st = copy.deepcopy(st0)
        q = p0.clone()
        fm, fv = opt._fields(st, "exp_avg", cm), opt._fields(st, "exp_avg_sq", cv)
        fused.step(q, p.grad, cm, fm, cv, fv, lr=0.0, beta1=0.5, beta2=0.0, eps=1e-8,
                   weight_decay=0.0, bc1=1.0, bc2_sqrt=1.0, belief=False, key=key * 7919)
        codes = solo.packing.unpack(fv["codes"], 2, p.numel()).float()
        counts += codes
    # beta2 = 0: v = g^2 exactly; the reference quantizer's t for it
    v = p.grad.float() ** 2
    xb = torch.nn.functional.pad(v, (0, -v.numel() % 128)).view(-1, 128)
    scales = xb.amax(1).clamp(min=torch.finfo(torch.float32).tiny)
    alphas = cv.alphas(xb, scales, v.numel())
    t = (torch.log(xb / scales[:, None]) / torch.log(alphas)[:, None]).clamp(0, 3)
    t = t.flatten()[: v.numel()]
    mean = counts / n
    # binomial sd of a mean of n {k, k+1} draws is at most 0.5/sqrt(n) = 0.025
    assert (mean - t).abs().max() < 0.15
    assert (mean - t).mean().abs() < 0.01


def test_fused_is_automatic_and_falls_back_where_unsupported(monkeypatch):
    calls = []
    real = fused.step
    monkeypatch.setattr(fused, "step", lambda *a, **k: calls.append(1) or real(*a, **k))
    ps, _ = _warm("solo_4_2bit", steps=0)
    solo.PRESETS["solo_4_2bit"](ps, lr=1e-3).step()
    assert len(calls) == len(ps)

    calls.clear()  # different block sizes for m and v: the reference runs
    opt = solo.PRESETS["solo_4_2bit"](ps, lr=1e-3, block_size=(128, 256))
    opt.step()
    assert not calls
    with pytest.raises(RuntimeError, match="no fused kernel"):
        solo.PRESETS["solo_4_2bit"](ps, lr=1e-3, block_size=(128, 256), fused=True).step()
    with pytest.raises(ValueError, match="Invalid fused"):
        solo.AdamW(ps, fused="yes")


def test_fused_and_reference_train_alike():
    """Least squares, 150 steps, 4 SR seeds each: the fused step's final losses are
    distributed like the reference's (means within 3 pooled standard errors, or 5%)."""
    torch.manual_seed(0)
    a, x_true = torch.randn(256, 64), torch.randn(64, 8)
    y = a @ x_true
    losses = {None: [], False: []}
    for flag in losses:
        for seed in range(4):
            w = torch.nn.Parameter(torch.zeros(64, 8))
            opt = solo.PRESETS["solo_2bit"]([w], lr=3e-2, seed=seed, fused=flag)
            for _ in range(150):
                loss = ((a @ w - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses[flag].append(loss.item())
    f, r = torch.tensor(losses[None]), torch.tensor(losses[False])
    se = ((f.var() + r.var()) / 4).sqrt()
    assert (f.mean() - r.mean()).abs() <= max(3 * se, 0.05 * r.mean()), losses


def test_fused_true_refuses_before_any_change():
    """fused=True where one parameter has no fused step (float64 here) raises before the
    others are updated: nothing changes, no state is created."""
    a = torch.nn.Parameter(torch.randn(256))
    b = torch.nn.Parameter(torch.randn(256, dtype=torch.float64))
    opt = solo.PRESETS["solo_4_2bit"]([a, b], fused=True)
    a.grad, b.grad = torch.randn(256), torch.randn(256, dtype=torch.float64)
    before = a.detach().clone()
    with pytest.raises(RuntimeError, match="no fused kernel"):
        opt.step()
    assert torch.equal(a, before) and not opt.state
