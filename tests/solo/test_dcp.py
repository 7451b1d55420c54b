"""torch.distributed.checkpoint (DCP) save/load of solo optimizers under FSDP2 at another world
size: 2 -> 4, 4 -> 2, 2 -> 1, 1 -> 2 gloo ranks (and 2 -> 2, which must be exact). The ranks run
tests/solo/dcp_workers.py; each case below reads what they compared.
"""

import json

import dcp_workers as workers
import fsdp_workers
import pytest

pytestmark = pytest.mark.distributed

RESHARD = [(2, 4), (4, 2), (2, 1), (1, 2), (2, 2)]
# (world, save there, worlds whose checkpoints it loads), in an order that saves before loading
PHASES = [(2, True, []), (1, True, [2]), (4, True, [2]), (2, False, [4, 1, 2])]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcp")
    out = folder / "results.json"
    for world, save, loads in PHASES:
        fsdp_workers.spawn(workers.run, world, str(folder), str(out), save, loads)
    res = json.loads(out.read_text())
    print(json.dumps({k: {m: v for m, v in r.items() if m != "problems"}
                      for k, r in res.items() if k.startswith("load")}, indent=1))
    return res


def _check(res: dict, case: str) -> dict:
    assert case in res, f"the ranks did not run {case}"
    assert res[case]["problems"] == [], res[case]["problems"]
    return res[case]


@pytest.mark.parametrize("name", workers.PRESETS)
@pytest.mark.parametrize("saved,world", RESHARD)
def test_dcp_reshard(results, name, saved, world):
    """A DCP checkpoint of ``saved`` ranks loads at ``world`` ranks through torch's
    get/set_optimizer_state_dict: fp32/bf16 states exactly; block-quantized states
    bit-identical (codes, scales, alphas) in every block that is a block of both layouts, and
    elsewhere within one quantization level of the loaded grid; at the same world size the
    per-rank state and SR generators come back exactly; the optimizer steps on."""
    _check(results, f"save:{name}:{saved}")
    r = _check(results, f"load:{name}:{saved}->{world}")
    assert r["max_error_levels"] <= 1 + 1e-5
    if r["quantized_elements"]:
        # b.weight's shards are whole blocks at 1, 2 and 4 ranks: its blocks always coincide
        assert r["bit_identical_elements"] >= 64 * 200
    if saved == world and r["quantized_elements"] and name != "adamw4bit_rank1":
        assert r["bit_identical_elements"] == r["quantized_elements"]
        assert r["max_error_levels"] == 0
