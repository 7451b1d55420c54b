"""Every knob is validated wherever it can enter (docs/optimizers.md, "Validation and failures")."""

import re

import pytest
import torch
from solo_helpers import small_model

import solo
from solo.presets import PRESETS

# knob, bad value, message fragment: each raises ValueError (torch.optim's message style)
BAD = [
    ("lr", -1.0, "Invalid learning rate"),
    ("lr", float("nan"), "Invalid learning rate"),
    ("eps", float("nan"), "Invalid epsilon"),
    ("weight_decay", -0.1, "Invalid weight_decay"),
    ("betas", (None, 0.999), "Invalid beta parameter at index 0"),
    ("betas", (0.9, 1.0), "Invalid beta parameter at index 1"),
    ("bits", 4.0, "Invalid bits"),
    ("bits", True, "Invalid bits"),
    ("bits", 5, "Invalid bits"),
    ("quantizers", 3, "Invalid quantizer"),
    ("quantizers", ("log", "log"), "Quantizer .log. is for unsigned"),
    ("block_size", True, "Invalid block_size"),
    ("block_size", 1.5, "Invalid block_size"),
    ("block_size", 0, "Invalid block_size"),
    ("quantile", 0.0, "Invalid quantile"),
    ("quantile", 1.01, "Invalid quantile"),
    ("quantile", 1.5, "Invalid quantile"),
    ("quantile", 2.0, "Invalid quantile"),
    ("quantile", float("nan"), "Invalid quantile"),
    ("min_quantizable_size", -1, "Invalid min_quantizable_size"),
    ("seed", "a", "Invalid seed"),
    ("seed", 2**64, "Invalid seed"),
    ("fused", "yes", "Invalid fused"),
]
IDS = [f"{k}={v!r}" for k, v, _ in BAD]


def _p(n=300):
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    return p


@pytest.mark.parametrize("key,value,match", BAD, ids=IDS)
def test_bad_knob_in_constructor(key, value, match):
    with pytest.raises(ValueError, match=match):
        solo.AdamW([_p()], **{key: value})


@pytest.mark.parametrize("key,value,match", BAD, ids=IDS)
def test_bad_knob_in_a_group_dict(key, value, match):
    with pytest.raises(ValueError, match=r"param_groups\[0\]: " + match):
        PRESETS["solo_4_2bit"]([{"params": [_p()], key: value}])
    opt = PRESETS["solo_4_2bit"]([_p()])
    with pytest.raises(ValueError, match=r"param_groups\[1\]: " + match):
        opt.add_param_group({"params": [_p()], key: value})
    assert len(opt.param_groups) == 1  # the refused group was not added


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("key,value,match", BAD, ids=IDS)
def test_bad_knob_set_between_steps(key, value, match, fused):
    p = _p()
    opt = PRESETS["solo_4_2bit"]([p], fused=fused)
    opt.step()
    before = p.detach().clone()
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=match):
        opt.step()
    assert torch.equal(p, before)


@pytest.mark.parametrize("key,value,match", BAD, ids=IDS)
def test_bad_knob_in_a_checkpoint(key, value, match):
    opt = PRESETS["solo_4_2bit"]([_p()])
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0][key] = value
    fresh = PRESETS["solo_4_2bit"]([_p()])
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("key,value,old", [
    ("bits", (8, 4), (4, 2)),
    ("bits", 2, (4, 2)),
    ("block_size", (64, 64), (128, 128)),
    ("block_size", 2**40, (128, 128)),
    ("quantizers", ("linear", "log"), ("de", "log")),
    ("min_quantizable_size", 10**6, 0),
    ("seed", 4, 3),
])
def test_state_format_fixed_once_created(key, value, old, fused):
    """Changing a knob that fixes the stored format under existing states is refused, naming
    the knob, the old and the new value (it used to corrupt memory in the fused step)."""
    p = _p(100_000)
    opt = PRESETS["solo_4_2bit"]([p], fused=fused, seed=3)
    opt.step()
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=re.escape(f"['{key}'] changed from {old!r} to")):
        opt.step()
    opt.param_groups[0][key] = old  # restoring the value is the fix the message names
    opt.step()


def test_knobs_that_may_change_between_steps():
    p = _p()
    opt = PRESETS["solo_4_2bit"]([p])
    opt.step()
    for key, value in [("lr", 1e-4), ("betas", [0.5, 0.9]), ("eps", 1e-6),
                       ("weight_decay", 0.1), ("quantile", 0.2), ("fused", False)]:
        opt.param_groups[0][key] = value
        opt.step()
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)  # normalised in place


