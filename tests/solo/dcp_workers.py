"""Worker processes for tests/solo/test_dcp.py: gloo ranks on CPU that save solo optimizer
states under FSDP2 through torch.distributed.checkpoint (DCP) and load them at another world
size, reporting what they compared and measured.

Each ``run_*`` function is one spawn target (fsdp_workers.spawn); rank 0 writes a JSON
``{case: {"problems": [...], ...measurements}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsdp_workers as fw
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from solo.codecs import LogCodec, Rank1Codec
from solo.packing import unpack

STEPS = 3
#: nearest (de + linear), stochastic + log (solo), rank-1 scales, fp32 and bf16 states
PRESETS = ("adamw4bit", "solo_4_2bit", "adamw4bit_rank1", "adamw32", "adamw_bf16")
_STATES = ("exp_avg", "exp_avg_sq")


def _full(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return DTensor.from_local(t.contiguous(), p.device_mesh, p.placements, run_check=False,
                              shape=p.shape, stride=p.stride()).full_tensor()


def _elementwise(opt, p, group, st, name, codec) -> dict:
    """This rank's state ``name`` of ``p`` as whole-parameter tensors (collective): the
    dequantized value, and for block codecs the codes and each element's scale (and alpha)."""
    lp = p.to_local()
    fields = opt._fields(st, name, codec)
    out = {"deq": _full(codec.decode(fields, lp.shape).float(), p)}
    if not codec.quantized:
        return out
    n = lp.numel()
    if isinstance(codec, Rank1Codec) and lp.dim() >= 2:
        maxes = fields["scales"].split(list(lp.shape))
        out["scales"] = _full(torch.minimum(maxes[0][:, None], maxes[1][None, :]), p)
        out["levels"] = codec.levels
        return out
    b = min(codec.block_size, max(n, 1))
    blk = torch.arange(n) // b
    out["codes"] = _full(unpack(fields["codes"], codec.bits, n).reshape(lp.shape), p)
    for f in ("scales", "alphas"):
        if f in fields:
            out[f] = _full(fields[f][blk].reshape(lp.shape), p)
    out["levels"] = getattr(codec, "levels", None)  # None for log (levels per block)
    return out


def global_states(model, opt) -> dict:
    """{param name: {state: {field: whole tensor}}} of every parameter with a state."""
    group = opt.param_groups[0]
    out = {}
    for fqn, p in model.named_parameters():
        st = opt.state[p]
        out[fqn] = {"step": st["step"].clone()}
        for name, codec in zip(_STATES, opt.codecs(group, p)):
            out[fqn][name] = _elementwise(opt, p, group, st, name, codec)
    return out


