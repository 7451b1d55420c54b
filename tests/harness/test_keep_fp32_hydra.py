"""`+optim.keep_fp32=[...]` reaches the optimizer through the harness's registry."""

import torch

from experiments import optimizers, training
from experiments.config import compose


def _build(overrides):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8),
                                torch.nn.LayerNorm(8))
    cfg = compose(["optim=solo_4_2bit", *overrides])
    return optimizers.build_optimizer(cfg, training.param_groups(model, 0.1), lr=1e-3,
                                      beta2=0.999, eps=1e-8, weight_decay=0.1)


def test_keep_fp32_from_the_command_line():
    opt = _build(["+optim.keep_fp32=[0.weight,'2.']"])  # quoted: 2. is a float to Hydra
    assert [g["param_names"] for g in opt.param_groups] == [
        ["1.weight"], ["1.bias"], ["0.weight"], ["2.weight", "2.bias"]]
    assert [g.get("keep_fp32", False) for g in opt.param_groups] == [False, False, True, True]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0, 0.1, 0.0]


def test_without_it_the_groups_are_as_before():
    opt = _build([])
    assert len(opt.param_groups) == 2
    assert all("param_names" not in g for g in opt.param_groups)
