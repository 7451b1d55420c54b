"""Worker processes for tests/solo/test_fsdp.py: gloo ranks on CPU that train a tiny model
under FSDP2 (``fully_shard``) or DDP with every solo preset and report what they compared.

Each ``run_*`` function is one ``torch.multiprocessing.spawn`` target; rank 0 writes a JSON
``{case: problem or ""}`` that the tests read, so a failing case names itself.
"""

from __future__ import annotations

import datetime
import json
import os
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

import solo
from solo.distributed import shard_seed

SEED = 1234
LR = 1e-2
WD = 0.01


class Tiny(nn.Module):
    """Shards that end in partial blocks (200 x 16 over 2 or 4 ranks), a weight above the
    rank-1 preset's 4097-element threshold whose shards are below it (64 x 200 over 4 ranks),
    and a 3-row layer that leaves rank 3 of 4 an empty shard."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 200)
        self.b = nn.Linear(200, 64)
        self.c = nn.Linear(64, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    # a stuck collective fails the test within minutes instead of gloo's 30
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=180))


def _batch(step: int, rank: int) -> torch.Tensor:
    return torch.randn(8, 16, generator=torch.Generator().manual_seed(1000 * step + rank))


def _sharded_model(mp: MixedPrecisionPolicy | None = None, init_seed: int = 0) -> nn.Module:
    torch.manual_seed(init_seed)
    model = Tiny()
    kw = {} if mp is None else {"mp_policy": mp}
    for layer in (model.a, model.b, model.c):
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def _backward(model: nn.Module, step: int, rank: int) -> None:
    model.zero_grad(set_to_none=True)
    model(_batch(step, rank)).float().square().mean().backward()


def _preset(name: str, params, seed: int = SEED, **kw):
    return solo.PRESETS[name](params, lr=LR, weight_decay=WD, seed=seed, **kw)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _compare_states(opt, ref, pairs, what: str) -> list[str]:
    bad = []
    for k, (p, q) in enumerate(pairs):
        sa, sb = opt.state[p], ref.state[q]
        if sorted(sa) != sorted(sb):
            bad.append(f"{what} param {k}: state keys {sorted(sa)} != {sorted(sb)}")
            continue
        bad += [f"{what} param {k}: state {key} differs" for key in sa
                if not _same(sa[key], sb[key])]
    return bad


def fsdp_case(name: str, rank: int, world: int, steps: int = 3, fused=None,
              mp: MixedPrecisionPolicy | None = None) -> list[str]:
    """Steps ``name`` on the sharded model and compares, bit for bit:

    - this rank's parameter shards and every state tensor with a single-process optimizer of
      the same preset stepping plain copies of the same shards with the same gradients, seeded
      with ``shard_seed(SEED, rank)``, the parameters whose whole tensor is below
      ``min_quantizable_size`` in a group of their own (the threshold is per parameter);
    - for the fp32-state presets, the whole parameters with a single-process optimizer on the
      whole (gathered) parameters and gradients: bit for bit, except on torch's fused AdamW
      kernel (adamw32 with fused unset), whose vectorised body and scalar tail round
      differently, so elements near a shard's end may move by one ulp (a single process
      splitting a tensor in two sees the same; test_fsdp_units.py checks it);
    - for the block-quantized presets with nearest rounding (no SR draws, no rank-1 scales),
      the parameters whose every shard is a whole number of blocks (b.weight: 6400 or 3200
      elements per shard) with a single-process optimizer on the whole tensors, bit for bit:
      blocks never straddle ranks, so splitting at block boundaries changes nothing.
    """
    model = _sharded_model(mp)
    params = list(model.parameters())
    kw = {} if fused is None else {"fused": fused}
    opt = _preset(name, params, **kw)
    shards = [p.to_local().detach().clone() for p in params]
    mqs = opt.param_groups[0]["min_quantizable_size"]
    big = [s for s, p in zip(shards, params) if p.numel() >= mqs]
    small = [s for s, p in zip(shards, params) if p.numel() < mqs]
    ref = _preset(name, big, seed=shard_seed(SEED, rank), min_quantizable_size=0, **kw)
    if small:
        ref.add_param_group({"params": small, "min_quantizable_size": 2**62})
    full_ref = None
    ulp_ok = name == "adamw32" and fused is not False
    group = opt.param_groups[0]
    if all(q in ("none", "bf16") for q in group["quantizers"]):
        exact = list(range(len(params)))
    elif all(q in ("de", "linear") for q in group["quantizers"]):
        exact = [k for k, p in enumerate(params) if _block_aligned(p, world, group)]
        assert exact, "the tiny model should have a block-aligned parameter"
    else:
        exact = []
    if exact:
        fulls = [p.full_tensor().detach().clone() for p in params]
        full_ref = _preset(name, fulls, **kw)
    for step in range(steps):
        _backward(model, step, rank)
        for s, p in zip(shards, params):
            s.grad = p.grad.to_local().clone()
        if full_ref is not None:
            for f, p in zip(fulls, params):
                f.grad = p.grad.full_tensor()
        opt.step()
        ref.step()
        if full_ref is not None:
            full_ref.step()
    bad = []
    for k, (p, s) in enumerate(zip(params, shards)):
        if p.to_local().dtype != torch.float32:
            bad.append(f"param {k}: sharded parameter is {p.to_local().dtype}, not fp32")
        if not _same(p.to_local(), s):
            diff = (p.to_local().float() - s.float()).abs().max().item()
            bad.append(f"param {k}: shard differs from the per-shard reference by {diff:.3g}")
    bad += _compare_states(opt, ref, list(zip(params, shards)), "per-shard")
    if full_ref is not None:
        for k in exact:
            p, f = params[k], fulls[k]
            diff = (p.full_tensor() - f).abs()
            ulp = torch.nextafter(f.abs(), torch.tensor(float("inf"))) - f.abs()
            if (diff > ulp).any() if ulp_ok else diff.any():
                bad.append(f"param {k}: differs from the single-process update by "
                           f"{diff.max().item():.3g}")
    # the next forward all-gathers the updated shards
    plain = Tiny()
    plain.load_state_dict({k: v.full_tensor() for k, v in model.state_dict().items()})
    x = _batch(99, 0)
    out, want = model(x).float(), plain(x)
    tol = 0 if mp is None else 0.1
    if not torch.allclose(out, want, atol=tol, rtol=tol):
        bad.append(f"forward after the steps differs from the gathered parameters' by "
                   f"{(out - want).abs().max().item():.3g}")
    return bad


def _block_aligned(p, world: int, group: dict) -> bool:
    """Whether every one of ``p``'s dim-0 shards (torch.chunk, as FSDP2) is whole blocks."""
    row = p[0].numel()
    sizes = [len(c) * row for c in torch.arange(p.shape[0]).chunk(world)]
    return len(sizes) == world and all(n % b == 0 for n in sizes for b in group["block_size"])


def ddp_case(name: str, rank: int, world: int, steps: int = 3) -> list[str]:
    """DDP (replicated plain parameters): every rank's parameters and states stay identical."""
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Tiny())
    opt = _preset(name, model.parameters())
    for step in range(steps):
        _backward(model, step, rank)
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]
                     + [t.reshape(-1).float() for st in opt.state.values() for t in st.values()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    bad = [f"rank {r} differs from rank 0" for r in range(1, world)
           if not torch.equal(gathered[r], gathered[0])]
    if list(opt._generators) not in ([], ["cpu"]):
        bad.append(f"DDP used generators {list(opt._generators)}, expected only 'cpu'")
    return bad


def _report(rank: int, out: Path, results: dict[str, list[str]]) -> None:
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, results)
    if rank == 0:
        merged = {case: "; ".join(f"rank {r}: {m}" for r, res in enumerate(gathered)
                                  for m in res[case]) for case in results}
        out.write_text(json.dumps(merged, indent=1))


def _guard(fn, *args, **kw) -> list[str]:
    try:
        return fn(*args, **kw)
    except Exception as e:  # reported per case, so one failure does not hide the others
        return [f"{type(e).__name__}: {e} | {traceback.format_exc(limit=-3)}"]


def run_presets(rank: int, world: int, port: int, out: str, folder: str, saved_world: int,
                steps: int) -> None:
    """Every preset (and the reference path of two) under FSDP2, mixed precision, DDP (at 2
    ranks), state_bytes; then the first half of the checkpoint test (``saved_world ==
    world``: save) or the world-size mismatch (else: load the ``saved_world`` checkpoint)."""
    _init(rank, world, port)
    res = {}
    for name in solo.PRESETS:
        res[f"fsdp:{name}"] = _guard(fsdp_case, name, rank, world)
    for name in ("adamw32", "solo_4_2bit"):
        res[f"fsdp:{name}:fused=False"] = _guard(fsdp_case, name, rank, world, fused=False)
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for name in ("adamw32", "solo_4_2bit"):
        res[f"fsdp-bf16:{name}"] = _guard(fsdp_case, name, rank, world, mp=bf16)
    if world == 2:
        bf16_reduce = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                           reduce_dtype=torch.bfloat16)
        res["fsdp-bf16-reduce:solo_4_2bit"] = _guard(fsdp_case, "solo_4_2bit", rank, world,
                                                     mp=bf16_reduce)
        for name in ("adamw32", "solo_2bit"):
            res[f"ddp:{name}"] = _guard(ddp_case, name, rank, world)
    res["nonfinite"] = _guard(_nonfinite_case, rank, world)
    res["state_bytes"] = _guard(_state_bytes_case, rank, world)
    for name in CKPT_PRESETS:
        if saved_world == world:
            res[f"save:{name}"] = _guard(_save_case, name, rank, Path(folder), steps)
        else:
            res[f"mismatch:{name}"] = _guard(_mismatch_case, name, rank, world, Path(folder),
                                             saved_world)
    _report(rank, Path(out), res)
    dist.destroy_process_group()


