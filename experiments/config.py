"""``conf/`` as run.py composes it, in one place: where the configs are, what must be registered
before Hydra reads them, and the keys whose values Hydra only knows while it runs a job.

run.py hands these to ``@hydra.main`` and calls :func:`resolve_runtime` in the job; code
outside a job (tests, the sweep and figure scripts) calls :func:`compose`, which gives the same
config for the same overrides.
"""

import os

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments import register_configs

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
CONFIG_NAME = "config"
VERSION_BASE = "1.3"
#: Keys of conf/config.yaml that read Hydra's state of the job (``${hydra:...}``): the
#: optimizer's group choice, the run folder and the folder of the extra overrides.
RUNTIME_KEYS = ("optim_name", "run_dir", "variant")


def resolve_runtime(cfg: DictConfig) -> None:
    """Replace :data:`RUNTIME_KEYS` by their values. Hydra's state is one per process (the next
    job or :func:`compose` replaces it), so a config that still read it could change later."""
    with open_dict(cfg):
        for key in RUNTIME_KEYS:
            cfg[key] = OmegaConf.select(cfg, key, throw_on_missing=True)


def compose(overrides=(), run_dir=None) -> DictConfig:
    """The config run.py's job gets for these command-line overrides, without running a job:
    :data:`RUNTIME_KEYS` resolved, the ``hydra`` node dropped. ``run_dir``: the run folder
    (default: the one a single run makes, ``hydra.run.dir`` made absolute, not created)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    GlobalHydra.instance().clear()  # a job run in this process (tests call run.py) leaves it set
    with initialize_config_dir(config_dir=CONF_DIR, version_base=VERSION_BASE):
        cfg = hydra_compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # hydra.run.dir reads it
    with read_write(cfg.hydra.runtime):  # what Hydra sets as it starts a job
        cfg.hydra.runtime.output_dir = os.path.abspath(
            run_dir if run_dir is not None else cfg.hydra.run.dir)
    HydraConfig.instance().set_config(cfg)
    resolve_runtime(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg
