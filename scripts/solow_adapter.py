"""Load the reference SOLO implementation (PyPI ``solow`` 0.2.0) as a benchmark peer.

Its wheel installs a top-level package named ``solo``, which would shadow ours, so it is never
pip-installed: ``make solow`` downloads the wheel and unpacks it under ``.cache/solow`` and this
module imports that directory under the name ``solow``. Three shims make it run with the torch
and torchao pinned in pyproject.toml: ``torchao.prototype.low_bit_optim`` (removed after
torchao 0.10) is aliased to ``torchao.optim``, which holds the same modules;
``torchao.utils.TORCH_VERSION_AT_LEAST_2_4/_2_5`` (absent in 0.18) are set to True, which they
are for torch 2.14; and its global stochastic-rounding generator, created with
``torch.Generator(device=rank)`` (CUDA), is created on the CPU when no GPU is present.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".cache" / "solow"


def load(root: Path = DEFAULT_DIR):
    """The reference package as module ``solow`` (raises FileNotFoundError with the fix)."""
    if "solow" in sys.modules:
        return sys.modules["solow"]
    init = Path(root) / "solo" / "__init__.py"
    if not init.exists():
        raise FileNotFoundError(f"{init} not found: run `make solow` to download the reference "
                                "SOLO wheel (solow==0.2.0) into .cache/solow")
    import torchao.optim
    import torchao.utils

    for name in ("TORCH_VERSION_AT_LEAST_2_4", "TORCH_VERSION_AT_LEAST_2_5"):
        if not hasattr(torchao.utils, name):
            setattr(torchao.utils, name, True)
    sys.modules.setdefault("torchao.prototype.low_bit_optim", torchao.optim)
    for sub in ("quant_utils", "subclass_4bit", "subclass_8bit"):
        sys.modules.setdefault(f"torchao.prototype.low_bit_optim.{sub}",
                               importlib.import_module(f"torchao.optim.{sub}"))

    spec = importlib.util.spec_from_file_location("solow", init,
                                                  submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["solow"] = mod
    spec.loader.exec_module(mod)

    utils = sys.modules["solow.quantizer.utils"]

    def init_generator():
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        utils.adaq_generator = torch.Generator(device=device)
        utils.adaq_generator.manual_seed(int(torch.randint(1 << 31, size=[])))

    utils.init_adaq_generator = init_generator
    sys.modules["solow.base"].init_adaq_generator = init_generator
    return mod


def adamw_4_2bit(params, lr: float = 1e-3):
    """The reference's SOLO 4/2-bit AdamW as its README configures it (beta1 0.8)."""
    return load().AdamWQ(params, lr=lr, betas=(0.8, 0.999), bits=(4, 2), quantile=0.1,
                         block_sizes=(128, 128), quantizers=("de", "qema"),
                         min_quantizable_tensor_size=128)
