"""The run scaffold: everything about a training run that is not its task.

A runner opens one :class:`Run` and keeps only its data, model, loss, evaluation and loop::

    with Run(cfg, unit="images") as run:
        if run.finished:                     # a finished cell is left as it is
            return run.finished
        ...data, model, optimizer, scheduler...
        run.attach(raw_model, optimizer, scheduler, steps_per_epoch=..., total=...)
        while run.step < run.total:
            for micro_batches in batches(*divmod(run.step, steps_per_epoch)):
                run.begin_step()
                losses, n = run.train_step(model, micro_batches, loss_of, global_items)
                run.end_step(sum(s.item() for s in losses) / n, items=global_items)
                if run.eval_due(hp.eval_every): run.log_eval(evaluate(...))
                if run.stopping(): return None
        run.checkpoint()
        return run.finish(metrics)

``loss_of(micro_batch)`` gives the micro-batch's loss summed over its items and their number.
The Run owns the global batch's split and the micro-batch loop (experiments.batching), per-rank
seeding, the device and process group, the run folder and its lock, resume and checkpoints
(model, optimizer, scheduler, every rank's RNG, the step, the meters), stop signals and Slurm
requeue, timing, W&B and metrics.jsonl, the finite-loss check and the record.
"""

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments import (
    batching,
    checkpoint,
    compare,
    folders,
    meters,
    provenance,
    ranks,
    records,
    stopping,
    tracking,
    validate,
)
from experiments.errors import ConfigError, NonFiniteLoss
from experiments.optimizers import state_bytes

log = logging.getLogger(__name__)
DONE = "done.json"  # written after the record: this folder's run is finished


def now() -> float:
    return time.perf_counter()


def finished_record(cfg: DictConfig, identity: dict) -> dict | None:
    """The record of the finished run in ``cfg.run_dir``, when it and its record exist (and
    that run's ``identity`` matches this one); None otherwise, and always with overwrite=true.
    Any other run of a cell with a record was refused by validate.check_record."""
    done, record = Path(cfg.run_dir) / DONE, records.record_path(cfg)
    if cfg.get("overwrite", False) or not record.exists():
        return None
    checkpoint.check_identity(done, json.loads(done.read_text()).get("identity"), identity)
    log.info("already finished: record %s left as it is (overwrite=true resume=never "
             "trains it again)", record)
    return json.loads(record.read_text())


