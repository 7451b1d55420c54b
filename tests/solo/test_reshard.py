"""Single-process parts of the DCP form (solo/reshard.py): fast, default suite. Resharding over
2 and 4 ranks is tests/solo/test_dcp.py."""

import copy

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

import solo
from solo import reshard


def _train(model, opt, steps=2):
    torch.manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 8)).square().mean().backward()
        opt.step()


def _model(sharded: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 130), nn.ReLU(), nn.Linear(130, 2))
    if sharded:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    return model


def _assert_same_state_dict(got, want):
    assert got["state"].keys() == want["state"].keys()
    for pid, st in want["state"].items():
        assert st.keys() == got["state"][pid].keys()
        for k, t in st.items():
            assert got["state"][pid][k].dtype == t.dtype and torch.equal(got["state"][pid][k], t)
    assert got["sr_generators"].keys() == want["sr_generators"].keys()
    assert all(torch.equal(got["sr_generators"][k], g) for k, g in want["sr_generators"].items())
    assert got.get("sharding") == want.get("sharding")


def _round_trip(sharded: bool, preset: str, tmp_path):
    model = _model(sharded)
    opt = solo.PRESETS[preset](model.parameters(), lr=1e-2, seed=3)
    _train(model, opt)
    per_rank = copy.deepcopy(opt.state_dict())
    osd = get_optimizer_state_dict(model, opt)
    # only torch's get_optimizer_state_dict gets the DCP form; the live state is untouched
    _assert_same_state_dict(opt.state_dict(), per_rank)
    dcp.save({"optim": osd}, checkpoint_id=str(tmp_path / "ckpt"))
    # torch builds the template's states by a zero step, which it skips while grads exist
    opt.zero_grad(set_to_none=True)
    fresh = solo.PRESETS[preset](model.parameters(), lr=1e-2, seed=99)
    template = get_optimizer_state_dict(model, fresh)
    dcp.load({"optim": template}, checkpoint_id=str(tmp_path / "ckpt"))
    set_optimizer_state_dict(model, fresh, template)
    _assert_same_state_dict(fresh.state_dict(), per_rank)
    return osd


@pytest.mark.parametrize("preset", ["solo_4_2bit", "adamw4bit", "adamw4bit_rank1", "adamw32"])
def test_dcp_round_trip_on_one_fsdp_rank(one_rank, tmp_path, preset):
    """get_optimizer_state_dict -> dcp.save -> dcp.load -> set_optimizer_state_dict at the same
    layout gives back the per-rank state dict bit for bit, SR generators included."""
    osd = _round_trip(True, preset, tmp_path)
    from torch.distributed.tensor import DTensor

    st = osd["state"]["2.weight"]
    assert int(st["dcp_shards"]) == 1
    if preset in ("solo_4_2bit", "adamw4bit"):
        codes = st["exp_avg_dcp_codes"]
        assert isinstance(codes, DTensor) and codes.shape == (2, 130)
        assert codes.dtype == torch.uint8
        # 130-element rows, 128-element blocks: cells of gcd(130, 128) = 2 elements
        assert st["exp_avg_dcp_scales"].shape == (2, 65)
    if preset == "solo_4_2bit":
        assert st["exp_avg_sq_dcp_alphas"].shape == (2, 65)


def test_dcp_round_trip_of_a_plain_model(tmp_path):
    """Unsharded parameters (one process, no process group) take the same path as one shard."""
    osd = _round_trip(False, "solo_4_2bit", tmp_path)
    assert osd["state"]["0.weight"]["exp_avg_dcp_codes"].shape == (130, 8)


def test_another_state_format_is_refused():
    """A DCP state dict of one preset does not load into another (states would be misread)."""
    model = _model(False)
    opt = solo.presets.adamw4bit(model.parameters(), lr=1e-2)
    _train(model, opt, 1)
    osd = get_optimizer_state_dict(model, opt)
    opt.zero_grad(set_to_none=True)
    other = solo.presets.adamw2bit(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="checkpoint mismatch in param_groups.0. field 'bits'"):
        set_optimizer_state_dict(model, other, osd)


def test_plain_state_dict_is_the_per_rank_form():
    model = _model(False)
    opt = solo.presets.solo_4_2bit(model.parameters(), lr=1e-2)
    _train(model, opt, 1)
    sd = opt.state_dict()
    assert not reshard.is_dcp_form(sd)
    assert "exp_avg_codes" in sd["state"][0] and "exp_avg_dcp_codes" not in sd["state"][0]


def test_unsupported_placement_is_refused(one_rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    p = nn.Parameter(distribute_tensor(torch.randn(4, 256), mesh, [Shard(1)]))
    opt = solo.presets.solo_4_2bit([p], lr=1e-2)
    p.grad = distribute_tensor(torch.randn(4, 256), mesh, [Shard(1)])
    opt.step()
    with pytest.raises(ValueError, match=r"sharded on dim 0.*Shard\(dim=1\)"):
        reshard.to_dcp(opt, opt.state_dict())
