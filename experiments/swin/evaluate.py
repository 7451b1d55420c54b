"""Swin's evaluation: top-1 and top-5 accuracy over every rank's shard."""

import torch


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
