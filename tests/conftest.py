"""Session-wide setup shared by every test directory."""

import os
from pathlib import Path

import torch

# Without a GPU, Triton kernels can only run in Triton's interpreter (the `triton` tests of
# solo/triton_kernel.py), and the interpreter must be chosen before anything imports triton
# (torchao and torch.compile do, during collection).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The processes the tests start (`python scripts/<name>.py`, run.py's jobs, torchrun workers)
# import the packages of this checkout, as the tests themselves do (`python -m pytest` from
# the root): an editable install made from another checkout of the repository (worktrees
# sharing one .venv) would otherwise answer their imports of solo, experiments and scripts.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
