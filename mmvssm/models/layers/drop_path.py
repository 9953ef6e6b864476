"""Stochastic depth (DropPath) per sample, as timm's ``DropPath``."""
from torch import nn
from torchvision.ops import StochasticDepth


def drop_path(rate: float) -> nn.Module:
    """A module that zeroes a residual branch for a random ``rate`` fraction of the samples while training
    (and rescales the rest by 1 / (1 - rate)); ``nn.Identity`` for ``rate == 0``.

    Shapes: (B, ...) -> (B, ...). It has no parameters, so it adds no checkpoint keys.
    """
    if rate < 0:
        raise ValueError(f'drop_path: rate must be >= 0, got {rate}')
    return StochasticDepth(rate, mode='row') if rate > 0 else nn.Identity()
