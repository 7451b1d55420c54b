"""The glue runner's data: each task's examples at its scale, encoded to token ids, and the
batches of a step.

- synthetic (smoke), labelled as such: random token ids with a planted marker, one
  classification and one regression task, already ids (no tokenizer);
- small: three real sentence tasks (experiments.glue.small);
- glue (paper): the eight GLUE tasks from task.data_dir (experiments.glue.tasks).

An encoded example is (token ids, label). Batches are padded to their longest sequence.
"""

import torch

from experiments import batching
from experiments.datacheck import require_rows
from experiments.glue import small, tasks
from experiments.training import epoch_order

SMALL = {"sst2": ("acc", 2), "trec": ("acc", len(small.TREC_CLASSES)), "sms": ("f1_acc", 2)}
SYNTHETIC = {"syn_cls": ("acc", 2), "syn_reg": ("pearson_spearman", 1)}
MARKER = 3  # the planted token id of the synthetic tasks (0-2 are pad, CLS, SEP)


def spec(hp, name: str) -> tuple[str, int]:
    """(metric, number of labels; 1 for regression) of task ``name`` at this scale."""
    if hp.data == "synthetic":
        return SYNTHETIC[name]
    if hp.data == "small":
        return SMALL[name]
    return tasks.TASKS[name].metric, tasks.TASKS[name].num_labels


def synthetic(name: str, n: int, vocab: int, length: int, seed: int) -> list:
    """Encoded examples: [CLS] + random ids + [SEP]; syn_cls's label is whether the marker
    occurs, syn_reg's is 5 x the marker's share of the tokens (a 0-5 score like STS-B's)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(4, length - 1, (1,), generator=g))
        ids = torch.randint(MARKER + 1, vocab, (k,), generator=g)
        marked = torch.rand(k, generator=g) < (0.5 if name == "syn_reg" else 0.15)
        if name == "syn_cls" and torch.rand(1, generator=g).item() < 0.5:
            marked[:] = False
        ids[marked] = MARKER
        label = (5.0 * marked.float().mean().item() if name == "syn_reg"
                 else int(marked.any()))
        out.append(([1, *ids.tolist(), 2], label))
    return out


def load(cfg, hp, name: str, settings) -> tuple[list, dict]:
    """(train, {record key suffix: dev/test}) raw examples of one task (not yet encoded;
    synthetic ones already are)."""
    if hp.data == "synthetic":
        base = 1000 * (list(SYNTHETIC).index(name) + 1)
        make = lambda n, s: synthetic(name, n, hp.vocab_size, hp.max_len, s)  # noqa: E731
        return make(hp.n_train, base), {"": make(hp.n_test, base + 1)}
    if hp.data == "small":
        train, test = small.load(cfg.task.data_dir, name, settings.get("n_test"))
        if settings.get("n_train"):
            train = train[: settings["n_train"]]
        return train, {"": test}
    return tasks.load(cfg.task.data_dir, tasks.TASKS[name])


def encode(examples: list, tokenizer, max_len: int) -> list:
    """(ids, label) pairs; sentence pairs joined the tokenizer's way, cut to ``max_len``."""
    if tokenizer is None:  # synthetic: already ids
        return examples
    firsts = [ex[0] for ex in examples]
    seconds = [ex[1] for ex in examples]
    enc = tokenizer(firsts, seconds if seconds and seconds[0] is not None else None,
                    truncation=True, max_length=max_len)["input_ids"]
    return [(ids, ex[2]) for ids, ex in zip(enc, examples)]


def collate(items: list, pad_id: int, device) -> tuple:
    """(input_ids, attention_mask, labels) of ``items``, padded to the longest."""
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (seq, _) in enumerate(items):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    labels = torch.tensor([y for _, y in items])
    return ids.to(device), mask.to(device), labels.to(device)


def steps_per_epoch(n: int, batch: int, where: str, key: str) -> int:
    require_rows(n, batch, "training examples", where, key)
    return n // batch


def train_batches(train: list, batch: int, seed: int, epoch: int, start: int, rank: int,
                  world: int, accum: int, pad_id: int, device):
    """Each step of one epoch from step ``start`` on, as ``accum`` micro-batches of this rank's
    share of the global batch; only (seed, epoch, step) decide them, so resuming is exact."""
    order = epoch_order(len(train), seed, epoch)
    for i in range(start, len(order) // batch):
        share = order[i * batch : (i + 1) * batch][rank::world]
        yield [collate([train[j] for j in idx.tolist()], pad_id, device)
               for idx in batching.split(share, accum)]


def eval_batches(examples: list, batch: int, rank: int, world: int, pad_id: int, device):
    """(row indices, batch) over this rank's shard (rows rank, rank + world, ...), shortest
    first: sequences of like length share a batch, so little of it is padding."""
    shard = sorted(range(rank, len(examples), world), key=lambda j: len(examples[j][0]))
    for i in range(0, len(shard), batch):
        rows = shard[i : i + batch]
        yield rows, collate([examples[j] for j in rows], pad_id, device)
