"""Config composition, names and keys: what a user typing `run.py ...` relies on."""

import re
from pathlib import Path

import pytest
import torch
from harness_utils import ROOT, run_py
from omegaconf import OmegaConf

import solo
from experiments.config import compose
from experiments.optimizers import OPTIMIZERS

TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
OPTIMS = sorted(OPTIMIZERS)  # the registry: solo.presets and the peers
SCALES = sorted(p.stem for p in (ROOT / "conf" / "scale").glob("*.yaml"))
# Every task has these scales; others (medium) exist for the tasks with a recipe for them.
CORE_SCALES = ["paper", "small", "smoke"]
RECIPES = sorted(p.stem for p in (ROOT / "conf" / "recipe").glob("*.yaml"))


def test_the_groups_are_not_empty():
    assert "swin" in TASKS and {"adamw32", "solo_4_2bit", "torch_adamw"} <= set(OPTIMS)
    assert set(CORE_SCALES) <= set(SCALES) and "medium" in SCALES


@pytest.mark.parametrize("scale", CORE_SCALES)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_the_core_scales(task, scale):
    assert f"{task}_{scale}" in RECIPES


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes(recipe):
    task, scale = recipe.rsplit("_", 1)
    assert task in TASKS and scale in SCALES, f"conf/recipe/{recipe}.yaml: no such task/scale"
    cfg = compose([f"task={task}", f"scale={scale}"])
    assert cfg.task.name == task and cfg.scale.name == scale
    assert {"epochs", "lr", "beta2", "eps", "weight_decay", "eval_every"} <= set(cfg.scale)
    assert compose([f"task={task}"]).scale.name == "small"
    assert cfg.optim_name == "solo_4_2bit"


def test_a_scale_without_a_recipe_for_the_task_names_it():
    missing = next(f"{t}_{s}" for t in TASKS for s in SCALES if f"{t}_{s}" not in RECIPES)
    task, scale = missing.rsplit("_", 1)
    res = run_py(f"task={task}", f"scale={scale}", "optim=adamw32")
    assert res.returncode != 0 and f"recipe/{missing}" in res.stderr


@pytest.mark.parametrize("overrides, folder", [
    (["scale.epochs=10", "+optim.quantile=0.5"], "epochs=10,quantile=0.5"),
    (["+optim.quantile=0.5", "scale.epochs=10", "seed=2", "logger=none"],
     "epochs=10,quantile=0.5"),
    (["beta1=0.6", "task.data_dir=/data/x", "resume=never"], "beta1=0.6"),
    (["scale.lr=1", "+optim.lr=2"], "optim.lr=2,scale.lr=1"),  # ambiguous: prefixes kept
    ([], ""),
])
def test_override_folders_are_short_sorted_and_leave_out_paths(overrides, folder):
    assert compose(["task=swin", "optim=adamw32", *overrides]).variant == folder


def test_a_recipe_value_is_a_readable_override():
    cfg = compose(["task=swin", "scale=small", "scale.epochs=3"])
    assert cfg.scale.epochs == 3 and cfg.scale.name == "small"


# torchao peers compile their step (10-50 s on a CPU): run them with the slow tests.
STEPPED = [pytest.param(o, marks=pytest.mark.slow) if o.startswith("torchao") else o
           for o in OPTIMS]


