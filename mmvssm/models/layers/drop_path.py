"""Stochastic depth (DropPath) per sample, as timm's ``DropPath``."""
from torch import nn
from torchvision.ops import StochasticDepth


def drop_path(rate: float) -> nn.Module:
    """A module that zeroes a residual branch for a random ``rate`` fraction of the samples while training
    (and rescales the rest by 1 / (1 - rate)); ``nn.Identity`` for ``rate == 0``.

    Shapes: (B, ...) -> (B, ...). It has no parameters, so it adds no checkpoint keys.
    """
    if not 0 <= rate < 1:  # 1 would drop every sample: the branch (and its gradient) would vanish
        raise ValueError(f'drop path rate {rate} is outside [0, 1): set the backbone\'s drop_path_rate to a '
                         f'value in [0, 1) (e.g. 0.1)')
    return StochasticDepth(rate, mode='row') if rate > 0 else nn.Identity()
