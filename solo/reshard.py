"""torch.distributed.checkpoint (DCP) state dicts of the solo optimizers, loadable at another
world size.

Called from torch's ``get_optimizer_state_dict`` (torch.distributed.checkpoint.state_dict), a
solo optimizer's ``state_dict()`` returns this reshardable form instead of the per-rank one;
``load_state_dict`` recognises it (``set_optimizer_state_dict`` passes it on) and turns it
back into this rank's per-rank state, requantizing where the block layout changed.

Per parameter, every tensor is a DTensor with the parameter's dim-0 sharding, so DCP reads
any rank's rows at any world size:

- fp32 / bf16 states: the value itself (resharded exactly);
- block-quantized states (``de``, ``linear``, their ``-sr``, ``log``): the codes unpacked,
  one uint8 per element (``<state>_dcp_codes``, the parameter's shape), and each per-block
  field (``scales``; ``alphas`` for ``log``) once per *cell* of ``gcd(row numel, block size)``
  elements (``<state>_dcp_scales``: rows x cells per row). Blocks start at a shard's first row
  plus multiples of the block size and end there or at the shard's end, so at every world size
  a block is a whole number of cells;
- ``rank1-linear`` states: the dequantized fp32 value (its scales are per-shard row and
  column maxima, which no other layout shares);
- ``dcp_shards``: how many dim-0 shards the parameter had when saved.

Cost while saving (the per-rank form: bits/8 bytes an element plus 4 bytes a block per field):
1 byte an element per block-quantized state plus 4 bytes per cell and field (a 576-wide row
and 128-element blocks: cells of 64, so 1.06 bytes an element; a 1-D bias: cells of 1, 5 or
9 bytes an element); 4 bytes an element for rank-1 states, as for fp32 ones.

Loading: a block of the new layout that is exactly a block of the saved one gets its codes,
scale and alpha as saved (bit-identical); every other block is dequantized element by element
(``level[code] * scale`` or ``alpha**code * scale``, as ``decode`` computes) and requantized
with the new blocks: nearest rounding moves an element by at most half a level of the new
block, stochastic rounding (``-sr``, ``log``) by less than one level; a value below the lowest
level of a zero-free grid (unsigned ``linear``, ``log``) moves up to that level. The SR
generators of every shard are saved; at the same
shard count each rank gets its own back (a DCP resume is bit-exact), at another count shard
``i`` starts a fresh stream seeded from (``seed``, step, ``i``), which also draws the
requantization's rounding.

For comparison, torchao 0.18's low-bit optimizers (torchao/optim/subclass_4bit.py) keep each
state as a DTensor of a tensor subclass that DCP slices on load, and refuse a slice that does
not fall on a block boundary; here such blocks are requantized instead.

Supported layouts: parameters sharded on dim 0 over one mesh dim (FSDP2's ``fully_shard``;
HSDP's replicate x shard untested), and plain or replicated ones (one shard). Tested with
torch's default StateDictOptions only.

torch APIs relied on (read in torch 2.14.1): ``get_optimizer_state_dict`` calls the optimizer's
own ``state_dict()``, keeps only ``state`` and ``param_groups`` (hence the generators and the
format record live in ``param_groups[0]``, identical on every rank, as DCP stores one copy of a
non-DTensor entry), and builds a fresh optimizer's states with a zero-lr step before the first
backward; ``dcp.load`` fills DTensors of the loading layout from any saved one;
``set_optimizer_state_dict`` hands the result to ``load_state_dict``
(https://docs.pytorch.org/docs/2.14/distributed.checkpoint.html); ``DTensor.from_local`` with
``shape`` and ``stride`` for shards of torch.chunk sizes
(https://docs.pytorch.org/docs/2.14/distributed.tensor.html).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist

from . import distributed
from .codecs import BlockCodec, LogCodec
from .distributed import local
from .packing import pack, unpack

__all__ = ["called_by_dcp", "is_dcp_form", "to_dcp", "from_dcp"]

_DCP_MODULE = "torch.distributed.checkpoint.state_dict"
_RECORD = "solo_dcp"  # param_groups[0] key: (format version, {generator key: state})
_FIELDS = ("scales", "alphas")


def called_by_dcp(depth: int = 4) -> bool:
    """Whether torch's ``get_optimizer_state_dict`` is (at most ``depth`` frames up) the caller
    of the ``state_dict()`` that calls this: torch gives the optimizer no other signal."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == _DCP_MODULE:
            return True
        frame = frame.f_back
    return False


