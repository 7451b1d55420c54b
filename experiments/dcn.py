"""Deep & Cross Network click prediction (the paper's Table 1, DCN column: AUC and LogLoss),
at three scales:

- smoke: synthetic ids with a planted logistic model, a tiny DCN; seconds, for tests.
- small: MovieLens-100k (from the recbole wheel) as click prediction, rating >= 4 is a click.
- paper: DCN from scratch on Criteo (Kaggle Display Advertising TSV), data path given.

Embeddings go through torchrec (EmbeddingBagCollection over a KeyedJaggedTensor), the path
that scales to torchrec's sharding on GPUs. Read top to bottom: model, data, evaluation, run.
"""

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import common, optimizers, records, recsys_data

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- model


def cross(x0: torch.Tensor, xl: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One cross layer (Wang et al. 2017, eq. 3): x_{l+1} = x0 (x_l . w) + b + x_l, a rank-one
    feature interaction of degree l + 2 at the cost of 2d parameters."""
    return x0 * (xl @ w).unsqueeze(-1) + b + xl


class DCN(torch.nn.Module):
    """Embeddings + dense features -> x0; a cross network and an MLP side by side on x0; their
    outputs concatenated into a linear head giving one click logit per row."""

    def __init__(self, cardinality: dict, n_dense: int, embedding_dim: int, cross_layers: int,
                 mlp: list, device=None):
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        # MEAN pooling: a multi-id feature (genres) is the average of its ids' embeddings, so
        # its scale does not grow with the number of ids; single ids are unaffected.
        self.ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"t_{key}", embedding_dim=embedding_dim,
                               num_embeddings=int(rows), feature_names=[key],
                               pooling=PoolingType.MEAN)
            for key, rows in cardinality.items()], device=device)
        d = n_dense + embedding_dim * len(cardinality)
        self.cross_w = torch.nn.Parameter(torch.randn(cross_layers, d, device=device) / d**0.5)
        self.cross_b = torch.nn.Parameter(torch.zeros(cross_layers, d, device=device))
        layers, width = [], d
        for h in mlp:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.deep = torch.nn.Sequential(*layers).to(device)
        self.head = torch.nn.Linear(d + width, 1, device=device)

    def forward(self, dense: torch.Tensor, kjt) -> torch.Tensor:
        x0 = torch.cat([dense, self.ebc(kjt).values()], dim=1)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = cross(x0, x, w, b)
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(1)


# ---------------------------------------------------------------- data


def load_splits(cfg, hp) -> tuple[dict, dict, dict]:
    """(train, val, test) tables; every split is fixed, whatever the run seed."""
    if hp.data == "synthetic":
        table = recsys_data.synthetic(hp.n_train + 2 * hp.n_test)
        idx = list(torch.arange(len(table["label"])).split([hp.n_train, hp.n_test, hp.n_test]))
    elif hp.data == "movielens_100k":
        table = recsys_data.load_movielens(cfg.task.data_dir)
        idx = recsys_data.random_split(len(table["label"]), hp.split,
                                       recsys_data.ML100K_SPLIT_SEED)
    elif hp.data == "criteo":
        table = recsys_data.load_criteo(cfg.task.data_dir, hp.min_count, cfg.task.get("cache_dir"))
        idx = recsys_data.criteo_split(len(table["label"]))
    else:
        raise ValueError(f"task.scales.{cfg.scale.name}.data={hp.data!r}; expected synthetic, "
                         "movielens_100k or criteo")
    return tuple(recsys_data.split(table, i) for i in idx)


def to_device(part: dict, device):
    return (part["dense"].float().to(device), recsys_data.to_kjt(part["sparse"]).to(device),
            part["label"].float().to(device))


def train_batches(train, batch, seed, epoch, start, rank, world, device):
    """Batches of one epoch from step `start` on; each rank takes its share of the global
    batch. Only (seed, epoch, step) decide them, so resuming mid-epoch is exact."""
    order = common.epoch_order(len(train["label"]), seed, epoch)
    for i in range(start, len(order) // batch):
        idx = order[i * batch : (i + 1) * batch][rank::world]
        yield to_device(recsys_data.split(train, idx), device)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, part, batch, device, world, rank) -> dict:
    """AUC (percent, torchmetrics) and LogLoss (mean binary cross-entropy, torch) of one split;
    with several ranks each scores a shard and the scores are gathered before the metrics."""
    from torchmetrics.functional.classification import binary_auroc

    model.eval()
    n = len(part["label"])
    shard = torch.arange(rank, n, world)
    logits = [model(*to_device(recsys_data.split(part, shard[i : i + batch]), device)[:2])
              for i in range(0, len(shard), batch)]
    logits = torch.cat(logits).float() if logits else torch.zeros(0, device=device)
    if world > 1:  # shards differ in size by at most one row: pad with NaN, gather, drop
        size = -(-n // world)
        padded = torch.full((size,), float("nan"), device=device)
        padded[: len(logits)] = logits
        gathered = [torch.empty_like(padded) for _ in range(world)]
        torch.distributed.all_gather(gathered, padded)
        logits = torch.stack(gathered, 1).flatten()  # row j*world + r came from rank r
        logits = logits[~torch.isnan(logits)]
    labels = part["label"].float().to(device)
    model.train()
    return {"auc": 100 * binary_auroc(torch.sigmoid(logits), labels.long()).item(),
            "logloss": F.binary_cross_entropy_with_logits(logits, labels).item()}


# ---------------------------------------------------------------- the run


def run(cfg: DictConfig) -> dict | None:
    hp = cfg.task.scales[cfg.scale.name]
    rank, world, local_rank = common.init_distributed()
    device = common.pick_device(cfg.device, local_rank)
    common.set_seed(cfg.seed)
    wall0 = common.now()

    train, val, test = load_splits(cfg, hp)
    steps_per_epoch = len(train["label"]) // hp.batch_size
    total = hp.epochs * steps_per_epoch
    log.info("dcn %s: %d train / %d val / %d test rows, click rate %.3f, %d steps", hp.data,
             len(train["label"]), len(val["label"]), len(test["label"]),
             train["label"].mean().item(), total)

    model = DCN(train["cardinality"], train["dense"].shape[1], hp.embedding_dim,
                hp.cross_layers, list(hp.mlp), device=device)
    groups = common.param_groups(model, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                       weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: common.warmup_cosine(s, total, hp.warmup_steps, hp.min_lr / hp.lr))
    raw = model
    if world > 1:
        # Plain DDP replicates the tables; torchrec's DistributedModelParallel would shard them.
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)

    # ---- resume
    step, elapsed, wandb_id = 0, 0.0, None
    resume = common.find_resume(cfg)
    if resume is not None:
        ckpt = common.load_checkpoint(resume)
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        common.set_rng_state(ckpt["rng"])
        step, elapsed, wandb_id = ckpt["step"], ckpt["elapsed"], ckpt["wandb_id"]
        log.info("resumed from %s at step %d/%d", resume, step, total)
    logger = common.Logger(cfg, run_id=wandb_id, enabled=rank == 0)

    def checkpoint(name="ckpt.pt"):
        path = Path(cfg.run_dir) / name
        if rank == 0:
            common.save_checkpoint(path, {
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step,
                "data_position": {"epoch": step // steps_per_epoch,
                                  "batch": step % steps_per_epoch},
                "rng": common.rng_state(), "elapsed": elapsed + common.now() - wall0,
                "wandb_id": logger.id, "config": common.OmegaConf.to_container(cfg, resolve=True),
            })
        return path

    # ---- the loop
    stop, restore_signals = common.install_stop_signals()
    step_ms, samples, train_s = [], 0, 0.0
    metrics, loss = {}, None
    bar = common.progress(total, step)
    try:
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            for dense, kjt, label in train_batches(train, hp.batch_size, cfg.seed, epoch, start,
                                                   rank, world, device):
                t0 = common.now()
                loss = F.binary_cross_entropy_with_logits(model(dense, kjt), label)
                common.check_finite(loss, step, lambda: checkpoint("crash.pt"), cfg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if hp.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_grad)
                common.synchronize(device)
                t1 = common.now()
                optimizer.step()
                common.synchronize(device)
                t2 = common.now()
                scheduler.step()
                step += 1
                step_ms.append(1e3 * (t2 - t1))
                samples += len(label) * world
                train_s += t2 - t0
                loss_value = loss.item()
                logger.log({"loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                            "step_time_ms": step_ms[-1], "samples_per_s": samples / train_s},
                           step=step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{samples / train_s:.0f}")
                if step % hp.eval_every == 0 or step == total:
                    metrics = evaluate(raw, val, hp.eval_batch_size, device, world, rank)
                    logger.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
                    log.info("step %d/%d epoch %d loss %.4f val auc %.2f logloss %.5f", step,
                             total, epoch, loss_value, metrics["auc"], metrics["logloss"])
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
                    checkpoint()
                if common.stop_requested(stop, step, cfg, world, device):
                    common.finish_stopped(stop, step, total, checkpoint(), bar, logger)
                    return None
        bar.close()
        # The reported numbers: the test split, after the last step (no early stopping).
        val_metrics = evaluate(raw, val, hp.eval_batch_size, device, world, rank)
        metrics = {**evaluate(raw, test, hp.eval_batch_size, device, world, rank),
                   **{f"val_{k}": v for k, v in val_metrics.items()}}
        logger.log({f"test/{k}": v for k, v in metrics.items() if not k.startswith("val_")},
                   step=step)
        checkpoint()
    except BaseException:
        bar.close()
        logger.finish(exit_code=1)
        raise
    finally:
        restore_signals()

    # ---- the record (finished runs only)
    peak, peak_kind = common.peak_memory(device)
    timed = step_ms[1:] or step_ms  # the first step allocates state (and compiles, for peers)
    record = records.make_record(
        cfg,
        metrics={**metrics, "train_loss": loss.item() if loss is not None else None},
        memory={"state_bytes": optimizers.state_bytes(optimizer), "peak_bytes": peak,
                "peak_kind": peak_kind},
        time_={"wall_s": elapsed + common.now() - wall0,
               "step_ms_mean": float(np.mean(timed)) if timed else None,
               "throughput": samples / train_s if train_s else None,
               "train_s": train_s,  # forward, backward and step time since this process started
               "throughput_unit": "samples/s", "steps": total},
        wandb_path=logger.path,
        replica_diff=common.replica_spread(raw, world, device),
    )
    if rank == 0:
        path = records.record_path(cfg)
        records.write_json_atomic(path, record)
        log.info("test auc %.2f logloss %.5f; record %s", metrics["auc"], metrics["logloss"],
                 path)
    logger.finish(record)
    return record