class Run:
    """One training run's infrastructure; see the module docstring. ``unit``: what the
    throughput counts ("images", "samples", "tokens", "target tokens"), per second."""

    def __init__(self, cfg: DictConfig, unit: str):
        validate.preflight(cfg, cfg.run_dir)  # run.py did too; in-process callers did not
        self.cfg, self.unit = cfg, unit
        self.rank, self.world, self.local_rank = ranks.init()
        self.device = ranks.pick_device(cfg.device, self.local_rank)
        ranks.set_seed(cfg.seed)  # model init: the same on every rank
        self.wall0 = now()
        self.dir = Path(cfg.run_dir)
        self.identity = checkpoint.identity(cfg, self.world)
        self.lock = folders.Lock(self.dir) if self.rank == 0 else None
        self.logger = self.bar = self.stop = None
        self.model = self.optimizer = self.scheduler = self.plan = None
        self.step, self.total, self.elapsed = 0, 0, 0.0
        self.meters, self._steps_here = meters.new(), 0
        try:
            self.finished = finished_record(cfg, self.identity)
        except BaseException:
            self.__exit__(None, None, None)  # not entered yet: free the folder here
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.bar is not None:
            self.bar.close()
        if self.logger is not None:
            self.logger.finish(exit_code=1 if exc_type else 0)
        if self.stop is not None:
            self.stop.restore()
        if self.lock is not None:
            self.lock.release()
        return False

    def data_parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around ``model`` with several ranks; ``model`` itself in a single process."""
        if self.world <= 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    def plan_batch(self, global_batch: int, micro: int | None = None,
                   unit: str = "samples", key: str = "scale.batch_size") -> batching.Plan:
        """Split the recipe's global batch (``key``) over this run's ranks into micro-batches
        of ``micro`` items (None: no accumulation); see experiments.batching. The record
        stores the plan."""
        self.plan = batching.plan(int(global_batch), self.world, micro and int(micro), unit, key)
        self.plan_key = key
        log.info("global batch %d %s = %d ranks x %d micro-batches x %d", self.plan.global_batch,
                 unit, self.world, self.plan.accum, self.plan.micro)
        return self.plan

    def attach(self, model: torch.nn.Module, optimizer, scheduler=None, *,
               steps_per_epoch: int, total: int, checkpoints: bool = True) -> None:
        """Hand over the built (unwrapped) model, optimizer and scheduler: reseed data-side
        randomness per rank, resume from ckpt.pt when there is one, start the logger.
        ``checkpoints=False`` (FSDP2 here): no checkpoints, always a fresh start."""
        if steps_per_epoch < 1 and self.plan is not None:  # the data, now known, is too small
            key, batch = self.plan_key, self.plan.global_batch
            raise ConfigError(f"{key}={batch} is more than one epoch of this run's training "
                              f"data (0 steps per epoch): use a smaller {key}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.steps_per_epoch, self.total, self.checkpoints = steps_per_epoch, total, checkpoints
        ranks.seed_data_side(self.cfg.seed, self.rank, self.world)
        path, wandb_id = self.dir / "ckpt.pt", None
        if self.rank == 0:
            (self.dir / DONE).unlink(missing_ok=True)
        if self.cfg.resume == "auto" and path.exists() and not checkpoints:
            log.warning("resume is not supported with FSDP2 here; starting fresh")
        elif self.cfg.resume == "auto" and path.exists():
            wandb_id = self._load(path)
        self.logger = tracking.Logger(self.cfg, self.step, run_id=wandb_id,
                                      enabled=self.rank == 0)
        self.stop = stopping.StopSignals()
        self.bar = tracking.progress(total, self.step)

    def _load(self, path: Path) -> str | None:
        ckpt = checkpoint.load(path)
        checkpoint.check_identity(path, ckpt["identity"], self.identity)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        checkpoint.set_rng_state(ckpt["rng"][self.rank])
        self.step, self.elapsed, self.meters = ckpt["step"], ckpt["elapsed"], ckpt["meters"]
        log.info("resumed from %s at step %d/%d", path, self.step, self.total)
        return ckpt.get("wandb_id")

    def checkpoint(self, name: str = "ckpt.pt", every_rank: bool = True) -> Path:
        """Save ckpt.pt (rank 0 writes; every rank's RNG goes in). ``every_rank=False`` when
        only this rank is here (a crash): its RNG alone."""
        path = self.dir / name
        if not self.checkpoints:
            return path
        rng = checkpoint.rng_state()
        rngs = ranks.gather(rng, self.world) if every_rank else [rng]
        if self.rank == 0:
            checkpoint.save(path, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "step": self.step,
                "data_position": {"epoch": self.step // self.steps_per_epoch,
                                  "batch": self.step % self.steps_per_epoch},
                "rng": rngs, "elapsed": self.elapsed + now() - self.wall0,
                "meters": self.meters, "wandb_id": self.logger.id if self.logger else None,
                "identity": self.identity,
                "config": OmegaConf.to_container(self.cfg, resolve=True),
            })
        return path

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop on NaN/inf: save crash.pt, note the crash beside the record (rank 0), raise
        naming the step."""
        if torch.isfinite(loss).all():
            return
        path = self.checkpoint("crash.pt", every_rank=False)
        if self.rank == 0:  # beside the record, which tables print as "Crash"
            records.write_crash_note(self.cfg, self.step, loss.item())
        raise NonFiniteLoss(
            f"non-finite loss ({loss.item()}) at step {self.step}; crash checkpoint: {path}. "
            "No record written. Lower the learning rate or check the data; `resume=auto` "
            "would continue from the last periodic checkpoint (ckpt.pt), not the crash one.")

    def begin_step(self) -> None:
        """The step starts now: its forward, backward and optimizer step count as training."""
        self._t0 = now()

    def train_step(self, model: torch.nn.Module, micro_batches: list, loss_of,
                   global_items: int, clip_grad: float | None = None) -> tuple[list, int]:
        """The step after :meth:`begin_step`: forward and backward of each micro-batch with the
        finite-loss check (batching.accumulate; ``model`` the wrapped one, ``loss_of`` and the
        result as there), clip the gradient norm to ``clip_grad`` (when set), the timed
        optimizer step, then the gradients freed."""
        losses, items = batching.accumulate(model, micro_batches, loss_of, global_items,
                                            self.world, self.check_finite)
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        ranks.synchronize(self.device)
        self._t1 = now()
        self.optimizer.step()
        ranks.synchronize(self.device)
        self._t2 = now()
        self.optimizer.zero_grad(set_to_none=True)
        return losses, items

    def end_step(self, loss: float, items: int) -> None:
        """Count the step: ``loss`` (this rank's), ``items`` (over all ranks) for throughput."""
        self.step += 1
        rate = meters.count(self.meters, loss, items, self._t2 - self._t1, self._t2 - self._t0,
                            first_here=self._steps_here == 0)
        self._steps_here += 1
        self.logger.log({"loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                         "step_time_ms": 1e3 * (self._t2 - self._t1),
                         f"{self.unit.split()[-1]}_per_s": rate}, step=self.step)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", per_s=f"{rate:.0f}")

    def eval_due(self, every: int) -> bool:
        """Whether to evaluate after this step: every ``every`` steps, and after the last."""
        return self.step % every == 0 or self.step == self.total

    def log_eval(self, metrics: dict, prefix: str = "eval") -> dict:
        """Log ``metrics`` (None values left out) as ``<prefix>/<name>``; returns them."""
        self.logger.log({f"{prefix}/{k}": v for k, v in metrics.items() if v is not None},
                        step=self.step)
        return metrics

    def stopping(self) -> bool:
        """After each step: the periodic checkpoint, then True when a stop was asked (a signal
        on any rank, or the drill step ``stop_at_step``); the stop checkpoint is then saved
        and, on a signal, the process exits. The last step never stops: it finishes."""
        if self.step >= self.total:
            return False
        every = self.cfg.ckpt_every
        if every and self.step % every == 0:
            self.checkpoint()
        signum = ranks.any_rank(self.stop.signal or 0, self.world, self.device)
        if not signum and self.step != self.cfg.stop_at_step:
            return False
        path = self.checkpoint()
        self.bar.close()
        self.logger.finish(exit_code=0)
        log.info("stopped at step %d/%d (checkpoint %s); rerun the same command to resume",
                 self.step, self.total, path)
        stopping.exit_after_stop(signum or None, self.step, self.total, path)
        return True

    def finish(self, metrics: dict, memory: dict | None = None, time_: dict | None = None,
               peak: tuple[int, str] | None = None, replicas: bool = True) -> dict:
        """Write the record of the finished run (rank 0) and mark the folder done. ``peak``:
        (bytes, kind) measured earlier (default: now); ``replicas=False`` when the model is
        sharded, not replicated."""
        self.bar.close()
        peak_bytes, peak_kind = peak or ranks.peak_memory(self.device)
        # sharded states (FSDP2): the whole model's bytes, comparable with one process's and
        # the paper's, beside this rank's; replicas (DDP) each hold all of them
        sharded = not replicas and self.world > 1
        states = state_bytes(self.optimizer, all_ranks=sharded)
        if sharded:
            memory = {"state_bytes_this_rank": state_bytes(self.optimizer), **(memory or {})}
        record = records.make_record(
            self.cfg,
            metrics={**metrics, "train_loss": self.meters["loss"]},
            memory={"state_bytes": states, "peak_bytes": peak_bytes,
                    "peak_kind": peak_kind, **(memory or {})},
            time_={**meters.time_section(self.meters, self.elapsed + now() - self.wall0,
                                         self.unit, self.total), **(time_ or {})},
            wandb_path=self.logger.path,
            replica_diff=ranks.replica_spread(self.model, self.world, self.device)
            if replicas else None,
            batch=self.plan.record() if self.plan else None,
            optimizer=provenance.optimizer_section(self.optimizer),
            kernel=provenance.kernel(self.optimizer),
        )
        record["provenance"]["data_seeds"] = [ranks.data_seed(int(self.cfg.seed), r)
                                              for r in range(self.world)]
        if self.rank == 0:
            path = records.record_path(self.cfg)
            records.write_json_atomic(path, record)
            records.write_json_atomic(self.dir / DONE, {"identity": self.identity,
                                                        "record": str(path)})
            log.info("record %s", path)
            compare.print_report(record, path)  # beside the committed record and the paper
        self.logger.finish(record)
        return record
