"""Per-parameter fp32 states by name (solo/overrides.py)."""

import copy

import pytest
import torch

import solo


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 32)
        self.body = torch.nn.Linear(32, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.lm_head = torch.nn.Linear(32, 50, bias=False)

    def forward(self, x):
        return self.lm_head(self.norm(torch.tanh(self.body(self.embed(x)))))


def _train(model, opt, steps=3):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 50, (4, 6), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


KEEP = ("embed", "lm_head", "norm")


def test_kept_parameters_get_fp32_states_in_their_own_group():
    model = Tiny()
    opt = solo.presets.build("solo_4_2bit", model.named_parameters(), keep_fp32=KEEP, lr=1e-3)
    _train(model, opt)
    assert [g["param_names"] for g in opt.param_groups] == [
        ["body.weight", "body.bias"], ["embed.weight", "norm.weight", "norm.bias",
                                       "lm_head.weight"]]
    kept = opt.param_groups[1]
    assert kept["keep_fp32"] and kept["quantizers"] == ("none", "none")
    for p in kept["params"]:
        assert opt.state[p]["exp_avg"].dtype == torch.float32
    assert "exp_avg_sq_codes" in opt.state[model.body.weight]
    saved = opt.state_dict()["param_groups"]
    assert saved[1]["param_names"] == kept["param_names"] and saved[1]["keep_fp32"]
    # the memory accounting predicts the split
    est = solo.estimate_state_bytes(Tiny(), "solo_4_2bit", keep_fp32=KEEP)
    assert solo.state_bytes(opt) == est
    assert est != solo.estimate_state_bytes(Tiny(), "solo_4_2bit")


def test_groups_keep_their_other_knobs():
    model = Tiny()
    groups = [{"params": [("body.weight", model.body.weight), ("norm.weight", model.norm.weight)],
               "weight_decay": 0.1}, {"params": [("embed.weight", model.embed.weight)],
                                      "weight_decay": 0.0}]
    out = solo.keep_fp32(groups, ("norm",))
    assert [(g["param_names"], g["weight_decay"], g.get("keep_fp32")) for g in out] == [
        (["body.weight"], 0.1, None), (["embed.weight"], 0.0, None),
        (["norm.weight"], 0.1, True)]


def test_a_checkpoint_with_other_kept_parameters_is_refused_naming_one():
    model = Tiny()
    opt = solo.presets.build("solo_4_2bit", model.named_parameters(), keep_fp32=KEEP)
    _train(model, opt)
    saved = copy.deepcopy(opt.state_dict())
    other = solo.presets.build("solo_4_2bit", Tiny().named_parameters(), keep_fp32=("embed",))
    with pytest.raises(ValueError, match=r"parameter 'norm.weight': param_groups\[1\], fp32 "
                                         r"states \(keep_fp32\) in the checkpoint"):
        other.load_state_dict(saved)
    twin_model = Tiny()
    twin = solo.presets.build("solo_4_2bit", twin_model.named_parameters(), keep_fp32=KEEP)
    twin.load_state_dict(saved)  # the same split loads, and resumes exactly
    twin_model.load_state_dict(model.state_dict())
    _train(model, opt, 2)
    _train(twin_model, twin, 2)
    for p, q in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("params,patterns,match", [
    (lambda m: m.parameters(), KEEP, "needs parameter names"),
    (lambda m: m.named_parameters(), ("emebd",), "pattern 'emebd' matches no parameter"),
])
def test_misuse_is_one_clear_line(params, patterns, match):
    with pytest.raises(ValueError, match=match):
        solo.presets.solo_4_2bit(params(Tiny()), keep_fp32=patterns)


def test_a_peer_refuses_keep_fp32():
    from experiments.optimizers import OPTIMIZERS

    with pytest.raises(ValueError, match="needs a solo optimizer"):
        OPTIMIZERS["torch_adamw"](Tiny().named_parameters(), keep_fp32=KEEP)
