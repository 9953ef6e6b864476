"""Squeeze-and-excitation, channels-first (EfficientViM's downsampling, EfficientVMamba's MobileNet stages)."""
from typing import Tuple

import torch
from torch import Tensor, nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), as timm's SE does."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(expand(ReLU(reduce(mean_HW(x)))))`` with biased 1x1 convs (timm's ``SEModule``).

    Args:
        channels: input/output channels C.
        reduced_channels: width of the bottleneck (each model rounds it its own way: EfficientViM with
            :func:`make_divisible`, EfficientVMamba with ``int``).
        conv_names: attribute names of the reduce/expand convs, i.e. the checkpoint keys:
            ``('fc1', 'fc2')`` in timm and EfficientViM, ``('conv_reduce', 'conv_expand')`` in
            EfficientVMamba. Only the names differ; the maths is the same.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduced_channels: int,
                 conv_names: Tuple[str, str] = ('fc1', 'fc2')) -> None:
        super().__init__()
        self.conv_names = tuple(conv_names)
        # Registration order reduce, act, expand: the official state_dict order.
        self.add_module(self.conv_names[0], nn.Conv2d(channels, reduced_channels, 1, bias=True))
        self.act = nn.ReLU()
        self.add_module(self.conv_names[1], nn.Conv2d(reduced_channels, channels, 1, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        reduce, expand = (getattr(self, name) for name in self.conv_names)
        gate = expand(self.act(reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)
