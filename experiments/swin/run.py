"""Swin Transformer image classification (the paper's Table 1, column 1), at three scales:

- smoke: synthetic 8x8 "images" and a tiny Swin; seconds, for tests.
- small: the 10,000 real CIFAR-10 test images shipped in the bigbench sdist (8,000 to train,
  2,000 to test), a small Swin on 32x32 colour images.
- paper: Swin-T from scratch on ImageNet-1K with the official recipe (timm data utilities).

Read top to bottom: data, model, optimizer and schedule, the loop, the record. The run's
infrastructure (seeding, resume, checkpoints, logging, the record) is experiments.scaffold.
"""

import logging

import torch
from omegaconf import DictConfig

from experiments import optimizers, training
from experiments.scaffold import Run
from experiments.swin import data
from experiments.swin import model as swin_model
from experiments.swin.evaluate import evaluate

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="images") as run:
        if run.finished:
            return run.finished
        device, world = run.device, run.world
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        build = data.folder_data if hp.data == "imagenet" else data.tensor_data
        steps_per_epoch, train_iter, eval_batches, mixup = build(cfg, hp, device, run.rank,
                                                                 world, plan.accum)
        total = hp.epochs * steps_per_epoch
        raw = swin_model.build(hp).to(device)
        optimizer, scheduler = optimizer_and_schedule(cfg, raw, steps_per_epoch, total)
        criterion = loss_function(hp, mixup)
        amp = training.autocast(device, hp.get("amp", False))
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        def loss_of(micro_batch):
            x, y = micro_batch
            with amp:
                loss = criterion(model(x), y)  # the micro-batch's mean
            return loss * len(x), len(x)

        metrics = {}
        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for micro_batches in train_iter(epoch, start):
                run.begin_step()
                scheduler.step_update(run.step)
                losses, n = run.train_step(model, micro_batches, loss_of, hp.batch_size,
                                           hp.clip_grad)
                loss = sum(s.item() for s in losses) / n  # this rank's mean
                run.end_step(loss, items=hp.batch_size)
                if run.eval_due(hp.eval_every):
                    metrics = run.log_eval(evaluate(raw, eval_batches, amp, world, device))
                    metrics.update(keep_best(run, metrics, "top1"))
                    log.info("step %d/%d epoch %d loss %.4f top1 %.2f top5 %.2f", run.step,
                             total, epoch, loss, metrics["top1"], metrics["top5"])
                if run.stopping():
                    return None
        if not metrics:  # resumed at the last step: evaluate again for the record
            metrics = evaluate(raw, eval_batches, amp, world, device)
            metrics.update(keep_best(run, metrics, "top1"))
        run.checkpoint()
        log.info("top1 %.2f top5 %.2f", metrics["top1"], metrics["top5"])
        return run.finish(metrics)


def optimizer_and_schedule(cfg: DictConfig, model: torch.nn.Module, steps_per_epoch: int,
                           total: int):
    """The optimizer the YAML names, with the task's hyperparameters (the same for every
    optimizer), and timm's per-step cosine schedule with linear warm-up."""
    from timm.scheduler import CosineLRScheduler

    hp = cfg.scale
    groups = training.param_groups(model, hp.weight_decay, skip=model.no_weight_decay())
    # lr is given for batch lr_base_batch and scales linearly with it (Goyal et al.).
    lr = hp.lr * hp.batch_size / hp.get("lr_base_batch", hp.batch_size)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=lr, beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    warmup = hp.get("warmup_steps") or hp.get("warmup_epochs", 0) * steps_per_epoch
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=hp.min_lr,
                                  warmup_t=warmup, warmup_lr_init=hp.get("warmup_lr", hp.min_lr),
                                  t_in_epochs=False)
    return optimizer, scheduler


def loss_function(hp, mixup) -> torch.nn.Module:
    """Soft-target cross-entropy under Mixup/CutMix (their targets are mixed), else
    cross-entropy with the recipe's label smoothing; both the mean over the batch."""
    if mixup is None:
        return torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()


def keep_best(run: Run, metrics: dict, key: str) -> dict:
    """The best evaluation so far by ``key`` (higher is better), kept in the run's meters
    across resume: its metrics as ``<name>_best`` and its step as ``best_step``. The official
    Swin code reports this maximum over epochs; records keep the final numbers beside it."""
    best = run.meters.get("best")
    if best is None or metrics[key] > best[key]:
        best = run.meters["best"] = {**metrics, "step": run.step}
    return {**{f"{k}_best": v for k, v in best.items() if k != "step"},
            "best_step": best["step"]}
