"""The Triton step (solo/triton_step.py, solo/triton_kernel.py) against the eager reference.

On a machine with CUDA the tests run on the GPU (marker ``gpu`` too); without one, on CPU
tensors in Triton's interpreter, which must be switched on before triton is imported. The
interpreter is slow (~0.1 s per block), so the tensors are small.
"""

import copy
import io
import math
import os

import pytest
import torch

if not torch.cuda.is_available():  # (tests/conftest.py sets it first in a whole-suite run)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import solo  # noqa: E402
from solo import fused, triton_step  # noqa: E402
from solo.packing import unpack  # noqa: E402

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.triton] + ([pytest.mark.gpu] if CUDA else [])
DEVICE = "cuda" if CUDA else "cpu"
# partial last blocks, 3-bit groups cut short, tensors smaller than a block, whole blocks,
# and (index 3) a tensor whose middle block never gets a gradient: an all-zero block
SHAPES = [(37, 29), (5,), (3, 128), (300,), (1,)]
ZERO_BLOCK = (3, slice(128, 256))


def _presets():
    p = torch.zeros(256)
    opts = {name: preset([torch.nn.Parameter(p)]) for name, preset in solo.PRESETS.items()}
    return [n for n, o in opts.items() if fused.supports(*o.codecs(o.param_groups[0], p), p)]


PRESETS = _presets()
LOG_PRESETS = [n for n in PRESETS if solo.PRESETS[n].knobs["quantizers"][1] == "log"]


@pytest.fixture(autouse=True)
def kernel_on_device(monkeypatch):
    """The Triton path for this device's tensors (on CPU: the tests' private switch)."""
    if triton_step.kernel() is None:
        pytest.fail(f"triton did not import: {triton_step.unavailable()}")
    if not CUDA:
        if type(triton_step.kernel()).__name__ != "InterpretedFunction":
            pytest.fail("no GPU, and triton was imported before TRITON_INTERPRET=1 was set "
                        "(tests/conftest.py sets it): run with TRITON_INTERPRET=1")
        monkeypatch.setattr(triton_step, "_on_cpu", True)


def _grads(ps):
    for i, p in enumerate(ps):
        p.grad = (torch.randn(p.shape) * 1e-2).to(p.dtype).to(DEVICE)
        if i == ZERO_BLOCK[0]:
            p.grad.view(-1)[ZERO_BLOCK[1]] = 0


def _params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter((torch.randn(s) * 0.05).to(dtype).to(DEVICE)) for s in SHAPES]


def _warm(preset, steps=3, dtype=torch.float32, **kw):
    """Parameters and a reference-stepped optimizer with non-trivial states."""
    ps = _params(dtype)
    opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=False, **kw)
    for _ in range(steps):
        _grads(ps)
        opt.step()
    _grads(ps)
    return ps, opt


def _assert_params_close(actual, expected):
    """Within 1e-6 relative, or 1e-6 of the tensor's scale: a last-ulp difference of an
    intermediate (torch's pow decoding v, a vectorized division) moves a parameter that an
    update nearly cancelled by more than 1e-6 of itself."""
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=1e-6, atol=1e-6 * scale)


def _code_bytes(a, b):
    a, b = a.cpu().reshape(-1), b.cpu().reshape(-1)
    return int((a == b).sum()), a.numel()


def _kernel_step_with_draws(opt, params, g):
    """One Triton launch over ``params`` with the reference's draws from generator ``g``:
    per tensor torch.rand((blocks, block)) in order, as LogCodec.encode draws them."""
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    cm, cv = opt.codecs(group, params[0])
    steps, fms, fvs, rands = [], [], [], []
    for q in params:
        st = opt.state[q]
        assert triton_step.supports(*opt.codecs(group, q), q)
        st["step"] += 1
        steps.append(st["step"].item())
        fms.append(opt._fields(st, "exp_avg", cm))
        fvs.append(opt._fields(st, "exp_avg_sq", cv))
        block = min(cv.block_size, q.numel())
        rands.append(torch.rand((math.ceil(q.numel() / block), block), generator=g,
                                device=q.device) if cv.stochastic else None)
    eps_s = group["eps"] if opt._belief and group["eps_in_s"] else 0.0
    triton_step.step(params, [q.grad for q in params], fms, fvs, cm, cv, lr=group["lr"],
                     beta1=beta1, beta2=beta2, eps=group["eps"],
                     weight_decay=group["weight_decay"], bc1s=[1 - beta1**t for t in steps],
                     bc2s=[math.sqrt(1 - beta2**t) for t in steps], belief=opt._belief,
                     belief_eps=eps_s, rands=rands if cv.stochastic else None)


