"""ViTDet simple feature pyramid (Li et al. 2022) for plain backbones, as the official Vim detection run.

From the **last** layer's stride-16 map of dimension D (detectron2 ``SimpleFeaturePyramid`` in hustvl/Vim
``det/detectron2/modeling/backbone/vit.py``, used by ``det/configs/common/models/mask_rcnn_vimdet.py``)::

    x4:   ConvT(D, D/2, 2, s2) -> LN -> GELU -> ConvT(D/2, D/4, 2, s2)   # stride 4
    x2:   ConvT(D, D/2, 2, s2)                                          # stride 8
    x1:   identity                                                      # stride 16
    x1/2: MaxPool(2, 2)                                                 # stride 32
    each: Conv1x1(-> C, no bias) -> LN -> Conv3x3(C, no bias) -> LN
    top:  MaxPool(kernel 1, stride 2) on the last level                 # stride 64 (LastLevelMaxPool)

LN is a LayerNorm over the channels of each pixel (detectron2's channels-first ``LayerNorm``, eps 1e-6);
registered here as ``LN2d`` so mmdet heads can use it through ``norm_cfg=dict(type='LN2d')``.
Pure torch + mmengine (no mmcv), like the backbones.
"""
from typing import List, Sequence, Tuple

import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module('LN2d')
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of (B, C, H, W) maps (detectron2 ``LayerNorm``, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def _conv_ln(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         LayerNorm2d(out_channels))


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Build a feature pyramid from one plain-backbone map (ViTDet).

    Args:
        in_channels: D of the input map (a single int, or a one-element sequence as mmdet necks get).
        out_channels: C of every output level (256 in ViTDet).
        scale_factors: rescaling of each level w.r.t. the input, from (4.0, 2.0, 1.0, 0.5).
        top_pool: add the LastLevelMaxPool level (stride x2 of the last level).
        init_cfg: mmengine initialisation config.

    Shapes: (B, D, H, W) (or a tuple whose last entry is that map) -> tuple of (B, C, H * s, W * s) for
    each scale s, then (B, C, ceil(H / 4), ceil(W / 4)) for the top level.
    """

    def __init__(self, in_channels, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), top_pool: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            if len(in_channels) != 1:
                raise ValueError(f'SimpleFeaturePyramid: builds from one map, got in_channels={in_channels}; '
                                 f'give the backbone one out_index (the last layer)')
            in_channels = in_channels[0]
        dims = in_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dims, dims // 2, 2, stride=2), LayerNorm2d(dims // 2), nn.GELU(),
                          nn.ConvTranspose2d(dims // 2, dims // 4, 2, stride=2)]
                width = dims // 4
            elif scale == 2.0:
                layers, width = [nn.ConvTranspose2d(dims, dims // 2, 2, stride=2)], dims // 2
            elif scale == 1.0:
                layers, width = [], dims
            elif scale == 0.5:
                layers, width = [nn.MaxPool2d(2, stride=2)], dims
            else:
                raise ValueError(f'SimpleFeaturePyramid: scale factor {scale} is not one of 4, 2, 1, 0.5')
            layers += [_conv_ln(width, out_channels, 1), _conv_ln(out_channels, out_channels, 3)]
            self.stages.append(nn.Sequential(*layers))
        self.top_pool = top_pool

    def forward(self, inputs) -> Tuple[Tensor, ...]:
        x = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        outs: List[Tensor] = [stage(x) for stage in self.stages]
        if self.top_pool:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
