"""Parameter memory layouts and the fused steps.

Every optimizer state is stored contiguous, in the parameter's logical (row-major) element
order, whatever the parameter's layout. The fused steps (torch's fused AdamW kernel, the C++
CPU step of :mod:`solo.fused`, the Triton step of :mod:`solo.triton_step`) walk raw memory and
pair the k-th element in memory of the parameter, its gradient and its states, which is the
same element only when all of them are contiguous. A channels_last, transposed or strided-view
parameter therefore steps through a contiguous copy that is written back (one copy each way,
for those parameters only). The eager reference step needs none: torch's elementwise ops
follow logical indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["contiguous_params"]


@contextlib.contextmanager
def contiguous_params(params: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Contiguous tensors standing in for ``params`` (each parameter itself when it already is
    contiguous); on leaving the block without an error, every copy is written back into its
    parameter. A kernel that raises leaves the parameters as they were."""
    work = [p if p.is_contiguous() else p.contiguous() for p in params]
    yield work
    with torch.no_grad():
        for p, w in zip(params, work):
            if w is not p:
                p.copy_(w)