CASES = ([(p, torch.float32, {}) for p in PRESETS]
         + [("adabelief_solo_4_2bit", torch.float32, {"eps_in_s": True}),
            ("solo_4_2bit", torch.float32, {"quantile": 0.9}),  # order stats from the top
            ("solo_4_2bit", torch.bfloat16, {}), ("adamw4bit", torch.bfloat16, {})])


@pytest.mark.parametrize("preset,dtype,kw", CASES,
                         ids=[f"{p}-{str(d)[6:]}{''.join('-' + k for k in kw)}"
                              for p, d, kw in CASES])
def test_triton_equals_reference_given_the_same_draws(preset, dtype, kw):
    ps, ref = _warm(preset, dtype=dtype, **kw)
    # a block without gradient but with v > 0: v = beta2 * decoded v, so equal codes give
    # equal values (ties in the quantile)
    ps[2].grad[1] = 0
    twin = copy.deepcopy(ref)
    twin_ps = twin.param_groups[0]["params"]
    for p, q in zip(ps, twin_ps):
        q.grad = p.grad.clone()
    g = ref.generator(torch.device(DEVICE))
    draws_state = g.get_state()
    ref.step()
    g2 = torch.Generator(device=DEVICE)
    g2.set_state(draws_state)
    _kernel_step_with_draws(twin, twin_ps, g2)
    equal = total = 0
    for p, q in zip(ps, twin_ps):
        if dtype == torch.float32:
            _assert_params_close(q, p)
        else:  # the same float32 result rounded to bfloat16
            assert torch.equal(q.detach(), p.detach())
        for key, t in twin.state[q].items():
            if key.endswith("_codes"):
                e, n = _code_bytes(t, ref.state[p][key])
                equal, total = equal + e, total + n
            elif key != "step":
                torch.testing.assert_close(t, ref.state[p][key], rtol=1e-6, atol=0)
    # 100% here; a last-ulp difference of a device's log at a rounding boundary may flip one
    assert equal / total >= 0.999, (equal, total)


@pytest.mark.skipif(CUDA, reason="compares with the C++ CPU step: CPU tensors only")
@pytest.mark.parametrize("preset", PRESETS)
def test_triton_writes_the_cpp_kernels_bits_with_its_own_draws(preset, monkeypatch):
    """Same seed, own draws (the same keys and counter-based generator): the Triton step in
    the interpreter and the fused C++ step agree bit for bit, parameters and states."""
    runs = []
    for on in (True, False):
        monkeypatch.setattr(triton_step, "_on_cpu", on)
        ps = _params()
        opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=True)
        for _ in range(2):
            _grads(ps)
            opt.step()
        assert opt._path(opt.param_groups[0], ps[0]) == ("triton" if on else "kernel")
        runs.append((ps, opt))
    (pt, ot), (pc, oc) = runs
    for p, q in zip(pt, pc):
        assert torch.equal(p, q)
        for key, t in ot.state[p].items():
            assert torch.equal(t, oc.state[q][key]), key


def _codes_over_keys(opt, p, keys):
    """v codes of one step from the same state, once per key, in one multi-tensor launch."""
    group = opt.param_groups[0]
    cm, cv = opt.codecs(group, p)
    st = opt.state[p]
    copies = [copy.deepcopy(st) for _ in keys]
    params = [p.detach().clone() for _ in keys]
    triton_step.step(params, [p.grad] * len(keys),
                     [opt._fields(s, "exp_avg", cm) for s in copies],
                     [opt._fields(s, "exp_avg_sq", cv) for s in copies], cm, cv, lr=0.0,
                     beta1=0.5, beta2=0.0, eps=1e-8, weight_decay=0.0, bc1s=[1.0] * len(keys),
                     bc2s=[1.0] * len(keys), belief=False, belief_eps=0.0,
                     keys=torch.tensor(keys, dtype=torch.int64, device=p.device))
    return torch.stack([unpack(s["exp_avg_sq_codes"], cv.bits, p.numel()).float().cpu()
                        for s in copies])


