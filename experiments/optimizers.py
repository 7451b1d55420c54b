"""The optimizer a config names, built with the task's hyperparameters, and its state bytes."""

import torch
from omegaconf import DictConfig


def state_bytes(optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer-state bytes {total, quantized, full_precision}; solo counts the tensors of any
    torch optimizer (peers too), so tables compare like with like."""
    from solo import state_bytes as count

    return {k: int(v) for k, v in count(optimizer).items()}


def build_optimizer(cfg: DictConfig, params, *, lr, betas, eps, weight_decay):
    """The optimizer the optim YAML names, with the task's hyperparameters.

    A null beta1 means the optimizer's own default: the SOLO presets' precision rule, 0.9 for
    the baselines and for torch.optim.
    """
    from hydra.utils import instantiate

    betas = tuple(betas)
    if cfg.get("beta1") is not None:
        betas = (float(cfg.beta1), betas[1])
    if betas[0] is None and not str(cfg.optim._target_).startswith("solo.presets."):
        betas = (0.9, betas[1])
    return instantiate(cfg.optim)(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


