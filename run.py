"""The one entry point: compose the config, hand it to the task's runner.

    python run.py task=swin optim=solo_2bit scale=small seed=1
    python run.py task=swin scale=small scale.epochs=10      # a recipe value changed

Training lives in experiments/<task>/run.py; this file only wires things up.
"""

import hydra
from omegaconf import DictConfig

import experiments  # noqa: F401  (registers the ${run_variant:} resolver of conf/config.yaml)
from experiments.errors import RunError
from experiments.optimizers import register_configs

register_configs()  # optim=<name>: solo.presets and the peers, defined in Python only


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
