"""Swin's model: timm's Swin Transformer (Liu et al. 2021), sized by the scale's ``model``."""

import torch
from omegaconf import OmegaConf


def build(hp) -> torch.nn.Module:
    import timm

    # plain lists from the config: timm wants tuples and ints
    kw = {k: tuple(v) if isinstance(v, list) else v
          for k, v in OmegaConf.to_container(hp.model).items()}
    return timm.create_model(hp.arch, pretrained=False, **kw)
