"""The one entry point: compose the config, hand it to the task's runner.

    python run.py task=swin optim=solo_2bit scale=small seed=1
    python run.py task=swin scale=small scale.epochs=10      # a recipe value changed

Training lives in experiments/<task>/run.py; this file only wires things up. A mistake the user
can fix (a bad value, a folder, a finished cell) is one line ``error: ...`` and exit status 1
(``SOLO_DEBUG=1`` shows the traceback); Ctrl-C saves a checkpoint at the next step and exits
130, a second Ctrl-C exits at once (experiments.stopping).
"""

import signal
import sys

# Ctrl-C while torch loads (seconds): nothing has started, so exit quietly, not with a traceback.
signal.signal(signal.SIGINT, lambda *_: sys.exit(128 + signal.SIGINT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments import config, register_configs, stopping, validate  # noqa: E402
from experiments.errors import one_line_errors  # noqa: E402

register_configs()  # optim=<name> (solo.presets and the peers) and the run-folder resolver
signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt: see main()


@hydra.main(config_path=config.CONF_DIR, config_name=config.CONFIG_NAME,
            version_base=config.VERSION_BASE)
def main(cfg: DictConfig) -> None:
    config.resolve_runtime(cfg)  # as experiments.config.compose does: runners see plain values
    with one_line_errors(), stopping.interrupted(cfg.run_dir):
        validate.preflight(cfg, cfg.run_dir)  # again for multirun jobs, which skip the callback
        # Imported lazily so a bad name, key or value fails before the task's libraries load.
        runner = hydra.utils.get_method(cfg.task.runner)
        runner(cfg)


if __name__ == "__main__":
    with stopping.interrupted(None):  # Ctrl-C while Hydra composes the config
        main()
