import copy
import io

import pytest
import torch
from solo_helpers import small_model, train_steps

import solo
from solo.presets import PRESETS


def _groups(m, tensor_lr=False):
    return [{"params": m[0].parameters(), "lr": 1e-2, "weight_decay": 0.1},
            {"params": m[2].parameters(), "lr": torch.tensor(3e-3) if tensor_lr else 3e-3},
            {"params": list(m[3].parameters()) + list(m[4].parameters()), "weight_decay": 0.0}]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_fp32_equals_torch_adamw(weight_decay, tensor_lr):
    a, b = small_model(), small_model()
    ref = torch.optim.AdamW(_groups(a, tensor_lr), lr=2e-3, weight_decay=weight_decay)
    ours = solo.AdamW(_groups(b, tensor_lr), lr=2e-3, weight_decay=weight_decay,
                      bits=32, quantizers="none")
    la, lb = train_steps(a, ref, 20), train_steps(b, ours, 20)
    assert la == pytest.approx(lb, abs=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(ref.state[p]["exp_avg"], ours.state[q]["exp_avg"],
                                   atol=1e-6, rtol=1e-5)


def test_adabelief_fp32_matches_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = solo.AdaBelief([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5,
                         bits=32, quantizers="none")
    m = s = torch.zeros(2, dtype=torch.float64)
    x = p.detach().double().clone()
    for t in range(1, 6):
        g = torch.tensor([0.5, 1.5], dtype=torch.float64) * t
        p.grad = g.float()
        opt.step()
        x = x * (1 - 0.1 * 0.5)
        m = 0.9 * m + 0.1 * g
        s = 0.99 * s + 0.01 * (g - m) ** 2 + 1e-8
        x = x - 0.1 * (m / (1 - 0.9**t)) / ((s / (1 - 0.99**t)).sqrt() + 1e-8)
    torch.testing.assert_close(p.detach().double(), x, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_train(name):
    m = small_model()
    opt = PRESETS[name](m.parameters(), lr=3e-3, seed=0)
    losses = train_steps(m, opt, 60)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < sum(losses[:10])


# bits per state -> update error budget relative to fp32 AdamW on the same gradients
ERROR_BUDGET = {"adamw8bit": 0.05, "adamw4bit": 0.35, "solo_4_2bit": 0.6, "adamw2bit": 1.5,
                "solo_2bit": 1.5}


@pytest.mark.parametrize("name", sorted(ERROR_BUDGET))
def test_update_error_budget(name):
    torch.manual_seed(0)
    ref = torch.nn.Parameter(torch.randn(4096))
    low = torch.nn.Parameter(ref.detach().clone())
    o_ref = solo.AdamW([ref], lr=1e-3, betas=(0.9, 0.999), bits=32, quantizers="none")
    o_low = PRESETS[name]([low], lr=1e-3, betas=(0.9, 0.999), seed=0)
    g = torch.Generator().manual_seed(1)
    errs = []
    for _ in range(30):
        grad = torch.randn(4096, generator=g) * (1 + torch.rand(4096, generator=g) * 10)
        before_r, before_l = ref.detach().clone(), low.detach().clone()
        ref.grad, low.grad = grad.clone(), grad.clone()
        o_ref.step()
        o_low.step()
        ur, ul = ref.detach() - before_r, low.detach() - before_l
        errs.append(((ur - ul).norm() / ur.norm()).item())
    assert sum(errs) / len(errs) < ERROR_BUDGET[name]


# --- state dict / checkpoints ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_checkpoint_resume_bit_identical(name, tmp_path):
    m = small_model()
    opt = PRESETS[name](m.parameters(), lr=3e-3, seed=0)
    train_steps(m, opt, 5, seed=1)
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.pt")
    straight = train_steps(m, opt, 10, seed=2)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    m2 = small_model(seed=99)
    m2.load_state_dict(ck["model"])
    opt2 = PRESETS[name](m2.parameters(), lr=3e-3, seed=12345)  # seed overridden by ckpt
    opt2.load_state_dict(ck["opt"])
    resumed = train_steps(m2, opt2, 10, seed=2)
    assert straight == resumed
    for p, q in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_bf16_params_keep_fp32_scales():
    m = small_model()
    opt = PRESETS["solo_4_2bit"](m.parameters(), lr=1e-3)
    train_steps(m, opt, 2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    m16 = small_model(dtype=torch.bfloat16)
    opt16 = PRESETS["solo_4_2bit"](m16.parameters(), lr=1e-3)
    opt16.load_state_dict(torch.load(buf, weights_only=True))
    st = opt16.state[m16[0].weight]
    assert st["exp_avg_scales"].dtype == torch.float32
    assert st["exp_avg_sq_alphas"].dtype == torch.float32
    assert st["exp_avg_codes"].dtype == torch.uint8
    assert torch.equal(st["exp_avg_sq_scales"], opt.state[m[0].weight]["exp_avg_sq_scales"])
    train_steps(m16, opt16, 3)
    assert st["exp_avg_scales"].dtype == torch.float32
    assert all(torch.isfinite(p).all() for p in m16.parameters())


@pytest.mark.parametrize("change,field", [
    (dict(bits=(2, 2)), "bits"),
    (dict(block_size=64), "block_size"),
    (dict(quantizers=("de", "linear")), "quantizers"),
])
def test_mismatched_checkpoint_names_field(change, field):
    m = small_model()
    opt = solo.AdamW(m.parameters(), bits=(4, 2), quantizers=("de", "log"))
    train_steps(m, opt, 1)
    sd = opt.state_dict()
    other = solo.AdamW(small_model().parameters(), **{**dict(bits=(4, 2),
                       quantizers=("de", "log")), **change})
    with pytest.raises(ValueError, match=field):
        other.load_state_dict(sd)


def test_mismatched_shapes_and_groups():
    m = small_model()
    opt = solo.AdamW(m.parameters())
    train_steps(m, opt, 1)
    sd = opt.state_dict()
    two_groups = solo.AdamW([{"params": [m[0].weight]}, {"params": list(m.parameters())[1:]}])
    with pytest.raises(ValueError, match="param"):
        two_groups.load_state_dict(sd)
    bigger = small_model()
    bigger[2] = torch.nn.Linear(40, 300, bias=True)
    bigger[0] = torch.nn.Linear(14, 40)
    with pytest.raises(ValueError, match="exp_avg"):
        solo.AdamW(bigger.parameters()).load_state_dict(sd)


def test_old_state_dict_without_generators_loads():
    m = small_model()
    opt = solo.AdamW(m.parameters(), seed=3)
    train_steps(m, opt, 2)
    sd = opt.state_dict()
    del sd["sr_generators"]
    opt2 = solo.AdamW(small_model().parameters(), seed=3)
    opt2.load_state_dict(sd)


# --- RNG ---------------------------------------------------------------------------------

def test_global_rng_untouched_and_seeded():
    torch.manual_seed(0)
    m = small_model()
    opt = PRESETS["solo_2bit"](m.parameters(), seed=5)
    x = torch.randn(8, 13)
    m(x).sum().backward()
    state = torch.get_rng_state()
    opt.step()
    assert torch.equal(state, torch.get_rng_state())
    a, b = small_model(), small_model()
    la = train_steps(a, PRESETS["solo_2bit"](a.parameters(), seed=5), 5)
    lb = train_steps(b, PRESETS["solo_2bit"](b.parameters(), seed=5), 5)
    assert la == lb
    c = small_model()
    train_steps(c, PRESETS["solo_2bit"](c.parameters(), seed=6), 5)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_generator_in_state_dict():
    m = small_model()
    opt = PRESETS["solo_4_2bit"](m.parameters(), seed=1)
    train_steps(m, opt, 1)
    assert "cpu" in opt.state_dict()["sr_generators"]


# --- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=-1.0), "learning rate"),
    (dict(eps=-1.0), "epsilon"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (dict(betas=(0.9, -0.1)), "beta parameter at index 1"),
    (dict(bits=5), "bits"),
    (dict(bits=(4, 16), quantizers=("de", "log")), "bits"),
    (dict(quantizers=("fancy", "log")), "quantizer"),
    (dict(quantizers=("log", "log"), bits=(2, 2)), "unsigned"),
    (dict(quantizers=("rank1-linear", "log"), bits=(4, 2)), "unsigned"),
    (dict(block_size=0), "block_size"),
    (dict(block_size=(128, -5)), "block_size"),
    (dict(quantile=0.0), "quantile"),
    (dict(quantile=1.5), "quantile"),
    (dict(min_quantizable_size=-1), "min_quantizable_size"),
    (dict(bits=(4, 2, 1)), "bits"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solo.AdamW([torch.nn.Parameter(torch.zeros(3))], **kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="empty"):
        solo.AdamW([])
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="duplicate"):
        solo.AdamW([p, p])
    with pytest.raises(ValueError, match="complex"):
        solo.AdamW([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])


def test_sparse_grad_raises_at_step():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = solo.AdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_grad_raises_before_any_change(bad):
    m = small_model()
    opt = PRESETS["solo_4_2bit"](m.parameters())
    train_steps(m, opt, 2)
    params = [p.detach().clone() for p in m.parameters()]
    states = copy.deepcopy(opt.state_dict())
    m(torch.randn(4, 13)).sum().backward()
    m[2].weight.grad[0, 0] = bad
    with pytest.raises(FloatingPointError, match=r"param_groups\[0\]\['params'\]\[2\]"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, m.parameters()))
    after = opt.state_dict()["state"]
    for k, st in states["state"].items():
        for key, v in st.items():
            assert torch.equal(v, after[k][key])


@pytest.mark.parametrize("name", ["adamw32", "solo_4_2bit"])
def test_check_finite_false_skips_the_pre_check_per_group(name):
    # torch.optim's behaviour on request: the NaN reaches the state, nothing raises; a second
    # group that keeps the check still raises for its own parameters.
    a, b = torch.nn.Parameter(torch.randn(300)), torch.nn.Parameter(torch.randn(300))
    opt = PRESETS[name]([{"params": [a], "check_finite": False},
                         {"params": [b], "check_finite": True}], seed=0)
    a.grad = torch.full_like(a, float("nan"))
    opt.step()
    assert torch.isnan(a).all()
    b.grad = torch.full_like(b, float("inf"))
    with pytest.raises(FloatingPointError, match=r"param_groups\[1\]"):
        opt.step()
    opt.param_groups[1]["check_finite"] = "no"
    with pytest.raises(ValueError, match="Invalid check_finite: 'no'"):
        opt.step()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_check_finite_exactly_where_states_are_block_quantized(name):
    # fp32/bf16 states: torch.optim's behaviour (a NaN stays in its element); block-quantized
    # states: the pre-check, since a NaN would poison its block's scale and every neighbour.
    p = torch.nn.Parameter(torch.randn(8192))  # above adamw4bit_rank1's fp32 threshold
    opt = PRESETS[name]([p], seed=0)
    unquantized = all(c.name in ("none", "bf16") for c in opt.codecs(opt.param_groups[0], p))
    assert opt.param_groups[0]["check_finite"] is not unquantized
    p.grad = torch.randn(8192)
    p.grad[7] = float("nan")
    if unquantized:
        opt.step()
        bad = ~torch.isfinite(p.detach())
        assert bad[7] and bad.sum() == 1  # only the element whose gradient was NaN
    else:
        with pytest.raises(FloatingPointError):
            opt.step()
    assert PRESETS[name]([p], check_finite=not unquantized).param_groups[0]["check_finite"] \
        is not unquantized


def test_check_finite_defaults_to_true_for_state_dicts_without_it():
    p = torch.nn.Parameter(torch.randn(300))
    opt = PRESETS["solo_4_2bit"]([p], seed=0)
    p.grad = torch.randn(300)
    opt.step()
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        del g["check_finite"]
    fresh = PRESETS["solo_4_2bit"]([p], seed=1)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["check_finite"] is True
    p.grad = torch.full_like(p, float("nan"))
    with pytest.raises(FloatingPointError):
        fresh.step()


# --- edge tensors -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["solo_4_2bit", "solo_3bit", "adamw4bit_rank1", "adamw2bit"])
def test_edge_tensors(name):
    params = [torch.nn.Parameter(torch.tensor(1.5)),        # 0-dim
              torch.nn.Parameter(torch.zeros(0)),           # empty
              torch.nn.Parameter(torch.randn(3)),           # tiny
              torch.nn.Parameter(torch.randn(7, 131)),      # not a multiple of block or pack
              torch.nn.Parameter(torch.randn(5)),           # no grad ever
              torch.nn.Parameter(torch.randn(9, 9))]        # frozen then unfrozen
    opt = PRESETS[name](params, lr=1e-2, seed=0)
    params[5].requires_grad_(False)
    for step in range(30):
        for p in params[:4]:
            p.grad = torch.randn_like(p) if step < 10 else torch.zeros_like(p)
        if step == 15:
            params[5].requires_grad_(True)
        if step >= 15:
            params[5].grad = torch.randn_like(params[5])
        opt.step()
    assert params[4] not in opt.state
    for p in params:
        assert torch.isfinite(p).all()
    for st in opt.state.values():
        for v in st.values():
            if v.is_floating_point():
                assert torch.isfinite(v).all()


def test_min_quantizable_size_keeps_fp32():
    small, big = torch.nn.Parameter(torch.randn(100)), torch.nn.Parameter(torch.randn(5000))
    opt = solo.AdamW([small, big], min_quantizable_size=4096)
    small.grad, big.grad = torch.randn(100), torch.randn(5000)
    opt.step()
    assert set(opt.state[small]) == {"step", "exp_avg", "exp_avg_sq"}
    assert opt.state[small]["exp_avg"].dtype == torch.float32
    assert "exp_avg_codes" in opt.state[big]
    assert opt.codecs(opt.param_groups[0], small)[0].quantized is False


# --- torch.optim behaviour --------------------------------------------------------------

def test_torch_optim_api():
    m = small_model()
    opt = PRESETS["solo_4_2bit"](list(m.parameters())[:4], lr=1e-3)
    assert "AdamW" in repr(opt) and "quantizers" in repr(opt)
    opt.add_param_group({"params": list(m.parameters())[4:], "lr": 1e-4})
    assert opt.param_groups[1]["bits"] == (4, 2)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    train_steps(m, opt, 2)
    assert calls == ["pre", "post"] * 2
    m2, clone = copy.deepcopy((m, opt))
    assert clone.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    assert train_steps(m2, clone, 2, seed=3) == train_steps(m, opt, 2, seed=3)  # it steps
    calls.clear()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and (p.grad == 0).all() for p in m.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_closure():
    m = small_model()
    opt = solo.AdamW(m.parameters())
    x = torch.randn(4, 13)

    def closure():
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))


def test_solo_beta1_rule_and_override(caplog):
    p = [torch.nn.Parameter(torch.zeros(4))]
    assert PRESETS["solo_4_2bit"](p).defaults["betas"] == (0.818, 0.999)
    assert PRESETS["solo_3bit"](p).defaults["betas"][0] == 0.692
    assert PRESETS["solo_2bit"](p).defaults["betas"][0] == 0.525
    assert PRESETS["adamw2bit"](p).defaults["betas"][0] == 0.9
    assert PRESETS["solo_2bit"](p, betas=(0.9, 0.99)).defaults["betas"] == (0.9, 0.99)
    assert PRESETS["solo_2bit"](p, betas=(None, 0.98)).defaults["betas"] == (0.525, 0.98)


@pytest.mark.parametrize("name", ["solo_4_2bit", "solo_2bit", "solo_3bit"])
def test_sparse_rows_do_not_explode(name):
    # An embedding table: rows that had a gradient once and none now must keep a v that
    # bounds m/sqrt(v). Counting the never-updated rows' zeros in the log quantizer's
    # quantile drove alpha to 0 and such rows moved by 1e5 x lr (found on DCN).
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(16, 16))
    opt = PRESETS[name]([p], lr=1.0, seed=0)
    for step in range(6):
        g = torch.zeros(16, 16)
        rows = torch.arange(4 * (step % 2), 4 * (step % 2) + 4)
        g[rows] = torch.randn(4, 16) * 1e-2
        p.grad = g
        before = p.detach().clone()
        opt.step()
        assert (p.detach() - before).abs().max() < 5.0


# --- AdaBelief's eps ---------------------------------------------------------------------

@pytest.mark.parametrize("eps_in_s", [True, False])
@pytest.mark.parametrize("fused", [None, False])
def test_adabelief_eps_in_s_matches_its_formula(eps_in_s, fused):
    """eps_in_s=True: s gets + eps every step (AdaBelief paper, Alg. 2, and its code);
    False: the reference SOLO code's AdaBeliefQ, eps only in the denominator. fp32 states
    against float64 formulas; 4-bit/2-bit states (fused or reference) against fp32 states."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = solo.AdaBelief([p], lr=0.1, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.5,
                         bits=32, quantizers="none", eps_in_s=eps_in_s, fused=fused)
    m = s = torch.zeros(2, dtype=torch.float64)
    x = p.detach().double().clone()
    for t in range(1, 6):
        g = torch.tensor([0.5, 1.5], dtype=torch.float64) * t
        p.grad = g.float()
        opt.step()
        x = x * (1 - 0.1 * 0.5)
        m = 0.9 * m + 0.1 * g
        s = 0.99 * s + 0.01 * (g - m) ** 2 + (1e-3 if eps_in_s else 0.0)
        x = x - 0.1 * (m / (1 - 0.9**t)) / ((s / (1 - 0.99**t)).sqrt() + 1e-3)
    torch.testing.assert_close(p.detach().double(), x, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [None, False])
def test_adabelief_eps_in_s_changes_low_bit_training(fused):
    """The option reaches the quantized step too: with eps_in_s the belief s never falls
    below eps, so a large eps shrinks the steps of a small-gradient tensor."""
    moves = {}
    for eps_in_s in (True, False):
        p = torch.nn.Parameter(torch.zeros(256))
        opt = PRESETS["adabelief_solo_4_2bit"]([p], lr=1e-2, eps=1e-4, seed=0, fused=fused,
                                               eps_in_s=eps_in_s)
        g = torch.Generator().manual_seed(0)
        for _ in range(10):
            p.grad = torch.randn(256, generator=g) * 1e-4 + 1e-4
            opt.step()
        moves[eps_in_s] = p.detach().abs().mean().item()
    assert moves[True] < 0.8 * moves[False], moves


def test_adabelief_presets_follow_the_reference_code():
    p = [torch.nn.Parameter(torch.zeros(4))]
    for name in ("adabelief32", "adabelief_solo_4_2bit"):
        assert PRESETS[name](p).param_groups[0]["eps_in_s"] is False
    assert solo.AdaBelief(p).param_groups[0]["eps_in_s"] is True
    with pytest.raises(TypeError):
        solo.AdamW(p, eps_in_s=False)


# --- torch's fused AdamW for full-precision states ---------------------------------------

@pytest.mark.parametrize("name", ["adamw32", "adamw_bf16"])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_full_precision_presets_use_torch_fused_within_its_tolerance(name, tensor_lr,
                                                                     monkeypatch):
    """adamw32 runs torch's fused AdamW kernel, adamw_bf16 torch's foreach ops; parameters
    and states stay within torch's own fused-vs-foreach tolerance (assert_close's defaults
    for the dtype) of the eager reference over 20 steps, with several groups (lr, wd) and a
    tensor lr; bf16 states are bit-identical (the foreach ops follow the reference's order)."""
    calls = []
    kernel = "_fused_adamw_" if name == "adamw32" else "_foreach_addcdiv_"
    real = getattr(torch, kernel)
    monkeypatch.setattr(torch, kernel, lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = []
    for fused in (None, False):
        m = small_model()
        opt = PRESETS[name](_groups(m, tensor_lr), lr=2e-3, weight_decay=0.01, fused=fused)
        losses = train_steps(m, opt, 20)
        runs.append((m, opt, losses))
    assert len(calls) == 20 * 3  # one call per group per step, fused=None only
    (ma, oa, la), (mb, ob, lb) = runs
    assert la == pytest.approx(lb, rel=1e-5)
    for p, q in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(oa.state[p][key], ob.state[q][key])
        assert oa.state[p]["exp_avg"].dtype == (torch.bfloat16 if name == "adamw_bf16"
                                                else torch.float32)
        if name == "adamw_bf16":
            assert torch.equal(p, q) and torch.equal(oa.state[p]["exp_avg"], ob.state[q]["exp_avg"])


def test_torch_fused_falls_back_for_bf16_params_and_fused_true_raises_there():
    m = small_model(dtype=torch.bfloat16)
    opt = PRESETS["adamw32"](m.parameters())
    train_steps(m, opt, 2)  # eager reference: torch's fused kernel wants fp32 states = params
    assert all(torch.isfinite(p).all() for p in m.parameters())
    with pytest.raises(RuntimeError, match="no fused kernel"):
        train_steps(m, PRESETS["adamw32"](m.parameters(), fused=True), 1)


def test_bf16_foreach_chunks_equal_the_reference():
    """Tensors spanning several foreach chunks (solo.full_precision._CHUNK elements): bit-identical."""
    shapes = [(2**20 + 3,), (5,), (2**19,), (2**19,), (7, 3)]
    runs = []
    for fused in (None, False):
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        opt = PRESETS["adamw_bf16"](ps, lr=1e-2, weight_decay=0.1, fused=fused)
        for _ in range(3):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append((ps, opt))
    (pa, oa), (pb, ob) = runs
    for p, q in zip(pa, pb):
        assert torch.equal(p, q)
        assert torch.equal(oa.state[p]["exp_avg_sq"], ob.state[q]["exp_avg_sq"])