def test_own_draws_are_unbiased_and_distributed_like_the_references():
    """160 keys in one launch: per element the mean code is t = log_alpha(v / max) (the SR
    is unbiased in the log domain), and the codes are distributed like the reference's over
    160 generator seeds (the same mean within 5 pooled standard errors per element)."""
    p = torch.nn.Parameter((torch.randn(64) * 0.05).to(DEVICE))
    opt = solo.PRESETS["solo_2bit"]([p], lr=1e-2, seed=0)
    p.grad = (torch.randn(64) * 1e-2).to(DEVICE)
    opt.step()
    p.grad = (torch.randn(64) * 1e-2).to(DEVICE)
    n = 160
    codes = _codes_over_keys(opt, p, [k * 7919 + 1 for k in range(n)])
    cv = opt.codecs(opt.param_groups[0], p)[1]
    v = p.grad.float() ** 2  # beta2 = 0: v = g^2
    xb = v.view(1, -1)
    scale = xb.amax(1).clamp(min=torch.finfo(torch.float32).tiny)
    alpha = cv.alphas(xb, scale, v.numel())
    t = (torch.log(xb / scale[:, None]) / torch.log(alpha)[:, None]).clamp(0, 3)[0].cpu()
    mean = codes.mean(0)
    assert (mean - t).abs().max() < 0.2  # binomial sd of the mean <= 0.5/sqrt(n) = 0.04
    assert (mean - t).mean().abs() < 0.02
    ref = []
    for seed in range(n):
        fields = {k: f.clone() for k, f in opt._fields(opt.state[p], "exp_avg_sq", cv).items()}
        cv.encode(v, fields, torch.Generator(device=DEVICE).manual_seed(seed))
        ref.append(unpack(fields["codes"], cv.bits, p.numel()).float().cpu())
    ref = torch.stack(ref)
    se = ((codes.var(0) + ref.var(0)) / n).sqrt().clamp(min=1e-3)
    assert ((codes.mean(0) - ref.mean(0)).abs() <= 5 * se).all()


def test_triton_and_reference_train_alike():
    """Least squares, 40 steps, 3 SR seeds each: the Triton step's final losses are
    distributed like the reference's (means within 3 pooled standard errors, or 5%)."""
    torch.manual_seed(0)
    a, x_true = torch.randn(128, 16, device=DEVICE), torch.randn(16, 8, device=DEVICE)
    y = a @ x_true
    losses = {None: [], False: []}
    for flag in losses:
        for seed in range(3):
            w = torch.nn.Parameter(torch.zeros(16, 8, device=DEVICE))
            opt = solo.PRESETS["solo_2bit"]([w], lr=5e-2, seed=seed, fused=flag)
            for _ in range(40):
                loss = ((a @ w - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            assert opt._path(opt.param_groups[0], w) == ("triton" if flag is None
                                                         else "reference")
            losses[flag].append(loss.item())
    f, r = torch.tensor(losses[None]), torch.tensor(losses[False])
    se = ((f.var() + r.var()) / 3).sqrt()
    assert (f.mean() - r.mean()).abs() <= max(3 * se, 0.05 * r.mean()), losses
    assert f.mean() < 0.5 * ((a @ torch.zeros(16, 8, device=DEVICE) - y) ** 2).mean().item()


def _saved(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_checkpoint_resumes_bit_exact():
    """Straight run vs save after 2 steps, load into a fresh optimizer, go on: equal bits."""
    ps = _params()
    opt = solo.PRESETS["solo_4_2bit"](ps, lr=1e-2, weight_decay=0.1, seed=5)
    for _ in range(2):
        _grads(ps)
        opt.step()
    sd = _saved(opt)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    resumed = solo.PRESETS["solo_4_2bit"](qs, lr=1e-2, weight_decay=0.1, seed=99)
    resumed.load_state_dict(sd)
    for _ in range(2):
        _grads(ps)
        for p, q in zip(ps, qs):
            q.grad = p.grad.clone()
        opt.step()
        resumed.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        for key, t in opt.state[p].items():
            assert torch.equal(t, resumed.state[q][key]), key


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in LOG_PRESETS])
def test_deterministic_formats_checkpoint_like_the_reference(preset):
    """No random draws (nearest rounding): 3 steps of the Triton step and of the reference
    leave the same checkpoint up to last-ulp float differences (torch's CPU lerp is a fused
    multiply-add, the kernels' is not): every code byte equal, scales and parameters within
    1e-6; and the reference resumed from the Triton step's checkpoint writes the codes of
    the reference that ran straight on."""
    runs = []
    for flag in (None, False):
        ps = _params()
        opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=flag)
        for _ in range(3):
            _grads(ps)
            opt.step()
        runs.append((ps, opt, _saved(opt)))
    (pt, _, st), (pr, ref, sr) = runs
    for p, q in zip(pt, pr):
        _assert_params_close(p, q)
    for i, s in st["state"].items():
        for key, t in s.items():
            if key.endswith("_codes"):
                assert torch.equal(t, sr["state"][i][key]), key
            else:
                torch.testing.assert_close(t, sr["state"][i][key], rtol=1e-6, atol=0)
    assert [{**g, "fused": None} for g in sr["param_groups"]] == st["param_groups"]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in pt]
    resumed = solo.PRESETS[preset](qs, lr=1e-2, weight_decay=0.1, seed=3, fused=False)
    resumed.load_state_dict(st)
    _grads(pr)
    for p, q in zip(pr, qs):
        q.grad = p.grad.clone()
    ref.step()
    resumed.step()
    for p, q in zip(pr, qs):
        _assert_params_close(q, p)
        for key, t in ref.state[p].items():
            if key.endswith("_codes"):
                assert torch.equal(t, resumed.state[q][key]), key


