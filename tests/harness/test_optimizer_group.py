"""Every optimizer the harness offers (the `optim` group as Hydra composes it: solo's presets,
the peers, any YAML under conf/optim) trains the cheapest task end to end from the command
line and writes a schema-valid record (marker `optimizers`, CI's test-cluster stage: minutes,
the torchao peers compile their step)."""

import json
import math
import os
import subprocess
import sys

import pytest
from harness_utils import ROOT

from experiments import records

pytestmark = [pytest.mark.optimizers, pytest.mark.timeout(1200)]

TASK = "swin"  # smoke scale: 8 steps of a 2-stage Swin on 8x8 inputs, the fastest runner


def offered_optimizers() -> list[str]:
    """The options of the `optim` config group, read from Hydra after register_configs()."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        names = GlobalHydra.instance().config_loader().get_group_options("optim")
    return sorted(names)


OPTIMIZERS = offered_optimizers()


def test_the_group_holds_solos_presets_and_the_peers():
    # The parametrization below is only as good as the discovery: guard it.
    assert {"adamw32", "solo_4_2bit", "torchao_adamw4bit", "torchao_adamw8bit",
            "bnb_adamw8bit"} <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_runs_a_smoke_task_to_a_valid_record(tmp_path, name):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "SOLO_RECORDS_DIR": str(tmp_path / "records"),
           "SOLO_OUTPUTS_DIR": str(tmp_path / "outputs")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"task={TASK}", "scale=smoke", f"optim={name}",
         "logger=none"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1100)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    paths = sorted((tmp_path / "records").rglob("*.json"))
    assert [p.relative_to(tmp_path / "records").as_posix() for p in paths] == [
        f"smoke/{TASK}/{name}/seed0.json"]
    record = records.load_record(paths[0], root=tmp_path / "records")  # schema-checked
    assert record["optim"] == name and math.isfinite(record["metrics"]["train_loss"])
    assert record["memory"]["state_bytes"]["total"] > 0
    (history,) = (tmp_path / "outputs").rglob("metrics.jsonl")
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs and all(isinstance(lr, float) and lr > 0 for lr in lrs)