def is_dcp_form(state_dict: dict) -> bool:
    groups = state_dict.get("param_groups") or [{}]
    return _RECORD in groups[0]


def _layout(p: torch.Tensor) -> tuple[int, int]:
    """(shard index, shard count) of ``p`` along dim 0; refuses other shardings."""
    if distributed.is_dtensor(p):
        shards = [pl for pl in p.placements if pl.is_shard()]
        if len(shards) > 1 or any(pl.dim != 0 for pl in shards) or any(
                not (pl.is_shard() or pl.is_replicate()) for pl in p.placements):
            raise ValueError(f"DCP resharding of solo optimizer states supports parameters "
                             f"sharded on dim 0 over one mesh dim (fully_shard); this one has "
                             f"placements {p.placements}: save per rank (opt.state_dict())")
    return distributed.shard_of(p) or (0, 1)


def _row_offsets(rows: int, count: int) -> list[int]:
    """First row of each of ``count`` dim-0 shards (torch.chunk's split, as FSDP2 and DTensor)."""
    sizes = [len(c) for c in torch.arange(rows).chunk(count)] if rows else []
    sizes += [0] * (count - len(sizes))
    return [sum(sizes[:i]) for i in range(count + 1)]


def _blocks(offset: int, n: int, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(starts, ends) in whole-tensor elements of a shard's blocks, and its block length."""
    b = min(block, max(n, 1))
    starts = offset + torch.arange(max(1, -(-n // b)), dtype=torch.int64) * b
    return starts, torch.clamp(starts + b, max=offset + n), b


def _dtensor(t: torch.Tensor, p: torch.Tensor, shape) -> torch.Tensor:
    if not distributed.is_dtensor(p):
        return t
    from torch.distributed.tensor import DTensor

    shape = torch.Size(shape)
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    return DTensor.from_local(t.contiguous(), p.device_mesh, p.placements, run_check=False,
                              shape=shape, stride=stride)


def _row_numel(p: torch.Tensor) -> int:
    return math.prod(p.shape[1:]) if p.dim() else 1


def to_dcp(opt, sd: dict) -> dict:
    """``sd`` (``opt``'s per-rank state dict) in the reshardable form, in place. Collective:
    every rank's SR generators are gathered, as every rank calls get_optimizer_state_dict."""
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = [g for g in opt.param_groups for _ in g["params"]]
    for pid, p, group in zip([i for g in sd["param_groups"] for i in g["params"]], params,
                             groups):
        if pid not in sd["state"]:
            continue
        # a copy: torch's state_dict() shares each parameter's state dict with the optimizer
        st = sd["state"][pid] = dict(sd["state"][pid])
        st["dcp_shards"] = torch.tensor(_layout(p)[1], dtype=torch.int64)
        shape = (p.shape[0], 1) if p.dim() == 0 else p.shape
        for name, codec in zip(("exp_avg", "exp_avg_sq"), opt.codecs(group, p)):
            if not codec.quantized:
                st[name] = _dtensor(st[name], p, p.shape)
                continue
            fields = {f: st.pop(f"{name}_{f}") for f in ("codes", *_FIELDS)
                      if f"{name}_{f}" in st}
            lp = local(p)
            if not isinstance(codec, (BlockCodec, LogCodec)):
                st[f"{name}_dcp_value"] = _dtensor(codec.decode(fields, lp.shape), p, p.shape)
                continue
            n, cell = lp.numel(), math.gcd(_row_numel(p), codec.block_size)
            codes = unpack(fields["codes"], codec.bits, n)
            st[f"{name}_dcp_codes"] = _dtensor(codes.reshape(lp.shape), p, p.shape)
            b = min(codec.block_size, max(n, 1))
            block_of_cell = torch.arange(n // cell, device=codes.device) * cell // b
            for f in _FIELDS:
                if f in fields:
                    cells = fields[f][block_of_cell].reshape(-1, _row_numel(p) // cell)
                    st[f"{name}_dcp_{f}"] = _dtensor(cells, p, (shape[0], cells.shape[1]))
    gens = dict(sd.pop("sr_generators", {}))
    sd.pop("sharding", None)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, gens)
        gens = {k: v for g in reversed(every) for k, v in g.items()}
    if sd["param_groups"]:
        sd["param_groups"][0][_RECORD] = (1, gens)
    return sd


def _reseeded(seed: int, step: int, index: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    # offset by 2**32: never the stream shard `index` started with at step 0
    g.manual_seed(distributed.shard_seed(distributed.shard_seed(seed, 2**32 + step), index))
    return g


def from_dcp(opt, sd: dict) -> dict:
    """This rank's per-rank state dict from a reshardable one (as ``load_state_dict`` takes)."""
    version, saved_gens = sd["param_groups"][0][_RECORD]
    if version != 1:
        raise ValueError(f"DCP optimizer state of format {version!r}; this solo reads format 1: "
                         f"update solo")
    out_groups = [{k: v for k, v in g.items() if k != _RECORD} for g in sd["param_groups"]]
    seed = out_groups[0].get("seed", opt.param_groups[0]["seed"])
    gens: dict[str, torch.Generator] = {}
    state = {}
    pids = [i for g in out_groups for i in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    # the saved groups' format knobs: load_state_dict then refuses any that differ from ours
    for pid, p, saved_group in zip(pids, params,
                                   [g for g in out_groups for _ in g["params"]]):
        st = sd["state"].get(pid)
        if st is None:
            continue
        st = dict(st)
        index, count = _layout(p)
        saved_count = int(st.pop("dcp_shards"))
        key = str(p.device) + ("" if distributed.shard_of(p) is None else f"/shard{index}")
        if key not in gens and saved_count == count and key in saved_gens:
            gens[key] = torch.Generator(device=p.device)
            gens[key].set_state(saved_gens[key])
        elif key not in gens and saved_count != count and saved_gens:
            # the saved run drew SR numbers: this shard's stream goes on from a fresh seed
            gens[key] = _reseeded(seed, int(local(st["step"]).item()), index, p.device)
        gen = gens.get(key) or _reseeded(seed, int(local(st["step"]).item()), index, p.device)
        state[pid] = _local_state(opt, saved_group, p, st, index, count, saved_count, gen)
    return {"state": state, "param_groups": out_groups,
            "sr_generators": {k: g.get_state() for k, g in gens.items()},
            **({"sharding": s} if (s := opt._sharding()) is not None else {})}


def _local_state(opt, group, p, st, index, count, saved_count, gen) -> dict:
    out = {"step": local(st.pop("step"))}
    lp = local(p)
    n = lp.numel()
    rows = p.shape[0] if p.dim() else 1
    offset = _row_offsets(rows, count)[index] * _row_numel(p)
    for name, codec in zip(("exp_avg", "exp_avg_sq"), opt.codecs(group, p)):
        if not codec.quantized:
            out[name] = local(st[name])
            continue
        fields = codec.init(lp.shape, lp.device)
        out.update({f"{name}_{f}": t for f, t in fields.items()})
        if f"{name}_dcp_value" in st:
            codec.encode(local(st[f"{name}_dcp_value"]).float().reshape(lp.shape), fields, gen)
            continue
        if n == 0:
            continue
        cell = math.gcd(_row_numel(p), codec.block_size)
        codes = local(st[f"{name}_dcp_codes"]).reshape(-1).long()
        cells = {f: local(st[f"{name}_dcp_{f}"]).reshape(-1) for f in _FIELDS
                 if f"{name}_dcp_{f}" in st}
        starts, ends, b = _blocks(offset, n, codec.block_size)
        # the saved layout's blocks, to find the new blocks that are exactly one of them
        offs = [o * _row_numel(p) for o in _row_offsets(rows, saved_count)]
        old = [_blocks(offs[s], offs[s + 1] - offs[s], codec.block_size)[:2]
               for s in range(saved_count)]
        old_starts, old_ends = torch.cat([o[0] for o in old]), torch.cat([o[1] for o in old])
        at = torch.searchsorted(old_starts, starts).clamp_(max=old_starts.numel() - 1)
        same = ((old_starts[at] == starts) & (old_ends[at] == ends)).to(codes.device)
        if not bool(same.all()):
            elem = {f: c.repeat_interleave(cell) for f, c in cells.items()}
            if isinstance(codec, LogCodec):
                x = elem["alphas"].pow(codes.float()) * elem["scales"]
            else:
                x = codec.levels.to(codes.device)[codes] * elem["scales"]
            codec.encode(x.reshape(lp.shape), fields, gen)
        keep = same[torch.arange(n, device=codes.device) // b]
        new_codes = unpack(fields["codes"], codec.bits, n).clone()
        new_codes[keep] = codes[keep].to(torch.uint8)
        pack(new_codes, codec.bits, out=fields["codes"])
        first_cell = ((starts - offset) // cell).to(codes.device)
        for f, c in cells.items():
            fields[f][same] = c[first_cell][same]
    return out
