"""No input reachable from Python crashes the process.

The probes run in a child process (crash_probes.py, fuzz_knobs.py): a segfault or an abort
there fails these tests with the signal instead of killing pytest.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from solo import fused

HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def built():
    if fused.extension() is None:
        pytest.fail(f"the fused CPU step did not build: {fused.unavailable()}")


def _child(*args: str, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    r = subprocess.run([sys.executable, *args], cwd=HERE, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode < 0:
        pytest.fail(f"the child process died of {signal.Signals(-r.returncode).name}:\n"
                    f"{r.stderr[-3000:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


# probe -> what it must raise (type and a fragment of the message), or "ok"
EXPECTED = {
    "parameter resized under its states": "RuntimeError: param_groups[0]['params'][0] has shape "
                                          "(2000,) but its optimizer states were made for "
                                          "another shape ('exp_avg_codes' has shape (500,), "
                                          "expected (1000,))",
    "state codes edited to float": "RuntimeError: fused_step: m_codes must be Byte, got Float",
}
for _flag in (None, False):
    for _q in (1.5, 1.01, 2.0, float("nan")):
        EXPECTED[f"group quantile={_q} fused={_flag}"] = "ValueError: param_groups[0]: Invalid quantile"
    EXPECTED[f"edit quantile=1.5 fused={_flag}"] = "ValueError: param_groups[0]: Invalid quantile"
    EXPECTED[f"edit block_size=(64, 64) fused={_flag}"] = (
        "ValueError: param_groups[0]['block_size'] changed from (128, 128) to (64, 64)")
    EXPECTED[f"edit bits=(8, 4) fused={_flag}"] = (
        "ValueError: param_groups[0]['bits'] changed from (4, 2) to (8, 4)")
    EXPECTED[f"block_size=2**31-1 fused={_flag}"] = "ok"
EXPECTED.update({
    "kernel valid": "ok",
    "kernel m_scales short": "RuntimeError: fused_step: m_scales has 3 elements, expected 8",
    "kernel v_alphas short": "RuntimeError: fused_step: v_alphas has 3 elements, expected 8",
    "kernel m_codes short": "RuntimeError: fused_step: m_codes has 10 elements, expected 500",
    "kernel v_codes int32": "RuntimeError: fused_step: v_codes must be Byte",
    "kernel p float64": "RuntimeError: fused_step: param must be Float",
    "kernel p strided": "RuntimeError: fused_step: param must be contiguous",
    "kernel grad short": "RuntimeError: fused_step: grad has 10 elements, expected 1000",
    "kernel m_bits=5": "RuntimeError: fused_step: bits must be 2, 3, 4 or 8",
    "kernel v_bits=8 (tables of 2)": "RuntimeError: fused_step: v_codes has 250 elements",
    "kernel block=0": "RuntimeError: fused_step: block must be positive",
    "kernel block=-128": "RuntimeError: fused_step: block must be positive",
    "kernel block=12": "RuntimeError: fused_step: block must be a multiple of 8",
    "kernel block=64 (scales of 128)": "RuntimeError: fused_step: m_scales has 8 elements, "
                                       "expected 16",
    "kernel quantile=1.5": "RuntimeError: fused_step: quantile must be in [0, 1]",
    "kernel quantile=nan": "RuntimeError: fused_step: quantile must be in [0, 1]",
    "kernel m_levels short": "RuntimeError: fused_step: m_levels has 4 elements, expected 16",
    "kernel rand short": "RuntimeError: fused_step: rand has 10 elements, expected at least 1000",
    "kernel lut valid": "ok",
    "kernel lut out of range": "RuntimeError: fused_step: m_lut entry out of range",
    "kernel lut wrong size": "RuntimeError: fused_step: v_lut has 100 elements",
})


def test_hostile_inputs_raise_instead_of_crashing():
    """The issue's reproducers (quantile 1.01/1.5/2.0 in a group or set after construction,
    block_size and bits changed under existing states, huge blocks) and every argument of the
    C++ entry made wrong in turn: each raises (or runs), in the fused and the reference step."""
    got = json.loads(_child("crash_probes.py").strip().splitlines()[-1])
    assert got.keys() == EXPECTED.keys()
    wrong = {k: (got[k], EXPECTED[k]) for k in EXPECTED if not got[k].startswith(EXPECTED[k])}
    assert not wrong, wrong


def test_fuzz_knobs_and_mid_run_edits():
    """Random valid and invalid knobs at construction, in add_param_group and edited between
    steps: the fused and the reference optimizer accept and refuse the same inputs with
    ValueError/TypeError only, and agree on what they compute (fuzz_knobs.py; ~3 s)."""
    out = _child("fuzz_knobs.py", "--seconds", "3", "--seed", "0")
    report = json.loads(out.strip().splitlines()[-1])
    # the fuzz must exercise both sides: accepted configs that stepped, refused ones
    assert report["trials"] >= 30, report
    assert report["stepped"] >= 10 and report["refused"] >= 10, report
    assert report["compared"] >= 5, report
