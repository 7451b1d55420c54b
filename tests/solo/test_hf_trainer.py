"""solo presets in the Hugging Face Trainer (examples/hf_trainer.py): a checkpoint resumes bit
for bit, the optimizer holds the bytes its bits promise, and ``solo.presets.for_hf``."""

import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch

import solo

pytest.importorskip("transformers")

_spec = importlib.util.spec_from_file_location(
    "hf_trainer", Path(__file__).resolve().parents[2] / "examples" / "hf_trainer.py")
hf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf)

STEPS, SAVE_AT = 6, 3
# fp32 states, and two presets whose v is stochastically rounded (the SR generator must resume)
PRESETS = ["adamw32", "solo_4_2bit", "solo_2bit"]
# preset -> (bits of m, bits of v, fp32 floats stored per 128-element block); None: fp32 states
BITS = {"adamw32": None, "solo_4_2bit": (4, 2, 3), "solo_2bit": (2, 2, 3)}


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    cache = {}

    def get(preset):
        if preset not in cache:
            out = tmp_path_factory.mktemp(preset)
            cache[preset] = {**hf.resume_check(preset, STEPS, str(out), save_at=SAVE_AT),
                             "out": out}
        return cache[preset]

    return get


def _inner(trainer):
    return trainer.optimizer.optimizer  # accelerate wraps the optimizer the Trainer built


@pytest.mark.parametrize("preset", PRESETS)
def test_trainer_resume_is_bit_identical(checks, preset):
    check = checks(preset)
    straight, resumed = check["straight"], check["resumed"]
    assert check["params"] == [] and check["optimizer"] == []
    assert hf.losses(straight) == hf.losses(resumed) and len(hf.losses(resumed)) == STEPS
    # the comparison covered a trained model and a full optimizer state
    assert hf.differences(straight.model.state_dict(), hf.tiny_llama().state_dict())
    opt = _inner(resumed)
    assert isinstance(opt, solo.AdamW)
    assert len(opt.state) == sum(1 for _ in resumed.model.parameters())
    assert all(int(st["step"]) == STEPS for st in opt.state.values())
    if BITS[preset] is not None:
        assert "sr_generators" in resumed.optimizer.state_dict()


def test_resume_without_the_sr_generator_is_not_exact(checks, tmp_path):
    """What makes the SR presets exact: the generator the optimizer saves in its state dict;
    a checkpoint stripped of it resumes to other parameters (so the check above can fail)."""
    check = checks("solo_4_2bit")
    ckpt = tmp_path / f"checkpoint-{SAVE_AT}"
    shutil.copytree(check["out"] / "preempted" / f"checkpoint-{SAVE_AT}", ckpt)
    sd = torch.load(ckpt / "optimizer.pt", weights_only=True)
    del sd["sr_generators"]
    torch.save(sd, ckpt / "optimizer.pt")
    resumed = hf.train("solo_4_2bit", STEPS, str(tmp_path), save_steps=SAVE_AT, resume=str(ckpt))
    assert hf.differences(check["straight"].model.state_dict(), resumed.model.state_dict())


def _promised_bytes(preset: str, numel: int) -> int:
    """State bytes of one parameter by the preset's bits alone, with its 4-byte step."""
    if BITS[preset] is None:
        return 8 * numel + 4
    bits_m, bits_v, floats_per_block = BITS[preset]
    return numel * (bits_m + bits_v) // 8 + 4 * floats_per_block * math.ceil(numel / 128) + 4


@pytest.mark.parametrize("preset", PRESETS)
def test_state_bytes_after_trainer_are_what_the_bits_promise(checks, preset):
    trainer = checks(preset)["resumed"]
    opt = _inner(trainer)
    promised = 0
    for name, p in trainer.model.named_parameters():
        held = sum(t.numel() * t.element_size() for t in opt.state[p].values()
                   if isinstance(t, torch.Tensor))
        assert held == _promised_bytes(preset, p.numel()), name
        promised += held
    assert solo.state_bytes(trainer.optimizer)["total"] == promised
    assert solo.estimate_state_bytes(trainer.model, preset)["total"] == promised


def test_trainer_takes_lr_from_for_hf_and_weight_decay_from_its_arguments(checks):
    groups = _inner(checks("solo_4_2bit")["straight"]).param_groups
    assert [g["initial_lr"] for g in groups] == [3e-3, 3e-3]  # the example's for_hf lr
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]  # TrainingArguments; none on norms
    assert groups[0]["betas"] == (solo.presets.default_beta1("solo_4_2bit"), 0.999)


def test_for_hf_returns_what_the_preset_builds():
    cls, kwargs = solo.presets.for_hf("solo_2bit", lr=1e-4, betas=(None, 0.95), block_size=64)
    assert cls is solo.AdamW
    assert kwargs == dict(bits=2, quantizers=("de", "log"), lr=1e-4, betas=(0.525, 0.95),
                          block_size=64)
    p = torch.nn.Parameter(torch.ones(3))
    ours = cls([p], **kwargs).param_groups[0]
    built = solo.presets.solo_2bit([p], lr=1e-4, betas=(None, 0.95), block_size=64).param_groups[0]
    assert {**ours, "params": None} == {**built, "params": None}


@pytest.mark.parametrize("args, kwargs, message", [
    (("solo_5bit",), dict(lr=1e-3), r"unknown preset 'solo_5bit'; valid presets: adamw32, .*solo_2bit"),
    (("adamw32",), dict(lr=1e-3, weight_decay=0.1), r"TrainingArguments\(weight_decay"),
    (("solo_4_2bit",), dict(lr=1e-3, bits=5), r"bits"),
])
def test_for_hf_refuses_at_the_call(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        solo.presets.for_hf(*args, **kwargs)


def test_for_hf_needs_lr():
    with pytest.raises(TypeError, match="lr"):
        solo.presets.for_hf("solo_4_2bit")
