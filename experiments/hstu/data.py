"""Sequences for the hstu runner: the leave-one-out split and the windows the model reads.

A data set is per-user chronological item sequences (flat arrays ``items``, ``times`` in s,
``offsets``; ``n_items`` ids from 1, 0 pads): MovieLens-1M (experiments.hstu.movielens) or
synthetic sequences (smoke). Leave-one-out by time, per user: the last item is the test
target, the second to last the validation target, the rest trains (``train_on_val``: the
validation target trains too, as in the HSTU authors' code, which holds out the last item only).

A *window* is one row of fixed width ``max_len + 1``: up to ``max_len + 1`` consecutive items
of a user, left-aligned (position 0 = the oldest kept), 0 to the right, with their timestamps
and its length. Training reads every item of a row but the last as an input and every item but
the first as the target of the position before it; evaluation reads the row's last item as the
target and the items before it as the history (at most ``max_len``, the most recent). As in the
authors' code, one window per user trains (its most recent training items): older items are
never read.
"""

import numpy as np
import torch

from experiments import batching, ranks
from experiments.datacheck import require_rows
from experiments.training import epoch_order


def synthetic(n_users: int, n_items: int, length: tuple, seed: int = 1234) -> dict:
    """Labelled as synthetic: each user walks a fixed random successor table (the next item
    is the current one's successor with probability 0.8, else uniform), ``length`` = (min,
    max) items per user, gaps of 1 to 10^5 s. Same arrays as movielens.load_ml1m."""
    g = np.random.default_rng(seed)
    successor = g.permutation(n_items) + 1
    lengths = g.integers(length[0], length[1] + 1, n_users)
    items, times = [], []
    for n in lengths:
        seq = [int(g.integers(1, n_items + 1))]
        for _ in range(n - 1):
            seq.append(int(successor[seq[-1] - 1]) if g.random() < 0.8
                       else int(g.integers(1, n_items + 1)))
        items += seq
        times += np.cumsum(np.exp(g.uniform(0, np.log(1e5), n)).astype(np.int64)).tolist()
    return {"items": np.asarray(items, np.int32), "times": np.asarray(times, np.int64),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]), "n_items": n_items}


def leave_one_out(n: int, train_on_val: bool = False) -> tuple[int, int, int]:
    """For a user with ``n`` chronological items: (items that train, index of the validation
    target, index of the test target). The training items are the first ones; a target's
    history is every item before it."""
    return (n - 1 if train_on_val else n - 2), n - 2, n - 1


def windows(seqs: dict, starts: np.ndarray, stops: np.ndarray, max_len: int) -> dict:
    """One window per (start, stop) pair of indices into the flat arrays: the last
    ``max_len + 1`` items before ``stop`` (not before ``start``, the user's first item).
    ids, ts [U, max_len + 1], lengths [U]."""
    ids = torch.zeros(len(starts), max_len + 1, dtype=torch.long)
    ts = torch.zeros(len(starts), max_len + 1, dtype=torch.long)
    lengths = torch.zeros(len(starts), dtype=torch.long)
    for u, (first, stop) in enumerate(zip(starts.tolist(), stops.tolist())):
        start = max(first, stop - max_len - 1)
        ids[u, : stop - start] = torch.from_numpy(seqs["items"][start:stop].astype(np.int64))
        ts[u, : stop - start] = torch.from_numpy(seqs["times"][start:stop])
        lengths[u] = stop - start
    return {"ids": ids, "ts": ts, "lengths": lengths}


def split(seqs: dict, max_len: int, train_on_val: bool = False) -> tuple[dict, dict, dict]:
    """Train, validation and test windows of every user with at least 3 items (fewer give
    no training pair once both targets are held out): the training items; the validation
    target and its history; the test target and its history."""
    starts, counts = seqs["offsets"][:-1], np.diff(seqs["offsets"])
    keep = counts >= 3
    starts, cuts = starts[keep], [leave_one_out(int(n), train_on_val) for n in counts[keep]]
    n_train, val, test = (np.asarray(c, np.int64) for c in zip(*cuts)) if cuts else [
        np.zeros(0, np.int64)] * 3
    return tuple(windows(seqs, starts, starts + stop, max_len)
                 for stop in (n_train, val + 1, test + 1))


def trim(rows: dict, idx: torch.Tensor) -> dict:
    """The windows ``idx``, cut to their longest length: the padding no row needs is not
    computed (causal attention: shorter rows' outputs do not depend on it)."""
    lengths = rows["lengths"][idx]
    width = max(2, int(lengths.max()))
    return {"ids": rows["ids"][idx, :width], "ts": rows["ts"][idx, :width], "lengths": lengths}


def train_pairs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs [B, W-1], their next timestamps [B, W], targets [B, W-1]; 0 where none): the
    last item of each window is a target only."""
    ids, ts, lengths = batch["ids"], batch["ts"], batch["lengths"]
    pos = torch.arange(ids.shape[1] - 1)
    inputs = torch.where(pos < (lengths - 1)[:, None], ids[:, :-1], 0)
    return inputs, ts, ids[:, 1:]


def eval_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(history [B, W-1], timestamps [B, W], target [B]): the window's last item is the target;
    its timestamp is the request time the model knows (as in the authors' code)."""
    inputs, ts, _ = train_pairs(batch)
    target = batch["ids"].gather(1, (batch["lengths"] - 1)[:, None]).squeeze(1)
    return inputs, ts, target


def load(cfg, hp, rank: int = 0, world: int = 1) -> tuple[dict, dict, dict, int]:
    """(train, val, test windows, number of items) for the recipe's data. Rank 0 parses the
    ratings into their cache (seconds) while the others wait, then read it: no two ranks
    write the cache at once."""
    if hp.data == "synthetic":
        seqs = synthetic(hp.n_train, hp.n_items, tuple(hp.seq_len))
        where = "scale.n_train"
    else:
        from experiments.hstu.movielens import load_ml1m, ratings_file

        if rank != 0:
            ranks.wait_for_rank0(world)  # until rank 0 has built the cache
        seqs = load_ml1m(cfg.task.data_dir, cfg.task.get("cache_dir"))
        if rank == 0:
            ranks.wait_for_rank0(world)
        where = ratings_file(cfg.task.data_dir)
    train, val, test = split(seqs, hp.max_len, hp.get("train_on_val", False))
    require_rows(len(train["lengths"]), hp.batch_size, "users", where)
    return train, val, test, int(seqs["n_items"])


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def train_batches(train: dict, batch: int, seed: int, epoch: int, start: int, rank: int,
                  world: int, device, accum: int = 1):
    """Each step of one epoch from step ``start`` on, as ``accum`` micro-batches of this rank's
    share of the global batch of users, with the global batch's number of targets (the loss
    is their mean). Only (seed, epoch, step) decide them, so resuming mid-epoch is exact."""
    order = epoch_order(len(train["lengths"]), seed, epoch)
    for i in range(start, len(order) // batch):
        users = order[i * batch : (i + 1) * batch]
        targets = int((train["lengths"][users] - 1).sum())
        share = users[rank::world]
        yield [to_device(trim(train, idx), device)
               for idx in batching.split(share, accum)], targets
