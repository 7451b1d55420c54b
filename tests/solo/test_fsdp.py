"""solo optimizers on FSDP2 (DTensor parameters) and DDP, 2 and 4 gloo ranks on CPU. The ranks
run tests/solo/fsdp_workers.py; each case below reads what they compared.

Three groups of forked ranks (a few seconds each): 2 ranks run every preset and save the
half-way checkpoints; 2 fresh ranks resume them; 4 ranks run every preset and try to load the
2-rank checkpoints.
"""

import json

import fsdp_workers as workers
import pytest

import solo

pytestmark = pytest.mark.distributed

STEPS = 4
PRESETS = list(solo.PRESETS)
CASES = {
    2: [f"fsdp:{n}" for n in PRESETS] + ["fsdp:adamw32:fused=False",
                                         "fsdp:solo_4_2bit:fused=False", "fsdp-bf16:adamw32",
                                         "fsdp-bf16:solo_4_2bit",
                                         "fsdp-bf16-reduce:solo_4_2bit", "ddp:adamw32",
                                         "ddp:solo_2bit", "nonfinite", "state_bytes"]
    + [f"save:{n}" for n in workers.CKPT_PRESETS],
    4: [f"fsdp:{n}" for n in PRESETS] + ["fsdp:adamw32:fused=False",
                                         "fsdp:solo_4_2bit:fused=False", "fsdp-bf16:adamw32",
                                         "fsdp-bf16:solo_4_2bit", "nonfinite", "state_bytes"]
    + [f"mismatch:{n}" for n in workers.CKPT_PRESETS],
}
RESUME = [f"resume:{n}" for n in workers.CKPT_PRESETS]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    out = {}
    workers.spawn(workers.run_presets, 2, str(folder / "w2.json"), str(folder), 2, STEPS)
    out[2] = json.loads((folder / "w2.json").read_text())
    workers.spawn(workers.run_resume, 2, str(folder), STEPS, str(folder / "resume.json"))
    out["resume"] = json.loads((folder / "resume.json").read_text())
    workers.spawn(workers.run_presets, 4, str(folder / "w4.json"), str(folder), 2, STEPS)
    out[4] = json.loads((folder / "w4.json").read_text())
    return out


def _check(res: dict, case: str) -> None:
    assert case in res, f"the ranks did not run {case}"
    assert res[case] == "", res[case]


@pytest.mark.parametrize("case", CASES[2])
def test_two_ranks(results, case):
    """Every preset under fully_shard equals a single-process optimizer on the same shards
    bit for bit (states included), and the fp32-state presets the single-process update of
    the whole tensors; bf16 mixed precision; DDP replicas stay identical; state_bytes."""
    _check(results[2], case)


@pytest.mark.parametrize("case", CASES[4])
def test_four_ranks(results, case):
    """As test_two_ranks with 4 ranks (one rank's shard of a 3-row layer is empty); a
    2-rank checkpoint is refused, naming both sizes."""
    _check(results[4], case)


@pytest.mark.parametrize("case", RESUME)
def test_checkpoint_resume_is_bit_exact(results, case):
    """N steps straight == N/2 steps, per-rank save, fresh processes load, N/2 more:
    parameters, states and SR generators bit-identical; another rank's file is refused."""
    _check(results["resume"], case)


def test_every_preset_is_covered():
    assert set(PRESETS) <= {c.split(":")[1] for c in CASES[2] if c.startswith("fsdp:")}
    assert set(PRESETS) <= {c.split(":")[1] for c in CASES[4] if c.startswith("fsdp:")}
