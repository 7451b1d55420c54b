"""GLUE's metrics, in percent, over every rank's shard, and the average Table 1 prints.

Per task, the number GLUE's leaderboard averages: CoLA Matthews correlation; STS-B the mean of
Pearson and Spearman correlation; MRPC and QQP the mean of F1 (of the positive class) and
accuracy; the others accuracy (MNLI: matched; mismatched recorded beside it). The components go
in the record too (``<task>_f1``, ``<task>_acc``, ``<task>_pearson``, ``<task>_spearman``).
"""

import numpy as np
import torch

from experiments import ranks
from experiments.glue import data


def accuracy(pred, gold) -> float:
    return 100.0 * float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred, gold) -> float:
    """F1 of class 1, percent (0 when nothing is predicted or gold positive)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    denom = float(np.sum(pred == 1) + np.sum(gold == 1))
    return 100.0 * 2 * tp / denom if denom else 0.0


def matthews(pred, gold) -> float:
    """Matthews correlation of binary labels, percent; 0 when a margin is empty (GLUE's
    convention for a constant prediction)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 100.0 * (tp * tn - fp * fn) / denom if denom else 0.0


def correlations(pred, gold) -> tuple[float, float]:
    """(Pearson, Spearman) correlation, percent; 0 for a constant prediction."""
    from scipy import stats

    pred, gold = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0, 0.0
    return 100.0 * stats.pearsonr(pred, gold)[0], 100.0 * stats.spearmanr(pred, gold)[0]


def score(metric: str, pred, gold, name: str) -> dict:
    """{name: the task's GLUE number, plus its components}, percent, as Python floats (they
    go into checkpoints, which hold no numpy scalars)."""
    return {k: float(v) for k, v in _score(metric, pred, gold, name).items()}


def _score(metric: str, pred, gold, name: str) -> dict:
    if metric == "acc":
        return {name: accuracy(pred, gold)}
    if metric == "mcc":
        return {name: matthews(pred, gold)}
    if metric == "f1_acc":
        f, a = f1(pred, gold), accuracy(pred, gold)
        return {name: (f + a) / 2, f"{name}_f1": f, f"{name}_acc": a}
    if metric == "pearson_spearman":
        p, s = correlations(pred, gold)
        return {name: (p + s) / 2, f"{name}_pearson": p, f"{name}_spearman": s}
    raise ValueError(f"metric {metric!r}")


@torch.no_grad()
def predict(model, examples, batch, rank, world, pad_id, device, regression: bool) -> list:
    """The model's prediction for every example (class id, or score for regression), each rank
    scoring its shard and the shards gathered; ``model`` is the unwrapped module."""
    model.eval()
    mine = []
    for rows, (ids, mask, _) in data.eval_batches(examples, batch, rank, world, pad_id, device):
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        out = logits[:, 0] if regression else logits.argmax(-1)
        mine.extend(zip(rows, out.cpu().tolist()))
    model.train()
    pred = [None] * len(examples)
    for part in ranks.gather(mine, world):
        for j, p in part:
            pred[j] = p
    return pred


def evaluate(model, name: str, metric: str, dev: dict, batch: int, rank: int, world: int,
             pad_id: int, device) -> dict:
    """One task's dev numbers (percent): every split of ``dev`` ({key suffix: encoded
    examples}) scored as ``<name><suffix>``."""
    out = {}
    for suffix, examples in dev.items():
        pred = predict(model, examples, batch, rank, world, pad_id, device,
                       regression=metric == "pearson_spearman")
        out.update(score(metric, pred, [y for _, y in examples], name + suffix))
    return out


def average(per_task: dict, names: list, key: str = "") -> float:
    """The unweighted mean of the tasks' GLUE numbers (Table 1's GLUE average)."""
    return float(np.mean([per_task[n + key] for n in names]))
