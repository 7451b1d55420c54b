"""Copies, pickles and checkpoints resume exactly."""

import copy
import io
import pickle

import pytest
import torch
from solo_helpers import small_model, train_steps

import solo
from solo.presets import PRESETS

# (preset, fused): the fused C++ step, the eager reference, torch's fused AdamW, AdaBelief
CASES = [("solo_4_2bit", None), ("solo_4_2bit", False), ("adamw32", None),
         ("adabelief_solo_4_2bit", None), ("adamw4bit", False)]
IDS = [f"{n}-fused={f}" for n, f in CASES]


def _params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name,fused", CASES, ids=IDS)
def test_copy_steps_and_continues_exactly(name, fused, how):
    """A deep copy or a pickle of (model, optimizer) steps and computes what the original
    computes (it used to raise AttributeError: _fused at its first step)."""
    m = small_model()
    opt = PRESETS[name](m.parameters(), lr=3e-3, seed=0, fused=fused)
    train_steps(m, opt, 3)
    if how == "deepcopy":
        m2, opt2 = copy.deepcopy((m, opt))
    else:
        m2, opt2 = pickle.loads(pickle.dumps((m, opt)))
    assert opt2.param_groups[0]["params"][0] is next(m2.parameters())
    la = train_steps(m, opt, 4, seed=5)
    lb = train_steps(m2, opt2, 4, seed=5)
    assert la == lb
    assert _params_equal(m, m2)


@pytest.mark.parametrize("at", [0, 1, 3])
@pytest.mark.parametrize("name,fused", CASES, ids=IDS)
def test_resume_from_any_step_is_bit_exact(name, fused, at):
    """A checkpoint taken after ``at`` steps (0: before the first) resumes bit for bit,
    whatever seed the fresh optimizer was built with and whatever the global RNG holds."""
    torch.manual_seed(11)  # seed=None: resolved from this at construction
    m = small_model()
    opt = PRESETS[name](m.parameters(), lr=3e-3, fused=fused)
    train_steps(m, opt, at)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    straight = train_steps(m, opt, 5, seed=2)

    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    torch.manual_seed(999)
    m2 = small_model(seed=99)
    m2.load_state_dict(ck["model"])
    opt2 = PRESETS[name](m2.parameters(), lr=3e-3, fused=fused, seed=12345)
    train_steps(m2, opt2, 1)  # a fresh optimizer that already stepped (own generator, states)
    m2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    torch.manual_seed(4321)
    resumed = train_steps(m2, opt2, 5, seed=2)
    assert straight == resumed
    assert _params_equal(m, m2)


def test_old_state_dict_without_the_new_keys_loads():
    """A checkpoint from before seed/fused/eps_in_s were group knobs (and without saved
    generators) loads; the optimizer keeps its own seed and AdaBelief its old eps rule."""
    m = small_model()
    opt = PRESETS["adabelief_solo_4_2bit"](m.parameters(), seed=3)
    train_steps(m, opt, 2)
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        for key in ("seed", "fused", "eps_in_s"):
            del group[key]
    del sd["sr_generators"]
    opt2 = PRESETS["adabelief_solo_4_2bit"](small_model().parameters(), seed=7)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert group["seed"] == 7 and group["fused"] is None
    assert group["eps_in_s"] is True  # what AdaBelief computed before the knob existed
    train_steps(small_model(), opt2, 0)
    for p in opt2.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    opt2.step()


@pytest.mark.parametrize("field", ["quantile", "min_quantizable_size", "bits", "lr", "betas"])
def test_checkpoint_missing_a_group_field_is_refused_at_load(field):
    m = small_model()
    opt = PRESETS["solo_4_2bit"](m.parameters())
    train_steps(m, opt, 1)
    sd = opt.state_dict()
    del sd["param_groups"][0][field]
    with pytest.raises(ValueError, match=f"lacks the field '{field}'"):
        PRESETS["solo_4_2bit"](small_model().parameters()).load_state_dict(sd)


@pytest.mark.parametrize("field,value", [
    ("exp_avg_scales", float("nan")), ("exp_avg_sq_scales", float("inf")),
    ("exp_avg_sq_scales", -1.0), ("exp_avg_sq_alphas", float("nan")),
    ("exp_avg_sq_alphas", 0.0), ("exp_avg_sq_alphas", 1.5), ("step", float("nan")),
])
def test_non_finite_loaded_state_is_refused_at_load(field, value):
    """A NaN in loaded scales or alphas used to be accepted and turned the parameters NaN."""
    m = small_model()
    opt = PRESETS["solo_4_2bit"](m.parameters())
    train_steps(m, opt, 1)
    sd = opt.state_dict()
    t = sd["state"][2][field]
    t.view(-1)[0] = value
    fresh = PRESETS["solo_4_2bit"](small_model().parameters())
    with pytest.raises(ValueError, match=rf"state field '{field}' of param_groups\[0\]"
                                         rf"\['params'\]\[2\]"):
        fresh.load_state_dict(sd)
    assert not fresh.state  # nothing was loaded


def test_non_finite_full_precision_state_is_refused_at_load():
    m = small_model()
    opt = PRESETS["adamw32"](m.parameters())
    train_steps(m, opt, 1)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="'exp_avg' of"):
        PRESETS["adamw32"](small_model().parameters()).load_state_dict(sd)


def test_seed_travels_with_the_checkpoint():
    m = small_model()
    opt = solo.AdamW(m.parameters(), seed=21)
    sd = opt.state_dict()
    assert [g["seed"] for g in sd["param_groups"]] == [21]
    opt2 = solo.AdamW(small_model().parameters(), seed=5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["seed"] == 21