@pytest.mark.parametrize("optim", STEPPED)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_optim_pair_composes_and_steps(task, optim):
    from experiments import optimizers, training

    cfg = compose([f"task={task}", f"optim={optim}", "scale=smoke"])
    assert cfg.optim_name == optim  # the name in records and outputs is the file's stem
    hp = cfg.scale
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.LayerNorm(256),
                                torch.nn.Linear(256, 4))
    # Exactly the call the runners make: identity from the YAML, hyperparameters from the task.
    opt = optimizers.build_optimizer(cfg, training.param_groups(model, hp.weight_decay), lr=hp.lr,
                                     beta2=hp.beta2, eps=hp.eps, weight_decay=hp.weight_decay)
    assert isinstance(opt, torch.optim.Optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    sizes = optimizers.state_bytes(opt)
    assert sizes["total"] == sizes["quantized"] + sizes["full_precision"] > 0
    if isinstance(opt, solo.optim._QuantizedAdam):
        # the bits (and block size) the config's name promises are what the optimizer stores
        codecs = opt.codecs(opt.param_groups[0], torch.empty(8192))
        assert [c.bits for c in codecs] == promised_bits(optim)
        block = re.search(r"_b(\d+)$", optim)
        if block:
            assert {c.block_size for c in codecs} == {int(block[1])}


def promised_bits(name):
    """[m bits, v bits] a preset's name promises: adamw32, adamw_bf16, solo_4_2bit, ..."""
    core = re.sub(r"_(rank1|b\d+)$", "", name).split("_", 1)[-1]
    bits = [int(b) for b in re.findall(r"\d+", core)]
    return bits if len(bits) == 2 else bits * 2


def test_unknown_task_exits_nonzero_and_lists_the_valid_ones():
    out = run_py("task=nope")
    assert out.returncode != 0
    assert "task/nope" in out.stderr and all(t in out.stderr for t in TASKS)


def test_unknown_optim_exits_nonzero_and_lists_the_valid_ones():
    out = run_py("optim=adamw3bit")
    assert out.returncode != 0
    assert "optim/adamw3bit" in out.stderr and all(o in out.stderr for o in OPTIMS)


@pytest.mark.parametrize("key", ["seeed", "scale.lrr"])
def test_a_typo_in_a_key_names_the_key(key):
    out = run_py(f"{key}=1")
    assert out.returncode != 0 and key.split(".")[-1] in out.stderr


@pytest.mark.parametrize("optim", OPTIMS)
def test_optimizer_configs_hold_only_the_identity(optim):
    # Hyperparameters live in the task config so every optimizer gets the same ones.
    spec = compose([f"optim={optim}"]).optim
    assert dict(spec) == {"_target_": spec._target_, "_partial_": True}
    assert spec._target_ == (f"solo.presets.{optim}" if optim in solo.PRESETS
                             else f"experiments.optimizers.{optim}")


def test_records_dir_defaults_to_results_runs(monkeypatch):
    monkeypatch.delenv("SOLO_RECORDS_DIR", raising=False)
    assert Path(compose().records_dir) == Path("results/runs")


@pytest.mark.parametrize("optim, default", [("solo_2bit", 0.525), ("adamw4bit", 0.9)])
def test_beta1_override_replaces_the_default_beta1(optim, default):
    from experiments import optimizers

    params = [torch.nn.Parameter(torch.zeros(4))]
    for extra, beta1 in [([], default), (["beta1=0.6"], 0.6)]:
        cfg = compose([f"optim={optim}", *extra])
        opt = optimizers.build_optimizer(cfg, params, lr=1e-3, beta2=0.999, eps=1e-8,
                                         weight_decay=0.0)
        assert opt.param_groups[0]["betas"][0] == pytest.approx(beta1, abs=1e-3)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_leave_beta1_to_the_optimizer(recipe):
    """beta1 has one home, the optimizer (a preset's default for a null beta1), and one
    override, the run's `beta1=`, passed through as given: a recipe gives beta2 alone."""
    keys = OmegaConf.load(ROOT / "conf" / "recipe" / f"{recipe}.yaml")
    assert "beta1" not in keys and "betas" not in keys
    assert 0 < keys.beta2 < 1


def test_pair_knobs_from_the_command_line_reach_the_optimizer():
    from experiments import optimizers

    cfg = compose(["optim=solo_4_2bit", "+optim.block_size=[128,2048]",
                   "+optim.quantizers=[de,linear]"])
    opt = optimizers.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(4))], lr=1e-3,
                                     beta2=0.999, eps=1e-8, weight_decay=0.0)
    assert opt.param_groups[0]["block_size"] == (128, 2048)
    assert opt.param_groups[0]["quantizers"] == ("de", "linear")
