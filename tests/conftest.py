"""Session-wide setup shared by every test directory."""

import os

import torch

# Without a GPU, Triton kernels can only run in Triton's interpreter (the `triton` tests of
# solo/triton_kernel.py), and the interpreter must be chosen before anything imports triton
# (torchao and torch.compile do, during collection).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
