"""Gradient accumulation on 2 gloo ranks (marker `distributed`): 2 ranks x 2 micro-batches
make the step of one process on the whole global batch, with DDP and with FSDP2, and the
gradients are synchronised on the last micro-step only; a whole run (DCN smoke) on 2 ranks
with accumulation ends where the single-process run does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experiments import batching

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]
GLOBAL, MICRO = 16, 4
ROOT = Path(__file__).resolve().parents[2]


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
        starts = []  # the gradients as each micro-step starts (the first: none yet)

        def loss_of(idx):
            if kind == "ddp":
                starts.append([p.grad if p.grad is None else p.grad.clone()
                               for p in model.parameters()])
            loss = torch.nn.functional.cross_entropy(wrapped(x[idx]), y[idx], reduction="sum")
            return loss, len(idx)

        batching.accumulate(wrapped, batching.split(mine, plan.accum), loss_of, GLOBAL, world)
        inner_grads = starts[1] if kind == "ddp" else None  # after the first micro-step alone
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


def test_dcn_on_two_ranks_with_accumulation_matches_one_process(tmp_path):
    """The recipe's global batch (32) on 1 process, and on 2 ranks x 2 micro-batches of 8:
    the same training (DCN smoke draws nothing per rank), so the same metrics, and records
    that say how the batch was split."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}

    def run(name, launcher, *extra):
        env["SOLO_RECORDS_DIR"] = str(tmp_path / f"{name}_records")
        cmd = [*launcher, str(ROOT / "run.py"), "task=dcn", "scale=smoke", "optim=adamw32",
               "logger=none", f"hydra.run.dir={tmp_path / name}", *extra]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                             timeout=250)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(next((tmp_path / f"{name}_records").rglob("seed0.json")).read_text())

    one = run("one", [sys.executable])
    two = run("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node=2"], "+scale.micro_batch_size=8")
    assert one["batch"] == {"global_batch": 32, "micro": 32, "accum": 1, "world": 1,
                            "unit": "samples"}
    assert two["batch"] == {"global_batch": 32, "micro": 8, "accum": 2, "world": 2,
                            "unit": "samples"}
    assert two["provenance"]["replica_max_diff"] == 0.0
    for key in ("auc", "logloss", "val_auc", "val_logloss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4, abs=1e-5)
