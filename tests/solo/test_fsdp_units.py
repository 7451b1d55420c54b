"""Single-process parts of the FSDP2 support (solo/distributed.py): fast, default suite."""

import pytest
import torch

from solo.distributed import check_sharding, shard_seed


@pytest.mark.parametrize("saved,now,match", [
    ({"index": 0, "count": 2}, {"index": 0, "count": 4}, "sharded over 2 rank.*sharded over 4"),
    (None, {"index": 1, "count": 2}, "no sharding record.*over 1 rank.*sharded over 2"),
    ({"index": 1, "count": 2}, {"index": 0, "count": 2}, "shard 1 of 2.*holds shard 0"),
])
def test_check_sharding_names_both(saved, now, match):
    with pytest.raises(ValueError, match=match):
        check_sharding(saved, now)


def test_shard_seeds():
    """Shard 0 keeps the seed (a 1-rank run draws what a plain run draws); others differ."""
    assert shard_seed(5, 0) == 5
    seeds = {shard_seed(5, i) for i in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**64 for s in seeds)
    torch.Generator().manual_seed(shard_seed(2**64 - 1, 3))


def _fsdp_model():
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 130), nn.ReLU(), nn.Linear(130, 2))
    plain = nn.Sequential(nn.Linear(8, 130), nn.ReLU(), nn.Linear(130, 2))
    plain.load_state_dict(model.state_dict())
    fully_shard(model)
    return model, plain


def test_one_rank_fsdp_steps_like_a_plain_model(one_rank):
    """At one rank a sharded model steps exactly like the plain one (shard 0 draws from the
    seed's own stream), its checkpoint records the sharding, and state_bytes counts it."""
    import solo

    model, plain = _fsdp_model()
    opt = solo.presets.solo_2bit(model.parameters(), lr=1e-2, seed=3)
    ref = solo.presets.solo_2bit(plain.parameters(), lr=1e-2, seed=3)
    x = torch.randn(4, 8)
    for _ in range(3):
        for m, o in ((model, opt), (plain, ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p.to_local(), q)
    assert solo.state_bytes(opt) == solo.state_bytes(ref) == solo.state_bytes(opt, all_ranks=True)
    sd = opt.state_dict()
    assert sd["sharding"] == {"index": 0, "count": 1} and list(sd["sr_generators"]) == ["cpu/shard0"]
    with pytest.raises(ValueError, match="sharded over 2 rank.*sharded over 1"):
        opt.load_state_dict({**sd, "sharding": {"index": 0, "count": 2}})


def test_state_bytes_of_torch_adamw_on_dtensors(one_rank):
    """torch.optim.AdamW keeps DTensor states under FSDP2: counted as fp32, this rank's part
    (it used to crash on DeviceMesh)."""
    import solo

    model, _ = _fsdp_model()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    steps = sum(st["step"].numel() * st["step"].element_size() for st in opt.state.values())
    assert solo.state_bytes(opt) == {"quantized": 0, "full_precision": 8 * n + steps,
                                     "total": 8 * n + steps}


@pytest.mark.parametrize("name,fused", [("adamw32", None), ("adamw32", False),
                                        ("adamw_bf16", None), ("adabelief32", None)])
def test_fp32_presets_do_not_depend_on_how_a_tensor_is_split(name, fused):
    """What the FSDP tests compare with: stepping a tensor whole or as two shards gives the
    same bits on the reference and bf16 paths; torch's fused AdamW kernel (adamw32, fused
    unset) rounds its vector body and scalar tail differently, at most one ulp."""
    import solo

    torch.manual_seed(0)
    whole = torch.randn(200)
    halves = [t.clone() for t in whole.split(100)]
    opts = [solo.PRESETS[name](ps, lr=1e-2, weight_decay=0.01, fused=fused)
            for ps in ([whole], halves)]
    for _ in range(4):
        g = torch.randn(200) * 1e-3
        whole.grad = g.clone()
        for h, gh in zip(halves, g.split(100)):
            h.grad = gh.clone()
        for o in opts:
            o.step()
    diff = (whole - torch.cat(halves)).abs()
    if name == "adamw32" and fused is None:
        assert (diff <= torch.nextafter(whole.abs(), torch.tensor(float("inf"))) - whole.abs()).all()
    else:
        assert not diff.any()
