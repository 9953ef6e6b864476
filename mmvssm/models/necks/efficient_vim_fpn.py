"""FPN for EfficientViM-style backbones whose stages sit at strides 16/32/64.

This follows the neck of the official detection code (mlvlab/EfficientViM ``detection/efficientvit_fpn.py``,
itself from Cream EfficientViT): an mmdet FPN with an optional channel LayerNorm on each input
(``pre_norm``) and ``num_extra_trans_convs`` stride-2 transposed convs that grow finer levels out of the
finest lateral, each followed by a 3x3 conv. With the official settings:

* Mask R-CNN: ``num_extra_trans_convs=2``, ``num_outs=5`` -> strides (4, 8, 16, 32, 64);
* RetinaNet: ``num_extra_trans_convs=1``, ``add_extra_convs='on_input'``, ``num_outs=5`` ->
  strides (8, 16, 32, 64, 128), the last level a stride-2 conv on the (normalised) stage-2 map.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn

from mmvssm.checkpoint import attach_weight_hooks

from ..layers import ChannelLayerNorm
from ..pretrained import flatten_norm_params


@MODELS.register_module()
class EfficientViMFPN(BaseModule):
    """FPN with extra transposed-conv levels (official EfficientViM detection neck).

    Outputs, finest first: the ``num_extra_trans_convs`` transposed-conv levels (each 2x finer than the
    next), the FPN levels of inputs ``start_level..end_level``, then max-pool (``add_extra_convs=False``)
    or stride-2 conv levels up to ``num_outs`` maps of (B, out_channels, H_i, W_i).

    Args:
        in_channels: channels of each backbone output.
        out_channels: channels of every output level.
        num_outs: number of output levels (transposed-conv levels included).
        start_level: first backbone level used.
        end_level: last backbone level used (exclusive), -1 for all.
        add_extra_convs: False (max-pool extra levels), or where the first stride-2 extra conv reads
            from: ``'on_input'`` (True means the same), ``'on_lateral'`` or ``'on_output'``.
        relu_before_extra_convs: ReLU before the second and later extra convs.
        no_norm_on_lateral: no norm layer on the lateral and transposed convs.
        num_extra_trans_convs: transposed-conv levels finer than the first used backbone level.
        pre_norm: channel LayerNorm (``pre_norms.{i}``) on each used backbone output before the laterals.
        conv_cfg / norm_cfg / act_cfg: of the ConvModules (default: plain conv with bias).
        upsample_cfg: ``F.interpolate`` arguments of the top-down path.
        init_cfg: defaults to Xavier-uniform convs, as mmdet's FPN.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False,
                 num_extra_trans_convs: int = 0,
                 pre_norm: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 init_cfg: Optional[dict] = dict(type='Xavier', layer='Conv2d', distribution='uniform')) -> None:
        super().__init__(init_cfg=init_cfg)
        attach_weight_hooks(self)  # official layout: converted on load (convert_checkpoint)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.end_level = len(self.in_channels) if end_level == -1 else end_level
        if not 0 <= start_level < self.end_level <= len(self.in_channels):
            raise ValueError(f'EfficientViMFPN: need 0 <= start_level < end_level <= {len(self.in_channels)}, '
                             f'got start_level={start_level}, end_level={end_level}')
        num_levels = self.end_level - start_level
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f"EfficientViMFPN: add_extra_convs must be False, True, 'on_input', "
                             f"'on_lateral' or 'on_output', got {add_extra_convs!r}")
        if num_extra_trans_convs < 0 or num_outs < num_levels + num_extra_trans_convs:
            raise ValueError(f'EfficientViMFPN: num_outs={num_outs} must cover the {num_levels} backbone '
                             f'levels plus num_extra_trans_convs={num_extra_trans_convs}')
        if end_level != -1 and num_outs != num_levels + num_extra_trans_convs:
            raise ValueError('EfficientViMFPN: with an explicit end_level no extra (pooled/conv) levels '
                             'are allowed: num_outs must be end_level - start_level + num_extra_trans_convs')
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.num_extra_trans_convs = num_extra_trans_convs
        self.upsample_cfg = dict(upsample_cfg)
        lateral_norm = None if no_norm_on_lateral else norm_cfg

        self.pre_norms = nn.ModuleList(
            [ChannelLayerNorm(c) for c in self.in_channels[start_level:self.end_level]] if pre_norm else [])
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for c in self.in_channels[start_level:self.end_level]:
            self.lateral_convs.append(ConvModule(c, out_channels, 1, conv_cfg=conv_cfg, norm_cfg=lateral_norm,
                                                 act_cfg=act_cfg, inplace=False))
            self.fpn_convs.append(self._conv3x3(out_channels, out_channels, 1, conv_cfg, norm_cfg, act_cfg))
        num_extra_convs = num_outs - num_levels - num_extra_trans_convs
        if add_extra_convs:
            for i in range(num_extra_convs):
                c = self.in_channels[self.end_level - 1] if i == 0 and add_extra_convs == 'on_input' \
                    else out_channels
                self.fpn_convs.append(self._conv3x3(c, out_channels, 2, conv_cfg, norm_cfg, act_cfg))
        self.extra_trans_convs = nn.ModuleList()
        self.extra_fpn_convs = nn.ModuleList()
        for _ in range(num_extra_trans_convs):
            self.extra_trans_convs.append(ConvModule(
                out_channels, out_channels, 2, stride=2, padding=0, conv_cfg=dict(type='deconv'),
                norm_cfg=lateral_norm, act_cfg=act_cfg, inplace=False))
            self.extra_fpn_convs.append(self._conv3x3(out_channels, out_channels, 1, conv_cfg, norm_cfg, act_cfg))

    @staticmethod
    def _conv3x3(in_channels: int, out_channels: int, stride: int, conv_cfg: Optional[dict],
                 norm_cfg: Optional[dict], act_cfg: Optional[dict]) -> ConvModule:
        return ConvModule(in_channels, out_channels, 3, stride=stride, padding=1, conv_cfg=conv_cfg,
                          norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)

    def convert_checkpoint(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Official ``EfficientViTFPN`` layout -> ours: the pre-norms are ``batch_norm.{i}`` LayerNorm2D
        with (1, C, 1, 1) parameters, ours ``pre_norms.{i}`` with (C,). Called on the keys under this
        neck's name whenever weights enter a model holding it (:mod:`mmvssm.checkpoint.hooks`)."""
        renamed = {('pre_norms.' + k[len('batch_norm.'):]) if k.startswith('batch_norm.') else k: v
                   for k, v in state_dict.items()}
        return flatten_norm_params(renamed)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Args: inputs, one (B, in_channels[i], H_i, W_i) map per backbone level.

        Returns: ``num_outs`` maps (B, out_channels, ., .), finest first.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'EfficientViMFPN: got {len(inputs)} inputs but in_channels has '
                             f'{len(self.in_channels)} entries ({self.in_channels})')
        used = list(inputs[self.start_level:self.end_level])
        if len(self.pre_norms):
            used = [norm(x) for norm, x in zip(self.pre_norms, used)]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, used)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                laterals[i - 1] = laterals[i - 1] + F.interpolate(
                    laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)

        # Finer levels: transposed convs grown from the finest (top-down fused) lateral.
        finer: List[Tensor] = []
        prev = laterals[0]
        for trans_conv in self.extra_trans_convs:
            prev = trans_conv(prev)
            finer.insert(0, prev)
        # As in the official neck, extra_fpn_convs[i] smooths the i-th finest level.
        finer = [conv(x) for conv, x in zip(self.extra_fpn_convs, finer)]

        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        num_coarser = self.num_outs - len(outs) - len(finer)
        if num_coarser > 0 and not self.add_extra_convs:
            for _ in range(num_coarser):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif num_coarser > 0:
            source = {'on_input': used[-1], 'on_lateral': laterals[-1], 'on_output': outs[-1]}
            outs.append(self.fpn_convs[len(laterals)](source[self.add_extra_convs]))
            for i in range(len(laterals) + 1, len(laterals) + num_coarser):
                x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(self.fpn_convs[i](x))
        return tuple(finer + outs)
