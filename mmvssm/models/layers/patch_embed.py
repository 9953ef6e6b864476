"""Patch embedding: a strided convolution from images to a channels-last token grid."""
import math
from typing import Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

IntPair = Union[int, Tuple[int, int]]


def to_pair(x: IntPair) -> Tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def check_images(x: Tensor, in_channels: int, owner: str) -> None:
    """Raise a clear error unless ``x`` is a (B, in_channels, H, W) image batch."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        got = f'in_channels={x.shape[1]}' if x.dim() == 4 else 'a (B, C, H, W) batch'
        raise ValueError(f'{owner}: expected images of shape (B, {in_channels}, H, W), got '
                         f'{tuple(x.shape)}; pass {got} or fix the input layout')


class PatchEmbed(nn.Module):
    """``Conv2d(C_in, D, patch, stride)`` (key ``proj``), optionally followed by a LayerNorm (``norm``).

    Args:
        in_channels: image channels C_in.
        embed_dims: D.
        patch_size: conv kernel size (int or (h, w)).
        stride: conv stride; default ``patch_size`` (non-overlapping patches).
        pad_to_patches: zero-pad the image at the bottom/right to the smallest size the kernel tiles with
            the stride, so the grid is h = ceil((H - patch) / stride) + 1 (Vim). Without it the last rows
            and columns that do not fill a patch are dropped, h = floor((H - patch) / stride) + 1 (as
            the official EfficientVMamba stem).
        norm: add ``nn.LayerNorm(D)`` over the channels (EfficientVMamba's stem).
        owner: model name used in the input-shape error.

    Shapes: (B, C_in, H, W) -> (B, h, w, D), channels-last (``.flatten(1, 2)`` gives the (B, h*w, D)
    tokens without a copy).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: IntPair,
                 stride: Optional[IntPair] = None, pad_to_patches: bool = False, norm: bool = False,
                 owner: str = 'PatchEmbed') -> None:
        super().__init__()
        self.in_channels, self.owner, self.pad_to_patches = in_channels, owner, pad_to_patches
        self.patch_size = to_pair(patch_size)
        self.stride = to_pair(stride if stride is not None else patch_size)
        for name, value in (('patch_size', self.patch_size), ('stride', self.stride)):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ValueError(f'{owner}: {name} must be an int >= 1 or a pair of them, got '
                                 f'{patch_size if name == "patch_size" else stride!r}')
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=self.patch_size, stride=self.stride)
        self.norm = nn.LayerNorm(embed_dims) if norm else None

    def grid_size(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        """The (h, w) token grid of an (H, W) image."""
        rounding = math.ceil if self.pad_to_patches else math.floor
        return tuple(rounding(max(s - p, 0) / t) + 1 for s, p, t in zip(hw, self.patch_size, self.stride))

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, self.owner)
        if self.pad_to_patches:
            grid = self.grid_size(x.shape[-2:])
            pad = [(g - 1) * t + p - s for g, t, p, s in zip(grid, self.stride, self.patch_size, x.shape[-2:])]
            if any(pad):
                x = F.pad(x, (0, pad[1], 0, pad[0]))
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x
