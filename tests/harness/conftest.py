"""Fixtures for the harness tests (helpers live in harness_utils.py: tests/solo has its own
conftest, so `import conftest` would be ambiguous)."""

from pathlib import Path

import pytest
from harness_utils import SOLO_OPTIM, compose


@pytest.fixture
def run_smoke(tmp_path):
    """Run the swin runner in-process at smoke scale; returns (record or None, run_dir)."""

    def go(*overrides, run_dir="run", records="records", optim=None, scale="smoke"):
        from omegaconf import open_dict

        from experiments.swin import run

        optim = optim or SOLO_OPTIM
        cfg = compose([f"scale={scale}", f"optim={optim}", "logger=none", *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / run_dir)
            cfg.records_dir = str(tmp_path / records)
        return run.main(cfg), Path(cfg.run_dir)

    return go
