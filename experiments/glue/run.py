"""RoBERTa fine-tuned on GLUE (the paper's Table 1, column "RoBERTa-L GLUE avg"), at three
scales:

- smoke: two synthetic token-id tasks (classification, regression) on a tiny random BERT.
- small: the pretrained MiniLM-L6-H384 encoder on three real sentence tasks (SST-2's own
  validation split, TREC question types, SMS spam; experiments.glue.small).
- paper: RoBERTa-Large on CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI and RTE.

One run fine-tunes every task of the recipe in turn, each from a fresh copy of the pretrained
weights with a fresh head, optimizer and schedule, and records every task's dev numbers and
their average (``glue_avg``, Table 1's number). One run rather than one per task: Table 1
prints one average per optimizer and seed, and a record must hold what it prints. The steps
of all tasks form one sequence (the run's step), so checkpoints, stops and resume work as in
any other runner; a resumed run rebuilds the task its step falls in, and the finished tasks'
numbers travel in the checkpoint's meters.
"""

import logging

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from experiments import batching, optimizers, training
from experiments.errors import ConfigError
from experiments.glue import data
from experiments.glue import model as glue_model
from experiments.glue.evaluate import average, evaluate
from experiments.scaffold import Run

log = logging.getLogger(__name__)
TASK_KEYS = ("batch_size", "lr", "epochs", "n_train", "n_test")


def settings(hp, name: str) -> dict:
    """One task's batch size, lr and epochs (the recipe's defaults unless its ``tasks`` entry
    sets them) and, for the small tasks, subset sizes."""
    own = OmegaConf.to_container(hp.tasks[name]) if hp.tasks[name] else {}
    unknown = sorted(set(own) - set(TASK_KEYS))
    if unknown:
        raise ConfigError(f"scale.tasks.{name}.{unknown[0]}: not a task setting "
                          f"({', '.join(TASK_KEYS)})")
    return {"batch_size": hp.batch_size, "lr": hp.lr, "epochs": hp.epochs, **own}


class Plan:
    """The tasks in order, their settings, raw data, and where each one's steps start in the
    run's step sequence."""

    def __init__(self, cfg: DictConfig):
        hp = cfg.scale
        self.names = list(hp.tasks)
        unknown = [n for n in self.names if n not in (data.SYNTHETIC if hp.data == "synthetic"
                                                     else data.SMALL if hp.data == "small"
                                                     else data.tasks.TASKS)]
        if unknown or not self.names:
            raise ConfigError(f"scale.tasks: {unknown or 'none'} for data={hp.data}")
        self.settings = {n: settings(hp, n) for n in self.names}
        # every task's files are read before any training: a missing one fails at once
        self.raw = {n: data.load(cfg, hp, n, self.settings[n]) for n in self.names}
        self.spe = [data.steps_per_epoch(len(self.raw[n][0]), self.settings[n]["batch_size"],
                                         f"{n}'s training data", f"scale.tasks.{n}.batch_size")
                    for n in self.names]
        self.start = [0]
        for n, spe in zip(self.names, self.spe):
            self.start.append(self.start[-1] + spe * self.settings[n]["epochs"])
        self.total = self.start[-1]

    def task_at(self, step: int) -> int:
        return max(k for k in range(len(self.names)) if self.start[k] <= step)


def resumed_step(run: Run) -> int:
    """The step the run will resume at (its checkpoint's, read lazily), 0 for a fresh one."""
    path = run.dir / "ckpt.pt"
    if run.cfg.resume != "auto" or not path.exists():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:  # damaged: attach() loads it again and names the file and the fix
        return 0


