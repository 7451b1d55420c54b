"""Fixtures for the scale-out tests: a real local Slurm cluster (marker `slurm`)."""

import os
from pathlib import Path

import pytest
from local_slurm import LocalSlurm, missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A started cluster; tests get its client environment. Fails (never skips) when the
    machine cannot run one: CI must run these tests, so a missing package is an error."""
    why = missing()
    if why:
        pytest.fail(f"local Slurm cluster unavailable: {why}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_env(slurm, tmp_path):
    """Client environment: this cluster, and records/outputs in the test's own folder."""
    return {**slurm.env(), "SOLO_RECORDS_DIR": str(tmp_path / "records"),
            "SOLO_OUTPUTS_DIR": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