@pytest.mark.skipif(CUDA, reason="the C++ step runs on CPU tensors only")
def test_checkpoint_of_the_cpp_step_resumes_on_the_triton_step(monkeypatch):
    """A checkpoint of the C++ step resumed on the Triton step continues with the straight
    C++ run's bits (the same keys from the saved generator, the same arithmetic)."""
    monkeypatch.setattr(triton_step, "_on_cpu", False)
    ps = _params()
    opt = solo.PRESETS["solo_3bit"](ps, lr=1e-2, seed=4)
    _grads(ps)
    opt.step()
    sd = _saved(opt)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    _grads(ps)
    opt.step()  # straight on, C++
    assert opt._path(opt.param_groups[0], ps[0]) == "kernel"
    monkeypatch.setattr(triton_step, "_on_cpu", True)
    resumed = solo.PRESETS["solo_3bit"](qs, lr=1e-2, seed=99)
    resumed.load_state_dict(sd)
    for p, q in zip(ps, qs):
        q.grad = p.grad.clone()
    resumed.step()
    assert resumed._path(resumed.param_groups[0], qs[0]) == "triton"
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        for key, t in opt.state[p].items():
            assert torch.equal(t, resumed.state[q][key]), key


def test_fused_none_selects_triton_and_fused_true_requires_it(monkeypatch):
    ps = _params()
    _grads(ps)
    opt = solo.PRESETS["solo_4_2bit"](ps, lr=1e-3)
    group = opt.param_groups[0]
    assert all(opt._path(group, p) == "triton" for p in ps)
    calls = []
    real = triton_step.step
    monkeypatch.setattr(triton_step, "step",
                        lambda params, *a, **k: calls.append(len(params)) or real(params, *a,
                                                                                  **k))
    opt.step()
    assert calls == [len(ps)]  # one call (launch) for the whole group
    assert opt._path(solo.PRESETS["solo_4_2bit"](ps, fused=False).param_groups[0],
                     ps[0]) == "reference"
    with pytest.raises(RuntimeError, match="no fused kernel"):  # m and v block sizes differ
        solo.PRESETS["solo_4_2bit"](ps, block_size=(128, 256), fused=True).step()
    monkeypatch.setattr(triton_step, "_kernel", None)
    monkeypatch.setattr(triton_step, "_failed", "ImportError: no triton")
    before = [p.detach().clone() for p in ps]
    with pytest.raises(RuntimeError, match="Triton step is unavailable: ImportError"):
        solo.PRESETS["solo_4_2bit"](ps, fused=True).step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))
    fallback = solo.PRESETS["solo_4_2bit"](ps)  # fused=None: the reference
    assert fallback._path(fallback.param_groups[0], ps[0]) == "reference"


def test_cpu_tensors_never_take_triton_by_default(monkeypatch):
    monkeypatch.setattr(triton_step, "_on_cpu", False)
    p = torch.nn.Parameter(torch.randn(256))
    p.grad = torch.randn(256)
    opt = solo.PRESETS["solo_4_2bit"]([p])
    assert opt._path(opt.param_groups[0], p) in ("kernel", "reference")


