"""Every optimizer a run can name: solo's presets and the peers, in one registry.

``optim=<name>`` picks one: :func:`register_optimizers` puts each entry into Hydra's ConfigStore
as the node ``{_target_: <module>.<name>, _partial_: true}`` (identity only: the task config
sets lr, beta2, eps and weight decay alike for every optimizer). There are no optimizer YAML
files; a preset is defined once, in solo/presets.py, a peer once, here.
"""

import torch

from solo.presets import PRESETS, Preset

# Peers, built through the same Preset type; their libraries are imported on first use.
torch_adamw = Preset("torch_adamw", "torch AdamW", "torch.optim.AdamW")
# Block-wise DE states with a torch.compile'd step (the first step compiles for 10-50 s on a CPU).
torchao_adamw8bit = Preset("torchao_adamw8bit", "torchao 8-bit AdamW", "torchao.optim.AdamW8bit")
# Li et al.-style 4-bit states (arXiv 2309.01507), compiled like the 8-bit one.
torchao_adamw4bit = Preset("torchao_adamw4bit", "torchao 4-bit AdamW", "torchao.optim.AdamW4bit")
# Dettmers et al.; keeps tensors under 4096 elements in fp32.
bnb_adamw8bit = Preset("bnb_adamw8bit", "bitsandbytes 8-bit AdamW", "bitsandbytes.optim.AdamW8bit")

#: The peers above by name, in the order defined: defining one is the one step that registers it.
PEERS = {v.name: v for v in list(globals().values()) if isinstance(v, Preset)}
#: Every optimizer a run can name, solo's presets first.
OPTIMIZERS = {**PRESETS, **PEERS}


def target(name: str) -> str:
    """The import path of the optimizer ``name`` (the ``_target_`` Hydra instantiates)."""
    module = "solo.presets" if name in PRESETS else __name__
    return f"{module}.{name}"


def register_optimizers() -> None:
    """Make every optimizer selectable as ``optim=<name>``; call before Hydra composes."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in OPTIMIZERS:
        store.store(group="optim", name=name, node={"_target_": target(name), "_partial_": True})


def state_bytes(optimizer: torch.optim.Optimizer, all_ranks: bool = False) -> dict:
    """Optimizer-state bytes {total, quantized, full_precision}; solo counts the tensors of any
    torch optimizer (peers too), so tables compare like with like. ``all_ranks``: the sum over
    ranks (a collective; for sharded states), else this process's bytes."""
    from solo import state_bytes as count

    return {k: int(v) for k, v in count(optimizer, all_ranks=all_ranks).items()}


def build_optimizer(cfg, params, *, lr, beta2, eps, weight_decay):
    """The optimizer ``cfg.optim`` (of the run's composed config) names, with the task's
    hyperparameters.

    beta1 is the run's ``beta1=`` override, passed through as given: null leaves it to the
    optimizer (``Preset.__call__``: SOLO's precision rule for the SOLO presets, 0.9 for the
    others); the record stores the value it ran with. ``+optim.keep_fp32=[embed,norm]`` keeps
    the parameters whose names contain one of those at fp32 states (solo presets; the groups'
    ``param_names`` give the names); without it the names are dropped and the optimizer gets
    the groups as before.
    """
    from hydra.utils import instantiate

    if not cfg.optim.get("keep_fp32"):
        params = [{k: v for k, v in g.items() if k != "param_names"} if isinstance(g, dict)
                  else g for g in params]
    beta1 = cfg.get("beta1")
    betas = (None if beta1 is None else float(beta1), beta2)
    return instantiate(cfg.optim)(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
