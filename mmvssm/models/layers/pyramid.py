"""Simple feature pyramid for plain (single-scale) backbones such as Vim.

A layer, not only a neck: Vim builds one inside itself (``multi_scale=True``, keys ``pyramid.fpn*``), and
:mod:`mmvssm.models.necks` registers the same class as the stand-alone neck ``VimFeaturePyramid``.

BEiT/Vim-seg style: every selected layer yields one map at the token stride (16 for Vim); branch k turns
map k into the k-th output stride by transposed convolutions (upsampling) or max pooling (downsampling).
For a token stride of 16 and output strides (4, 8, 16, 32) the branches are, as in the official Vim
segmentation backbone (keys ``fpn1.0``, ``fpn1.1``, ``fpn1.3``, ``fpn2.0``)::

    fpn1: ConvT(2, s2) -> BN -> GELU -> ConvT(2, s2)   # x4
    fpn2: ConvT(2, s2)                                  # x2
    fpn3: Identity                                      # x1
    fpn4: MaxPool(2)                                    # x1/2
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn


def _norm_layer(norm_cfg: Dict, channels: int) -> nn.Module:
    """BatchNorm2d or SyncBatchNorm from an mmcv-style ``norm_cfg``."""
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type')
    cfg.pop('requires_grad', None)
    if norm_type in ('BN', 'BN2d'):
        return nn.BatchNorm2d(channels, **cfg)
    if norm_type == 'SyncBN':
        return nn.SyncBatchNorm(channels, **cfg)
    raise ValueError(f"VimFeaturePyramid: norm_cfg type {norm_type!r} is not supported; use 'BN' or "
                     f"'SyncBN'")


def _branch(channels: int, factor: float, norm_cfg: Dict) -> nn.Module:
    """One pyramid branch that rescales a map by ``factor`` (a power of two)."""
    if factor == 1:
        return nn.Identity()
    if factor < 1:
        # ceil_mode keeps ceil(H / s) cells for odd grids (identical to floor mode for even ones).
        return nn.MaxPool2d(kernel_size=round(1 / factor), stride=round(1 / factor), ceil_mode=True)
    ups = []
    for i in range(int(math.log2(factor))):
        if i > 0:
            ups += [_norm_layer(norm_cfg, channels), nn.GELU()]
        ups.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
    return nn.Sequential(*ups)  # indexed like the official fpn1.{0,1,3} / fpn2.0 keys


class VimFeaturePyramid(BaseModule):
    """Turn ``len(out_strides)`` single-stride maps into a pyramid with the given strides.

    Args:
        in_channels: channels C of every input map (kept by every branch).
        in_stride: stride of the input maps w.r.t. the image (the backbone's token stride).
        out_strides: output stride of each branch; each ratio ``in_stride / s`` must be a power of two.
        norm_cfg: norm between the two transposed convs of a x4 branch (``dict(type='SyncBN')`` for
            multi-GPU training, as the official seg config).
        init_cfg: mmengine initialisation config.

    Shapes:
        inputs: ``len(out_strides)`` tensors (B, C, h, w) with h = ceil(H / in_stride) for an image of
        height H (the backbone pads the image to whole patches). Output k is (B, C, ceil(H / s_k),
        ceil(W / s_k)) when ``img_shape=(H, W)`` is given: the bottom/right cells that lie entirely in the
        padding are cropped, so every level covers the image like a CNN's stride-s map. Without
        ``img_shape`` nothing is cropped (h * in_stride / s_k cells).
    """

    def __init__(self, in_channels: int, in_stride: int = 16,
                 out_strides: Sequence[int] = (4, 8, 16, 32),
                 norm_cfg: Optional[Dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or dict(type='BN')
        self.in_stride = in_stride
        self.out_strides = tuple(out_strides)
        for i, stride in enumerate(self.out_strides):
            factor = in_stride / stride
            if factor <= 0 or 2 ** round(math.log2(factor)) != factor:
                raise ValueError(f'VimFeaturePyramid: out_strides[{i}]={stride} is not a power-of-two '
                                 f'multiple or fraction of in_stride={in_stride}')
            # fpn1, fpn2, ... as in the official checkpoints.
            self.add_module(f'fpn{i + 1}', _branch(in_channels, factor, norm_cfg))

    @property
    def branches(self) -> List[nn.Module]:
        return [getattr(self, f'fpn{i + 1}') for i in range(len(self.out_strides))]

    def forward(self, inputs: Sequence[Tensor],
                img_shape: Optional[Tuple[int, int]] = None) -> Tuple[Tensor, ...]:
        if len(inputs) != len(self.out_strides):
            raise ValueError(f'VimFeaturePyramid: got {len(inputs)} input maps for '
                             f'{len(self.out_strides)} out_strides {self.out_strides}; give the backbone '
                             f'as many out_indices as out_strides')
        outs = []
        for x, branch, stride in zip(inputs, self.branches, self.out_strides):
            y = branch(x)
            if img_shape is not None:
                y = y[..., :math.ceil(img_shape[0] / stride), :math.ceil(img_shape[1] / stride)]
            outs.append(y)
        return tuple(outs)