def _block_bounds(p, block: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each element's block (start, end) when ``p`` is split over ``count`` dim-0 shards."""
    row = p[0].numel()
    sizes = [len(c) * row for c in torch.arange(p.shape[0]).chunk(count)]
    starts, ends, off = [], [], 0
    for n in sizes:
        b = min(block, max(n, 1))
        i = torch.arange(n)
        starts.append(off + i // b * b)
        ends.append(torch.clamp(off + (i // b + 1) * b, max=off + n))
        off += n
    return torch.cat(starts).reshape(p.shape), torch.cat(ends).reshape(p.shape)


def _level_unit(x: torch.Tensor, after: dict, codec) -> torch.Tensor:
    """Per element, the gap between the two levels of the loaded state's grid around ``x``
    (below the lowest level: that level, i.e. the gap to 0, or the lowest gap if signed)."""
    if isinstance(codec, LogCodec):
        k = torch.arange(2**codec.bits - 1, -1, -1, dtype=torch.float32)
        grid = after["alphas"].reshape(-1, 1).pow(k) * after["scales"].reshape(-1, 1)
    else:
        grid = after["levels"].reshape(1, -1) * after["scales"].reshape(-1, 1)
    xs = x.reshape(-1, 1)
    i = torch.searchsorted(grid.contiguous(), xs.contiguous()).clamp_(1, grid.shape[1] - 1)
    gap = (grid.gather(1, i) - grid.gather(1, i - 1))[:, 0]
    low = grid[:, 0]
    below = xs[:, 0] < low
    gap = torch.where(below & (low > 0), low, gap)
    return gap.reshape(x.shape)


def compare(before: dict, after: dict, model, opt, saved_world: int, world: int) -> dict:
    """Problems, the largest |after - before| of the dequantized states in levels of the
    loaded grid, and how many elements of block-quantized states lie in blocks that coincide
    in both layouts (and are checked bit-identical: codes, scales, alphas, values)."""
    group = opt.param_groups[0]
    bad, worst, same_n, total_n = [], 0.0, 0, 0
    for fqn, p in model.named_parameters():
        if not torch.equal(before[fqn]["step"], after[fqn]["step"]):
            bad.append(f"{fqn}: step differs")
        for name, codec in zip(_STATES, opt.codecs(group, p)):
            b, a = before[fqn][name], after[fqn][name]
            where = f"{fqn}.{name}"
            if not codec.quantized:
                if not torch.equal(a["deq"], b["deq"]):
                    bad.append(f"{where}: fp state not resharded exactly")
                continue
            total_n += p.numel()
            same = torch.zeros(p.shape, dtype=torch.bool)
            if "codes" in a and not isinstance(codec, Rank1Codec):
                s0, e0 = _block_bounds(p, codec.block_size, saved_world)
                s1, e1 = _block_bounds(p, codec.block_size, world)
                same = (s0 == s1) & (e0 == e1)
                same_n += int(same.sum())
                for f in ("codes", "scales", "alphas", "deq"):
                    if f in a and not torch.equal(a[f][same], b[f][same]):
                        bad.append(f"{where}: {f} differ in blocks that coincide")
            err = (a["deq"] - b["deq"]).abs()
            unit = _level_unit(b["deq"], a, codec)
            ratio = torch.where(err > 0, err / unit, torch.zeros_like(err))[~same]
            if ratio.numel():
                worst = max(worst, float(ratio.max()))
    if worst > 1 + 1e-5:
        bad.append(f"resharding error {worst:.4f} levels > 1")
    return {"problems": bad, "max_error_levels": worst, "bit_identical_elements": same_n,
            "quantized_elements": total_n}


def _ckpt(folder: Path, name: str, world: int) -> Path:
    return folder / f"{name}.w{world}"


def save_case(name: str, rank: int, world: int, folder: Path) -> dict:
    model = fw._sharded_model()
    opt = fw._preset(name, list(model.parameters()))
    for step in range(STEPS):
        fw._backward(model, step, rank)
        opt.step()
    dcp.save({"model": get_model_state_dict(model),
              "optim": get_optimizer_state_dict(model, opt)},
             checkpoint_id=str(_ckpt(folder, name, world)))
    states = global_states(model, opt)
    params = {k: v.full_tensor() for k, v in model.state_dict().items()}
    torch.save(opt.state_dict(), _ckpt(folder, name, world) / f"per_rank{rank}.pt")
    if rank == 0:
        torch.save({"states": states, "params": params},
                   _ckpt(folder, name, world) / "reference.pt")
    return {"problems": []}


def load_case(name: str, rank: int, world: int, folder: Path, saved_world: int) -> dict:
    """Fresh model and optimizer (other init and seed) load the ``saved_world`` checkpoint."""
    model = fw._sharded_model(init_seed=7)
    opt = fw._preset(name, list(model.parameters()), seed=99)
    msd, osd = get_model_state_dict(model), get_optimizer_state_dict(model, opt)
    dcp.load({"model": msd, "optim": osd}, checkpoint_id=str(_ckpt(folder, name, saved_world)))
    set_model_state_dict(model, msd)
    set_optimizer_state_dict(model, opt, osd)
    ref = torch.load(_ckpt(folder, name, saved_world) / "reference.pt", weights_only=True)
    res = compare(ref["states"], global_states(model, opt), model, opt, saved_world, world)
    for k, v in model.state_dict().items():
        if not torch.equal(v.full_tensor(), ref["params"][k]):
            res["problems"].append(f"parameter {k} differs after load")
    if saved_world == world:
        # same layout: the per-rank state dict, SR generators included, comes back exactly
        want = torch.load(_ckpt(folder, name, world) / f"per_rank{rank}.pt", weights_only=True)
        got = opt.state_dict()
        for pid, st in want["state"].items():
            res["problems"] += [f"state {pid}.{k} differs" for k, t in st.items()
                                if not fw._same(got["state"][pid][k], t)]
        if got["sr_generators"].keys() != want["sr_generators"].keys() or any(
                not torch.equal(got["sr_generators"][k], g)
                for k, g in want["sr_generators"].items()):
            res["problems"].append("SR generators differ")
    # the loaded optimizer steps on
    fw._backward(model, STEPS, rank)
    opt.step()
    if not all(torch.isfinite(p.to_local()).all() for p in model.parameters()):
        res["problems"].append("a parameter is not finite after a step")
    return res


def _guard(fn, *args) -> dict:
    problems = fw._guard(fn, *args)
    return problems if isinstance(problems, dict) else {"problems": problems}


def run(rank: int, world: int, port: int, folder: str, out: str, save: bool,
        loads: list[int], presets=PRESETS) -> None:
    """Save each preset's checkpoint at ``world`` ranks (``save``), then load the checkpoints
    written at each world size in ``loads``."""
    fw._init(rank, world, port)
    folder = Path(folder)
    res = {}
    for name in presets:
        if save:
            res[f"save:{name}:{world}"] = _guard(save_case, name, rank, world, folder)
        for saved in loads:
            res[f"load:{name}:{saved}->{world}"] = _guard(load_case, name, rank, world, folder,
                                                          saved)
    gathered = [None] * world
    dist.all_gather_object(gathered, res)
    if rank == 0:
        merged = {}
        for case in res:
            merged[case] = dict(gathered[0][case])
            merged[case]["problems"] = [f"rank {r}: {m}" for r, g in enumerate(gathered)
                                        for m in g[case]["problems"]]
        path = Path(out)
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **merged}, indent=1))
    dist.destroy_process_group()

