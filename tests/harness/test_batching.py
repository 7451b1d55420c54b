"""Gradient accumulation (experiments.batching): k micro-batches make the step of one big
batch, and a recipe's global batch is split, or refused, the same way on any number of GPUs.
The 2-rank (gloo) version is tests/cluster/test_accumulation.py."""

import pytest
import torch

from experiments import batching


def tiny(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def loss_sum(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y, reduction="sum")


def stepped(model, lr=1e-2):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_accumulated_micro_batches_equal_one_big_batch():
    x, y = data()
    big = tiny()
    torch.nn.functional.cross_entropy(big(x), y).backward()  # the mean over 24 samples
    acc = tiny()
    plan = batching.plan(24, world=1, micro=6)
    assert (plan.accum, plan.micro) == (4, 6)
    losses, items = batching.accumulate(
        acc, batching.split(torch.arange(24), plan.accum),
        lambda idx: (loss_sum(acc, x[idx], y[idx]), len(idx)), 24, world=1)
    assert items == 24 and len(losses) == 4 and not any(s.requires_grad for s in losses)
    assert sum(s.item() for s in losses) / items == pytest.approx(
        torch.nn.functional.cross_entropy(big(x), y).item(), rel=1e-6)
    for a, b in zip(acc.parameters(), big.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    for a, b in zip(stepped(acc), stepped(big)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_uneven_micro_batches_give_the_mean_over_the_global_batch():
    """Token batches (the Transformer) differ in size: each micro-batch's sum over the global
    count is the global mean, where a mean of per-micro-batch means would not be."""
    x, y = data(20)
    big = tiny()
    torch.nn.functional.cross_entropy(big(x), y).backward()
    acc, parts = tiny(), [torch.arange(0, 3), torch.arange(3, 20)]
    for idx in parts:
        batching.backward(loss_sum(acc, x[idx], y[idx]), 20, world=1)
    for a, b in zip(acc.parameters(), big.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    means = tiny()
    for idx in parts:  # the tempting mistake: mean per micro-batch, divided by their number
        (torch.nn.functional.cross_entropy(means(x[idx]), y[idx]) / 2).backward()
    assert not torch.allclose(means[0].weight.grad, big[0].weight.grad, rtol=1e-3)


@pytest.mark.parametrize("global_batch,world,micro,expected", [
    (1024, 8, 128, (128, 1)), (1024, 2, 128, (128, 4)), (1024, 1, 128, (128, 8)),
    (128, 8, 4, (4, 4)), (128, 4, None, (32, 1)), (64, 16, 8, (4, 1)),
])
def test_plan_keeps_the_global_batch_on_any_world_size(global_batch, world, micro, expected):
    plan = batching.plan(global_batch, world, micro)
    assert (plan.micro, plan.accum) == expected
    assert plan.world * plan.accum * plan.micro == global_batch
    assert plan.record() == {"global_batch": global_batch, "micro": expected[0],
                             "accum": expected[1], "world": world, "unit": "samples"}


def test_plan_refuses_what_it_cannot_split_and_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"scale.batch_size=1000 samples is not divisible by "
                                         r"the world size 3.*scale.batch_size=999"):
        batching.plan(1000, 3)
    with pytest.raises(ValueError, match=r"micro-batch 3 samples does not divide .* = 8"):
        batching.plan(16, 2, micro=3)
    with pytest.raises(ValueError, match="must be >= 1"):
        batching.plan(0, 1)


def test_grad_sync_leaves_a_plain_module_alone():
    model = tiny()
    with batching.grad_sync(model, sync=False):
        loss_sum(model, *data(4)).backward()
    assert model[0].weight.grad is not None


class Sharded(torch.nn.Module):
    """A module with FSDP2's gradient-sync switch, recording it at each forward."""

    def __init__(self):
        super().__init__()
        self.linear, self.sync, self.synced = torch.nn.Linear(5, 3), True, []

    def set_requires_gradient_sync(self, sync: bool):
        self.sync = sync

    def forward(self, x):
        self.synced.append(self.sync)
        return self.linear(x)


def test_accumulate_syncs_on_the_last_micro_batch_and_checks_each_loss_before_backward():
    model, (x, y) = Sharded(), data(12)
    grad_at_check = []
    batching.accumulate(model, batching.split(torch.arange(12), 3),
                        lambda idx: (loss_sum(model, x[idx], y[idx]), len(idx)), 12, world=1,
                        check=lambda loss: grad_at_check.append(model.linear.weight.grad))
    assert model.synced == [False, False, True] and model.sync
    assert grad_at_check[0] is None and all(g is not None for g in grad_at_check[1:])
