"""HSTU's evaluation: full ranking of every item for each user's held-out target, HR@k and
NDCG@k in percent, summed over ranks.

As the authors' code does (generative_recommenders/research/data/eval.py): every item is a
candidate (no sampled candidates), except the items of the history the model reads, which a
recommender would not recommend again; the target keeps its place even when it is one of them.
The rank is 1 + the number of candidates scored strictly higher than the target.
"""

import math

import torch

from experiments.hstu import data


def target_ranks(scores: torch.Tensor, target: torch.Tensor,
                 history: torch.Tensor) -> torch.Tensor:
    """scores [B, I] over item ids (column 0 pads), target [B] ids, history [B, L] ids (0
    pads) -> the target's rank [B] (1 = first) among the items not in the history."""
    own = scores.gather(1, target[:, None])
    scores = scores.clone()
    scores[:, 0] = -math.inf
    scores.scatter_(1, history, -math.inf)
    return 1 + (scores > own).sum(1)


def hit_and_ndcg(ranks: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user: HR@k (1 if the rank is <= k) and NDCG@k (1 / log2(1 + rank) within k, else 0;
    one relevant item, so the ideal DCG is 1)."""
    hit = (ranks <= k).double()
    return hit, hit / torch.log2(ranks.double() + 1)


@torch.no_grad()
def evaluate(model, part: dict, batch: int, device, world: int, rank: int, k: int = 10) -> dict:
    """HR@k and NDCG@k (percent) of the windows ``part`` (target = each window's last item);
    each rank scores a shard of the users, the sums are reduced. ``model`` unwrapped (a DDP
    forward would sync buffers, and ranks may hold different numbers of batches)."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # hits, ndcg, users
    items = model.item_vectors()
    shard = torch.arange(rank, len(part["lengths"]), world)
    for idx in shard.split(batch):
        history, ts, target = (t.to(device) for t in data.eval_inputs(data.trim(part, idx)))
        queries = model(history, ts)
        last = (part["lengths"][idx] - 2).to(device)  # the history's last position
        query = queries[torch.arange(len(idx), device=device), last]
        hit, ndcg = hit_and_ndcg(target_ranks(query @ items.T, target, history), k)
        sums += torch.stack([hit.sum(), ndcg.sum(), hit.new_tensor(len(idx))])
    if world > 1:
        torch.distributed.all_reduce(sums)
    model.train()
    hits, ndcg, users = sums.tolist()
    return {"hr": 100 * hits / max(users, 1), "ndcg": 100 * ndcg / max(users, 1)}