def start_task(cfg, plan: Plan, k: int, tokenizer, run: Run):
    """Task k's fresh model (pretrained encoder, new head), optimizer and schedule (linear
    warm-up over warmup_ratio of its steps, then linear decay to 0, as RoBERTa's recipe), and
    its encoded data."""
    hp, name, s = cfg.scale, plan.names[k], plan.settings[plan.names[k]]
    metric, num_labels = data.spec(hp, name)
    raw = glue_model.build(cfg, hp, num_labels, seed=cfg.seed * 1000 + k).to(run.device)
    groups = training.param_groups(raw, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=s["lr"], beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    steps = plan.start[k + 1] - plan.start[k]
    warmup = max(1, round(hp.warmup_ratio * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(
        (i + 1) / warmup, max(0.0, (steps - i) / max(1, steps - warmup))))
    train, dev = plan.raw[name]
    encoded = (data.encode(train, tokenizer, hp.max_len),
               {key: data.encode(ex, tokenizer, hp.max_len) for key, ex in dev.items()})
    run.plan_batch(s["batch_size"], hp.get("micro_batch_size"),
                   key=f"scale.tasks.{name}.batch_size")
    log.info("task %d/%d %s: %d train examples, %d steps (%d warm-up), lr %g, batch %d", k + 1,
             len(plan.names), name, len(train), steps, warmup, s["lr"], s["batch_size"])
    return raw, optimizer, scheduler, metric, encoded


def switch(run: Run, raw, optimizer, scheduler, steps_per_epoch: int) -> None:
    """Make the next task's model, optimizer and schedule the ones the run checkpoints: the
    scaffold holds one of each, and a GLUE run has one per task."""
    run.model, run.optimizer, run.scheduler = raw, optimizer, scheduler
    run.steps_per_epoch = steps_per_epoch


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="sequences") as run:
        if run.finished:
            return run.finished
        device, rank, world = run.device, run.rank, run.world
        tokenizer, pad_id = glue_model.tokenizer(cfg, hp)
        plan = Plan(cfg)
        for n in plan.names:  # every task's batch must split over the ranks: refuse it now,
            micro = hp.get("micro_batch_size")  # not after the tasks before it have trained
            batching.plan(plan.settings[n]["batch_size"], world, micro and int(micro),
                          key=f"scale.tasks.{n}.batch_size")
        k = plan.task_at(resumed_step(run))
        raw, optimizer, scheduler, metric, (train, dev) = start_task(cfg, plan, k, tokenizer, run)
        amp = training.autocast(device, hp.get("amp", False))
        run.attach(raw, optimizer, scheduler, steps_per_epoch=plan.spe[k], total=plan.total)
        done = run.meters.setdefault("glue", {})  # {task: {"final": {...}, "best": {...}}}
        model = run.data_parallel(raw)

        def loss_of(micro_batch):  # summed over the micro-batch; MSE for STS-B-like scores
            ids, mask, y = micro_batch
            with amp:
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            if metric == "pearson_spearman":
                return F.mse_loss(logits[:, 0], y.float(), reduction="sum"), len(y)
            return F.cross_entropy(logits, y, reduction="sum"), len(y)

        while run.step < plan.total:
            name, s = plan.names[k], plan.settings[plan.names[k]]
            epoch, start = divmod(run.step - plan.start[k], plan.spe[k])
            for micro_batches in data.train_batches(train, s["batch_size"], cfg.seed, epoch,
                                                    start, rank, world, run.plan.accum, pad_id,
                                                    device):
                run.begin_step()
                losses, n = run.train_step(model, micro_batches, loss_of, s["batch_size"],
                                           hp.clip_grad)
                scheduler.step()
                run.end_step(sum(x.item() for x in losses) / n, items=s["batch_size"])
                epochs_done, into_epoch = divmod(run.step - plan.start[k], plan.spe[k])
                last = run.step == plan.start[k + 1]
                if last or (into_epoch == 0 and epochs_done % hp.eval_every == 0):
                    with amp:
                        m = run.log_eval(evaluate(raw, name, metric, dev, hp.eval_batch_size,
                                                  rank, world, pad_id, device))
                    keep(done, name, m, epochs_done)
                    log.info("%s epoch %d: %s", name, epochs_done,
                             " ".join(f"{a} {b:.2f}" for a, b in m.items()))
                if last and run.step < plan.total:
                    # the next task now, before any checkpoint: one taken at the boundary
                    # holds the next task's fresh model, which a resumed run rebuilds
                    k += 1
                    raw, optimizer, scheduler, metric, (train, dev) = start_task(
                        cfg, plan, k, tokenizer, run)
                    switch(run, raw, optimizer, scheduler, plan.spe[k])
                    model = run.data_parallel(raw)
                if run.stopping():
                    return None
        run.checkpoint()
        metrics = summary(done, plan.names)
        log.info("glue_avg %.2f (best epochs %.2f)", metrics["glue_avg"],
                 metrics["glue_avg_best"])
        return run.finish(metrics)


def keep(done: dict, name: str, metrics: dict, epoch: int) -> None:
    """Store a task's latest dev numbers as its final ones, and the best so far by its GLUE
    number (fairseq's RoBERTa fine-tuning keeps its best-epoch checkpoint, so RoBERTa's
    published dev numbers are best-epoch ones; records keep both)."""
    entry = done.setdefault(name, {})
    entry["final"] = metrics
    if "best" not in entry or metrics[name] > entry["best"][name]:
        entry["best"] = {**metrics, "epoch": epoch}


def summary(done: dict, names: list) -> dict:
    """The record's metrics: every task's final numbers, its best-epoch GLUE number
    (``<task>_best``), and the averages over the tasks (``glue_avg``, ``glue_avg_best``)."""
    final = {k: v for n in names for k, v in done[n]["final"].items()}
    best = {f"{n}_best": done[n]["best"][n] for n in names}
    return {"glue_avg": average(final, names), **final, **best,
            "glue_avg_best": average(best, names, "_best")}
