"""The one entry point: compose the config, hand it to the task's runner.

    python run.py task=swin optim=solo_2bit scale=small seed=1
    python run.py task=swin scale=small scale.epochs=10      # a recipe value changed

Training lives in experiments/<task>/run.py; this file only wires things up.
"""

import hydra
from omegaconf import DictConfig

from experiments import register_configs
from experiments.errors import RunError

register_configs()  # optim=<name> (solo.presets and the peers) and the run-folder resolver


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Imported lazily so a bad name or key fails before the task's libraries load.
    runner = hydra.utils.get_method(cfg.task.runner)
    try:
        runner(cfg)
    except RunError as err:  # the user's to fix: one line, no traceback, exit status 1
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