def test_bad_state_raises_before_the_launch():
    """A state of the wrong size or dtype (edited by hand) is a RuntimeError naming it, and
    nothing is written."""
    ps, opt = _warm("solo_4_2bit", steps=1)
    group = opt.param_groups[0]
    cm, cv = opt.codecs(group, ps[0])
    st = opt.state[ps[0]]
    fm = opt._fields(st, "exp_avg", cm)
    fv = dict(opt._fields(st, "exp_avg_sq", cv))
    fv["codes"] = fv["codes"][:-1]
    before = ps[0].detach().clone()
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, bc1s=[0.1],
              bc2s=[0.1], belief=False, belief_eps=0.0,
              keys=torch.ones(1, dtype=torch.int64, device=DEVICE))
    with pytest.raises(RuntimeError, match="exp_avg_sq_codes has"):
        triton_step.step([ps[0]], [ps[0].grad], [fm], [fv], cm, cv, **kw)
    fv = dict(opt._fields(st, "exp_avg_sq", cv))
    fv["scales"] = fv["scales"].double()
    with pytest.raises(RuntimeError, match="exp_avg_sq_scales must be"):
        triton_step.step([ps[0]], [ps[0].grad], [fm], [fv], cm, cv, **kw)
    assert torch.equal(ps[0], before)


class _CountLaunches:
    """Wraps the jitted kernel: counts ``kernel[grid](...)`` launches and their grids."""

    def __init__(self, kern):
        self.kern, self.grids = kern, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kern[grid]


def test_one_launch_per_dtype_for_a_mixed_group(monkeypatch):
    """fp32 and bf16 parameters in one group: two launches (one per dtype) covering every
    block, with what the reference writes (adamw4bit: no random draws)."""
    counter = _CountLaunches(triton_step.kernel())
    runs = []
    for flag in (None, False):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter((torch.randn(s) * 0.05).to(dt).to(DEVICE))
              for s, dt in [((300,), torch.float32), ((200,), torch.bfloat16),
                            ((37, 29), torch.float32), ((5,), torch.bfloat16)]]
        opt = solo.PRESETS["adamw4bit"](ps, lr=1e-2, weight_decay=0.1, fused=flag)
        for p in ps:
            p.grad = (torch.randn(p.shape) * 1e-2).to(p.dtype).to(DEVICE)
        monkeypatch.setattr(triton_step, "_kernel", counter)
        opt.step()
        runs.append((ps, opt))
    # 3 + 9 blocks of fp32, 2 + 1 of bf16
    assert sorted(counter.grids) == [(3,), (12,)]
    (pt, ot), (pr, orf) = runs
    for p, q in zip(pt, pr):
        if p.dtype == torch.float32:
            _assert_params_close(p, q)
        else:
            assert torch.equal(p, q)
        for key, t in ot.state[p].items():
            if key.endswith("_codes"):
                assert torch.equal(t, orf.state[q][key]), key


@pytest.mark.parametrize("preset,dtype", [("solo_4_2bit", torch.float32),
                                          ("adamw4bit", torch.float32),
                                          ("solo_4_2bit", torch.bfloat16)])
def test_non_contiguous_parameters_step_like_contiguous_copies(preset, dtype):
    """Transposed, channels_last and strided-view parameters take the Triton step too and
    end each step equal to a contiguous copy stepped alike (the kernel pairs elements by
    memory position: solo/layout.py)."""
    g = torch.Generator().manual_seed(0)
    layouts = [lambda t: t.t(), lambda t: t.to(memory_format=torch.channels_last),
               lambda t: t[:, 1::2]]
    base = [(torch.randn(s, generator=g) * 0.05).to(dtype).to(DEVICE)
            for s in [(8, 37), (2, 6, 5, 5), (20, 30)]]
    ps = [torch.nn.Parameter(lay(b)) for lay, b in zip(layouts, base)]
    qs = [torch.nn.Parameter(p.detach().contiguous()) for p in ps]
    start = qs[0].detach().clone()
    assert not any(p.is_contiguous() for p in ps)
    opt = solo.PRESETS[preset](ps, lr=1e-2, weight_decay=0.1, seed=3, fused=True)
    ref = solo.PRESETS[preset](qs, lr=1e-2, weight_decay=0.1, seed=3, fused=True)
    for _ in range(2):
        for p, q in zip(ps, qs):
            q.grad = (torch.randn(q.shape, generator=g) * 1e-2).to(dtype).to(DEVICE)
            p.grad = q.grad.clone()
        opt.step()
        ref.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p.contiguous(), q)
            for key, t in ref.state[q].items():
                assert torch.equal(opt.state[p][key], t), key
    assert all(opt._path(opt.param_groups[0], p) == "triton" for p in ps)
    assert not torch.equal(qs[0], start)