def _nonfinite_case(rank: int, world: int) -> list[str]:
    """A NaN in the last rank's shard only: step() raises on every rank, nothing changes."""
    model = _sharded_model()
    opt = _preset("solo_4_2bit", list(model.parameters()))
    _backward(model, 0, rank)
    opt.step()
    _backward(model, 1, rank)
    if rank == world - 1:
        model.a.weight.grad.to_local()[0, 0] = float("nan")
    before = [p.to_local().clone() for p in model.parameters()]
    states = [{k: t.clone() for k, t in st.items()} for st in opt.state.values()]
    try:
        opt.step()
        return ["step() did not raise"]
    except FloatingPointError as e:
        want = "param_groups[0]['params'][0]" if rank == world - 1 else "another rank"
        bad = [] if want in str(e) else [f"message does not say {want!r}: {e}"]
    if not all(torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters())):
        bad.append("a parameter changed")
    if not all(torch.equal(t, st[k]) for old, st in zip(states, opt.state.values())
               for k, t in old.items()):
        bad.append("a state changed")
    return bad


def _state_bytes_case(rank: int, world: int) -> list[str]:
    """This rank's bytes equal the estimate for its shards; all_ranks sums them."""
    model = _sharded_model()
    opt = _preset("solo_4_2bit", list(model.parameters()))
    est = solo.estimate_state_bytes(model, "solo_4_2bit")
    _backward(model, 0, rank)
    opt.step()
    mine = solo.state_bytes(opt)
    total = solo.state_bytes(opt, all_ranks=True)
    each = [None] * world
    dist.all_gather_object(each, mine["total"])
    bad = []
    if mine != est:
        bad.append(f"state_bytes {mine} != estimate {est}")
    if total["total"] != sum(each):
        bad.append(f"all_ranks total {total['total']} != sum of ranks {sum(each)}")
    return bad


# --- checkpoints -----------------------------------------------------------------------------
CKPT_PRESETS = ("solo_4_2bit", "adabelief_solo_4_2bit", "adamw32")


def _snapshot(model, opt) -> dict:
    return {"params": [p.to_local().detach().clone() for p in model.parameters()],
            "optim": opt.state_dict()}


