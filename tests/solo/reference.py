"""The reference SOLO package (``solow`` 0.2.0, unpacked by ``make solow``) for parity tests.

Its stochastic rounding draws from one module-global generator; :func:`draws_from` points it at
a copy of a given generator's state, so the reference and ours consume the same uniforms.
"""

import sys

import pytest
import torch

from scripts import solow_adapter


def solow():
    """The reference package, or a skip that names the fix (`make solow`) when it is absent."""
    try:
        return solow_adapter.load()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def draws_from(generator: torch.Generator) -> None:
    """Make the reference's SR generator continue from ``generator``'s current state."""
    g = torch.Generator()
    g.set_state(generator.get_state())
    sys.modules["solow.quantizer.utils"].adaq_generator = g
