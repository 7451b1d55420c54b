"""The one entry point: compose the config, hand it to the task's runner.

    python run.py task=swin optim=solo_2bit scale=small seed=1

Training lives in experiments/<task>.py; this file only wires things up.
"""

import hydra
from omegaconf import DictConfig

from experiments.optimizers import register_configs

register_configs()  # optim=<name>: solo.presets and the peers, defined in Python only


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Imported lazily so a bad name or key fails before the task's libraries load.
    runner = hydra.utils.get_method(cfg.task.runner)
    runner(cfg)


if __name__ == "__main__":
    main()