def _save_case(name: str, rank: int, folder: Path, steps: int) -> list[str]:
    """Straight run of ``steps`` steps (kept for comparison) and a run stopped half-way with a
    per-rank checkpoint (model shards + optimizer state dict)."""
    model = _sharded_model()
    opt = _preset(name, list(model.parameters()))
    for step in range(steps):
        _backward(model, step, rank)
        opt.step()
    torch.save(_snapshot(model, opt), folder / f"{name}.straight.rank{rank}.pt")
    model = _sharded_model()
    opt = _preset(name, list(model.parameters()))
    for step in range(steps // 2):
        _backward(model, step, rank)
        opt.step()
    torch.save(_snapshot(model, opt), folder / f"{name}.half.rank{rank}.pt")
    return []


def _resume(name: str, rank: int, folder: Path, file_rank: int):
    """Fresh model (other init) and optimizer loading the half-way checkpoint of
    ``file_rank``."""
    model = _sharded_model(init_seed=7)
    opt = _preset(name, list(model.parameters()), seed=99)
    ck = torch.load(folder / f"{name}.half.rank{file_rank}.pt", weights_only=True)
    opt.load_state_dict(ck["optim"])
    with torch.no_grad():
        for p, saved in zip(model.parameters(), ck["params"]):
            p.to_local().copy_(saved)
    return model, opt


def run_resume(rank: int, world: int, port: int, folder: str, steps: int, out: str) -> None:
    """Fresh processes: the other rank's file is refused; this rank's resumes bit-exactly."""
    _init(rank, world, port)
    folder = Path(folder)
    res = {}
    for name in CKPT_PRESETS:
        res[f"resume:{name}"] = _guard(_resume_case, name, rank, world, folder, steps)
    _report(rank, Path(out), res)
    dist.destroy_process_group()


def _resume_case(name, rank, world, folder, steps) -> list[str]:
    bad = []
    other = (rank + 1) % world
    try:
        _resume(name, rank, folder, other)
        bad.append(f"loading rank {other}'s checkpoint on rank {rank} did not raise")
    except ValueError as e:
        if f"shard {other} of {world}" not in str(e):
            bad.append(f"wrong message for another rank's file: {e}")
    model, opt = _resume(name, rank, folder, rank)
    for step in range(steps // 2, steps):
        _backward(model, step, rank)
        opt.step()
    got = _snapshot(model, opt)
    want = torch.load(folder / f"{name}.straight.rank{rank}.pt", weights_only=True)
    for k, (a, b) in enumerate(zip(got["params"], want["params"])):
        if not torch.equal(a, b):
            bad.append(f"param {k} differs after resume by {(a - b).abs().max().item():.3g}")
    for pid, st in want["optim"]["state"].items():
        for key, t in st.items():
            if not _same(got["optim"]["state"][pid][key], t):
                bad.append(f"state {pid}.{key} differs after resume")
    if got["optim"]["sr_generators"].keys() != want["optim"]["sr_generators"].keys() or any(
            not torch.equal(got["optim"]["sr_generators"][k], g)
            for k, g in want["optim"]["sr_generators"].items()):
        bad.append("SR generator states differ after resume")
    return bad


def _mismatch_case(name, rank, world, folder, saved_world) -> list[str]:
    """A checkpoint saved at ``saved_world`` ranks, loaded at ``world``: refused naming both."""
    try:
        _resume(name, rank, folder, rank % saved_world)
    except ValueError as e:
        msg = str(e)
        if f"over {saved_world} rank(s)" in msg and f"sharded over {world}" in msg:
            return []
        return [f"message does not name both sizes: {msg}"]
    return [f"a {saved_world}-rank checkpoint loaded at {world} ranks without an error"]


def spawn(fn, world: int, *args) -> None:
    """Start ``world`` gloo ranks running ``fn(rank, world, port, *args)``.

    Forked from a forkserver that imported this module (so torch) once: a spawned rank imports
    torch afresh (36 s for 4 ranks on a busy 2-core machine against 7 s forked), and forking
    pytest itself fails once autograd has run there."""
    import multiprocessing
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # FSDP2 imports dynamo/inductor at its first step (about 5 s): once, in the server
    multiprocessing.set_forkserver_preload([__name__, "torch._dynamo", "torch._inductor.config"])
    mp.start_processes(fn, args=(world, port, *args), nprocs=world, join=True,
                       start_method="forkserver")