def test_a_group_may_give_bits_as_one_value():
    """``bits=2`` in a group dict (the constructor accepts one value) used to raise
    TypeError at step."""
    p, q = _p(), _p()
    opt = solo.AdamW([{"params": [p], "bits": 2, "quantizers": "de"}, {"params": [q]}])
    assert opt.param_groups[0]["bits"] == (2, 2)
    assert opt.param_groups[0]["quantizers"] == ("de", "de")
    opt.step()
    assert opt.state[p]["exp_avg_codes"].numel() == 75  # 300 2-bit codes


def test_every_group_shares_the_seed():
    with pytest.raises(ValueError, match="seed"):
        solo.AdamW([{"params": [_p()]}, {"params": [_p()], "seed": 5}], seed=4)


def test_betas_none_on_the_class_is_a_value_error():
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0: None"):
        solo.AdamW([_p()], betas=(None, 0.999))
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: None"):
        solo.AdaBelief([_p()], betas=(0.9, None))


def test_params_as_a_set_are_refused_like_torch():
    p = _p()
    with pytest.raises(TypeError, match="ordered collections"):
        solo.AdamW([{"params": {p}}])
    with pytest.raises(TypeError, match="ordered collections"):
        torch.optim.AdamW([{"params": {p}}])


@pytest.mark.parametrize("name", ["solo_4_2bit", "adamw32", "adabelief_solo_4_2bit"])
def test_meta_parameters_step_like_torch(name):
    """torch.optim steps meta tensors (shapes only); so do we, with the states' shapes."""
    with torch.device("meta"):
        m = small_model()
    opt = PRESETS[name](m.parameters())
    for p in m.parameters():
        p.grad = torch.empty_like(p)
    opt.step()
    opt.step()
    for p in m.parameters():
        st = opt.state[p]
        assert st["step"].item() == 2
        spec = opt.state_spec(opt.param_groups[0], p)
        assert {k: (tuple(v.shape), v.dtype) for k, v in st.items()} == {
            k: (tuple(s), d) for k, (s, d) in spec.items()}


def test_seed_none_is_resolved_at_construction():
    torch.manual_seed(1234)
    opt = solo.AdamW([_p()])
    assert opt.param_groups[0]["seed"] == 1234
    assert opt.state_dict()["param_groups"][0]["seed"] == 1234



@pytest.mark.parametrize("name", ["solo_4_2bit", "adamw32", "adamw_bf16"])
@pytest.mark.parametrize("fused", [None, False])
def test_a_parameter_resized_under_its_states_is_named(name, fused):
    """A parameter whose shape changed after its states were made: refused before any change,
    naming the parameter, its shape and the state's (it used to say only
    ``m_codes has 150 elements, expected 250``)."""
    keep = _p(10)
    p = _p(250)
    opt = PRESETS[name]([{"params": [keep]}, {"params": [_p(4), p]}], fused=fused)
    opt.step()
    p.data, p.grad = torch.randn(15, 10), torch.randn(15, 10)
    before = keep.detach().clone()
    with pytest.raises(RuntimeError, match=re.escape(
            "param_groups[1]['params'][1] has shape (15, 10) but its optimizer states were "
            "made for another shape")) as e:
        opt.step()
    assert "restore its shape" in str(e.value) and "\n" not in str(e.value)
    assert torch.equal(keep, before)  # nothing was updated
    del opt.state[p]  # the fix the message names
    opt.step()


def test_fused_true_names_the_parameter_and_the_reason():
    p = torch.nn.Parameter(torch.randn(256, dtype=torch.bfloat16))
    p.grad = torch.randn(256, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=re.escape(
            "no fused kernel for param_groups[0]['params'][0] (shape (256,)): its dtype is "
            "torch.bfloat16; the kernel steps float32; use fused=None")):
        PRESETS["solo_4_2bit"]([p], fused=True).step()
    q = torch.nn.Parameter(torch.randn(256))
    q.grad = torch.randn(256)
    with pytest.raises(RuntimeError, match="block sizes \\(128, 256\\); the kernel needs equal"):
        PRESETS["solo_4_2bit"]([q], block_size=(128, 256), fused=True).step()
