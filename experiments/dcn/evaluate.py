"""DCN's evaluation: AUC and LogLoss of a split, gathered over ranks."""

import torch
import torch.nn.functional as F

from experiments.dcn import data


@torch.no_grad()
def evaluate(model, part, batch, device, world, rank) -> dict:
    """AUC (percent, torchmetrics) and LogLoss (mean binary cross-entropy, torch) of one split;
    with several ranks each scores a shard and the scores are gathered before the metrics."""
    from torchmetrics.functional.classification import binary_auroc

    model.eval()
    n = len(part["label"])
    shard = torch.arange(rank, n, world)
    logits = [model(*data.to_device(data.split(part, shard[i : i + batch]), device)[:2])
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
