"""Where a run's curves go: ``<run_dir>/metrics.jsonl`` always, W&B with logger=wandb, and a
progress bar on a terminal. Only rank 0 writes."""

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments import folders
from experiments.jsonable import plain


def progress(total: int, initial: int):
    from tqdm import tqdm

    # A bar on a terminal; nothing in logs of batch jobs (eval lines still go to the log).
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not sys.stderr.isatty())


class Logger:
    """The W&B run of this job and the local metrics.jsonl, or a no-op on ranks other than 0.

    ``step`` is where the run starts (the checkpoint's step, 0 when fresh): later rows of an
    earlier attempt are dropped so the history holds each step once.
    """

    def __init__(self, cfg: DictConfig, step: int, run_id: str | None = None,
                 enabled: bool = True):
        self.run = None
        self.history = Path(cfg.run_dir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        self.history.parent.mkdir(parents=True, exist_ok=True)
        folders.truncate_history(self.history, step)
        if cfg.logger.name == "none":
            return
        if cfg.logger.name != "wandb":
            raise ValueError(f"logger={cfg.logger.name!r}; expected wandb or none")
        import wandb

        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            dir=cfg.run_dir,
            name=f"{cfg.task.name}-{cfg.optim_name}-{cfg.scale.name}-s{cfg.seed}",
            group=cfg.task.name,
            config=OmegaConf.to_container(cfg, resolve=True),
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(silent=True),
        )

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def path(self) -> str | None:
        if self.run is None:
            return None
        return "/".join(str(p) for p in (self.run.entity, self.run.project, self.run.id) if p)

    def log(self, data: dict, step: int) -> None:
        """Append ``data`` (tensors and numpy values become numbers) as the row of ``step``."""
        if not self.enabled:
            return
        data = plain(data)
        with open(self.history, "a") as f:
            f.write(json.dumps({"step": step, **data}) + "\n")
        if self.run is not None:
            self.run.log(data, step=step)

    def finish(self, record: dict | None = None, exit_code: int = 0) -> None:
        if self.run is None:
            return
        if record is not None:
            self.run.summary.update({k: v for k, v in record.items() if k != "config"})
        self.run.finish(exit_code=exit_code)
        self.run = None
