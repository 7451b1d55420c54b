"""Gradient accumulation on 2 gloo ranks (marker `distributed`): 2 ranks x 2 micro-batches
make the step of one process on the whole global batch, with DDP and with FSDP2, and the
gradients are synchronised on the last micro-step only."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experiments import batching

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]
GLOBAL, MICRO = 16, 4


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL, 6, generator=g), torch.randint(0, 3, (GLOBAL,), generator=g)


def reference():
    """One process, one big batch: the gradient of the mean and the parameters after AdamW."""
    model, (x, y) = tiny(), data()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    return grads, [p.detach().clone() for p in model.parameters()]


def full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def worker(rank, world, init_file, kind, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        model = tiny()
        if kind == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            wrapped = model = fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        plan = batching.plan(GLOBAL, world, MICRO)
        x, y = data()
        mine = torch.arange(GLOBAL)[rank::world]  # the runners' share of the global batch
        inner_grads = None
        for i, idx in enumerate(batching.split(mine, plan.accum)):
            with batching.grad_sync(wrapped, sync=i == plan.accum - 1):
                loss = torch.nn.functional.cross_entropy(wrapped(x[idx]), y[idx],
                                                         reduction="sum")
                batching.backward(loss, GLOBAL, world)
            if i == 0 and kind == "ddp":
                inner_grads = [p.grad.clone() for p in model.parameters()]
        grads = [full(p.grad).clone() for p in model.parameters()]
        opt.step()
        params = [full(p.detach()).clone() for p in model.parameters()]
        out[rank] = (plan.accum, inner_grads, grads, params)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_ranks_accumulating_equal_one_process_on_the_global_batch(tmp_path, kind):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.dict()
        mp.start_processes(worker, args=(2, str(tmp_path / "init"), kind, out), nprocs=2,
                           start_method="spawn")
        results = dict(out)
    ref_grads, ref_params = reference()
    for rank in (0, 1):
        accum, inner, grads, params = results[rank]
        assert accum == 2
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        for a, b in zip(params, ref_params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    if kind == "ddp":  # the first micro-step kept each rank's own gradient: no sync there
        assert not torch.allclose(results[0][1][0], results[1][1][0])
