"""EfficientVMamba (Pei et al., arXiv 2403.09977) as an OpenMMLab backbone.

Re-implemented from the architecture of TerryPei/EfficientVMamba (``EfficientVSSM`` /
``Backbone_EfficientVSSM`` in ``classification/models/vmamba_efficient.py``): a 4x4 patch stem, two
stages of EVSS blocks (atrous skip-sampled selective scan + depthwise-conv branch, gated by one shared SE
module), two stages of MobileNetV2 inverted residual blocks with SE, and PatchMerging (v1) downsampling.

Key layout (ours; ``convert_official_state_dict`` maps the official one onto it)::

    patch_embed.{proj,norm}                      <- patch_embed.{0,2}
    layers.{0,1}.blocks.{j}.*                    <- same names
    layers.{2,3}.blocks.{j}.*                    <- layers.{2,3}.{j+1}.*    (index 0 was a Permute)
    layers.{i}.downsample.{norm,reduction}       <- layers.{0,1}.downsample.* / layers.2.{depth+2}.*
    outnorm{i}                                   <- outnorm{i} (dense checkpoints only)

Internally tensors are channels-last (B, H, W, C) except inside the inverted residual stages.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch import Tensor, nn

from mmvssm.ops import atrous_scan
# atrous_scan_index/atrous_scatter: re-exported, the scan order is part of this model's definition
from mmvssm.ops.atrous import (NUM_DIRECTIONS, atrous_gather, atrous_scan_index,  # noqa: F401
                               atrous_scatter)
from ..layers import (PatchEmbed, SqueezeExcite, drop_path, dt_rank_for, init_A_log_, init_dt_bias_,
                      init_dt_proj_weight_, run_block)
from .base import SSMBackbone

# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class PatchMerging2D(nn.Module):
    """PatchMerging v1: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_channels).

    Odd sizes are zero-padded at the bottom/right; the 2x2 neighbours are concatenated in the order
    (even r, even c), (odd r, even c), (even r, odd c), (odd r, odd c), then LayerNorm(4C) and a
    bias-free Linear.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class BiAttn(nn.Module):
    """Channel gate of the EVSS block (the paper's "SE"), channels-last.

    gate = sigmoid(W2 GELU(W1 mean_HW(LN(x)))); returns x * gate (the un-normalised x).
    """

    def __init__(self, channels: int, ratio: float = 0.125) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.norm = nn.LayerNorm(channels)
        self.global_reduce = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.channel_select = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.norm(x).mean((1, 2), keepdim=True)
        gate = self.channel_select(self.act(self.global_reduce(gate)))
        return x * torch.sigmoid(gate)


class ES2D(nn.Module):
    """SS2D with the efficient (atrous skip-sampled) 2-D scan. (B, H, W, C) -> (B, H, W, C).

    in_proj -> (x, z); x: depthwise 3x3 conv + SiLU -> 4 skip-sampled sequences, each with its own
    x_proj / dt_proj / A / D -> one batched selective scan -> back to the grid -> LayerNorm -> * SiLU(z)
    -> out_proj. Parameter names and shapes follow the official checkpoints (K = 4, E = ssm_ratio * C,
    R = dt_rank): x_proj_weight (K, R + 2N, E), dt_projs_weight (K, E, R), dt_projs_bias (K, E),
    A_logs (K * E, N), Ds (K * E,).

    Args:
        channels: C.
        d_state: N.
        ssm_ratio: E / C.
        dt_rank: R, or 'auto' = ceil(C / 16).
        d_conv: depthwise conv kernel size.
        dt_min, dt_max, dt_init_floor: range of the initial softplus(dt_projs_bias).
        scan_backend: backend of :func:`mmvssm.ops.atrous_scan`.
    """

    def __init__(self, channels: int, d_state: int = 16, ssm_ratio: float = 2.0,
                 dt_rank: Union[int, str] = 'auto', d_conv: int = 3, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, scan_backend: str = 'auto') -> None:
        super().__init__()
        inner = int(ssm_ratio * channels)
        self.d_state = d_state
        self.dt_rank = dt_rank_for(channels, dt_rank)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(channels, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        self.act = nn.SiLU()
        k = NUM_DIRECTIONS
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, inner))
        self.A_logs = nn.Parameter(torch.empty(k * inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, channels, bias=False)
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1,
                             dt_init_floor: float = 1e-4) -> None:
        """Mamba's initialisation of the scan parameters (as the official code)."""
        # x_proj: nn.Linear's default (kaiming uniform, a=sqrt(5)) = U(-1/sqrt(E), 1/sqrt(E)).
        bound = self.x_proj_weight.shape[-1] ** -0.5
        self.x_proj_weight.uniform_(-bound, bound)
        init_dt_proj_weight_(self.dt_projs_weight, self.dt_rank)
        init_dt_bias_(self.dt_projs_bias, dt_min, dt_max, dt_init_floor)
        init_A_log_(self.A_logs)
        self.Ds.fill_(1.0)

    def scan(self, x: Tensor) -> Tensor:
        """Atrous 4-direction selective scan. (B, E, H, W) -> (B, H, W, E) in (at least) float32."""
        height, width = x.shape[-2:]
        k, inner = self.dt_projs_weight.shape[:2]
        xs = atrous_gather(x)  # (B, K, E, L')
        # Batched matmuls over (B, K) reading xs and dts in place (the einsums copied them first).
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, R+2N, L')
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, E, L')
        A = -torch.exp(self.A_logs.float()).view(k, inner, -1)
        return atrous_scan(xs, dts, A, Bs, Cs, self.Ds.float().view(k, inner),
                           delta_bias=self.dt_projs_bias.float(), delta_softplus=True, height=height,
                           width=width, backend=self.scan_backend)

    def forward(self, x: Tensor) -> Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.out_norm(self.scan(x)).to(z.dtype)
        return self.out_proj(y * self.act(z))


class EVSSBlock(nn.Module):
    """Efficient visual state space block, channels-last (B, H, W, C) -> (B, H, W, C).

    x = LN(inp); out = inp + DropPath(SE(ES2D(x)) + SE(ConvBranch(x))) with ONE SE module shared by
    both branches; ConvBranch = depthwise 3x3 (bias) -> BN -> GELU -> 1x1 conv (bias).
    """

    def __init__(self, channels: int, drop_path_rate: float = 0.0, scan_backend: str = 'auto') -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.op = ES2D(channels, scan_backend=scan_backend)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.BatchNorm2d(channels),
            nn.GELU(), nn.Conv2d(channels, channels, 1))
        self.se = BiAttn(channels)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        local = self.conv_branch(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.se(self.op(h)) + self.se(local))


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1,
             relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2,
                        groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block with SE, stride 1, channels-first (B, C, H, W) -> (B, C, H, W).

    1x1 expand (x expand_ratio) + BN + ReLU -> depthwise 3x3 + BN + ReLU -> SE (reduce to
    int(hidden * se_ratio), ReLU, sigmoid) -> 1x1 project + BN -> residual with DropPath.
    """

    def __init__(self, channels: int, expand_ratio: int = 4, se_ratio: float = 0.125,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expand_ratio
        self.conv_pw = _conv_bn(channels, hidden)
        self.conv_dw = _conv_bn(hidden, hidden, 3, groups=hidden)
        self.se = SqueezeExcite(hidden, max(1, int(hidden * se_ratio)), conv_names=('conv_reduce', 'conv_expand'))
        self.conv_pw2 = _conv_bn(hidden, channels, relu=False)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.conv_pw2(self.se(self.conv_dw(self.conv_pw(x)))))


class EfficientVMambaStage(nn.Module):
    """One stage: blocks, then the optional PatchMerging. Input and outputs are channels-last.

    Args:
        channels: stage width.
        drop_paths: one stochastic depth rate per block (its length is the depth).
        block_type: 'evss' (EVSS blocks) or 'inverted_residual' (channels-first MobileNetV2 blocks).
        out_channels: width after the PatchMerging; None for no downsample.
        with_cp: gradient checkpointing per block.
        scan_backend: selective scan backend of the EVSS blocks.
    """

    def __init__(self, channels: int, drop_paths: Sequence[float], block_type: str,
                 out_channels: Optional[int] = None, with_cp: bool = False,
                 scan_backend: str = 'auto') -> None:
        super().__init__()
        self.channels_first = block_type == 'inverted_residual'
        if block_type == 'evss':
            blocks = [EVSSBlock(channels, dp, scan_backend) for dp in drop_paths]
        elif self.channels_first:
            blocks = [InvertedResidual(channels, drop_path_rate=dp) for dp in drop_paths]
        else:
            raise ValueError(f"block_type must be 'evss' or 'inverted_residual', got {block_type!r}")
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging2D(channels, out_channels) if out_channels else None
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, H, W, C) -> (stage output (B, H, W, C), downsampled (B, H/2, W/2, C_next) or the same)."""
        if self.channels_first:
            x = x.permute(0, 3, 1, 2)
        for block in self.blocks:
            x = run_block(block, x, with_cp=self.with_cp)
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        return x, (self.downsample(x) if self.downsample is not None else x)


# --------------------------------------------------------------------------------------------------
# Official checkpoint layout
# --------------------------------------------------------------------------------------------------
_IR_STAGE_KEY = re.compile(r'^layers\.(\d+)\.(\d+)\.(.+)$')


def convert_official_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official ``EfficientVSSM`` / ``Backbone_EfficientVSSM`` keys -> ours (``classifier.*`` kept).

    Keys already in our layout pass through unchanged (``module.`` prefixes are stripped before, by
    :func:`mmvssm.checkpoint.extract_state_dict`). In the official inverted-residual stages (``layers.i.n.*``)
    element 0 is a Permute, blocks are 1..depth and the downsample is the element holding
    ``reduction.weight``.
    """
    state = state_dict
    downsample_index = {}
    for key in state:
        match = _IR_STAGE_KEY.match(key)
        if match and match.group(3) == 'reduction.weight':
            downsample_index[match.group(1)] = match.group(2)
    converted = {}
    for key, value in state.items():
        key = re.sub(r'^patch_embed\.0\.', 'patch_embed.proj.', key)
        key = re.sub(r'^patch_embed\.2\.', 'patch_embed.norm.', key)
        match = _IR_STAGE_KEY.match(key)
        if match:
            stage, index, rest = match.groups()
            if downsample_index.get(stage) == index:
                key = f'layers.{stage}.downsample.{rest}'
            else:
                key = f'layers.{stage}.blocks.{int(index) - 1}.{rest}'
        converted[key] = value
    return converted


def official_to_classifier(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official ``EfficientVSSM`` classification state dict -> mmpretrain ``ImageClassifier`` keys.

    ``classifier.norm`` -> ``backbone.outnorm{last}``, ``classifier.head`` -> ``head.fc``, everything else
    -> ``backbone.*`` in our layout (a dense ``Backbone_EfficientVSSM`` file becomes a backbone
    checkpoint). Raises for a checkpoint that is not an EfficientVMamba model.
    """
    state = convert_official_state_dict(state_dict)
    stages = {int(m.group(1)) for m in map(re.compile(r'^layers\.(\d+)\.').match, state) if m}
    if not stages or 'patch_embed.proj.weight' not in state:
        raise ValueError('not an EfficientVMamba checkpoint: no patch_embed/layers keys (found e.g. '
                         f'{sorted(state)[:3]})')
    renames = {'classifier.norm.': f'backbone.outnorm{max(stages)}.', 'classifier.head.': 'head.fc.'}
    converted = {}
    for key, value in state.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        converted[renames[prefix] + key[len(prefix):] if prefix else 'backbone.' + key] = value
    return converted


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
@MODELS.register_module()
class EfficientVMamba(SSMBackbone):
    """EfficientVMamba backbone (EVSS stages 1-2, inverted residual stages 3-4).

    Args:
        arch: 't' | 's' | 'b', or dict(dims=[C1, ...] or C1 (doubled per stage), depths=[...]).
        in_channels: input image channels.
        patch_size: stem stride.
        out_indices: stages whose outputs (before their downsample) are returned, each through its
            own LayerNorm ``outnorm{i}``, as (B, C_i, H / 2^(i+2), W / 2^(i+2)).
        drop_path_rate: stochastic depth, linear over all blocks of all stages.
        frozen_stages: -1 none; 0 the stem; i > 0 the stem and stages 0..i-1 (+ their outnorms).
        norm_eval: keep BatchNorms in eval mode while training.
        with_cp: gradient checkpointing per block (saves memory, costs a recompute).
        scan_backend: backend of :func:`mmvssm.ops.multi_direction_scan` ('auto' picks by device).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` loads official
            (classification EMA/``module.`` containers or dense ``outnorm`` layouts) or our checkpoints.
        pretrained: checkpoint path, shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    arch_zoo = {
        't': dict(dims=[48, 96, 192, 384], depths=[2, 2, 4, 2]),
        's': dict(dims=[64, 128, 256, 512], depths=[2, 2, 4, 2]),
        'b': dict(dims=[96, 192, 384, 768], depths=[2, 2, 9, 2]),
    }
    num_evss_stages = 2

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 patch_size: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.2,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 scan_backend: str = 'auto',
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, init_cfg=init_cfg,
                         pretrained=pretrained)
        self.dims, self.depths = self._stage_widths(self._parse_arch(arch))
        num_stages = len(self.depths)
        self._check_frozen_stages(num_stages)
        self._log_scan_backend(scan_backend)
        self.out_indices = self._parse_out_indices(out_indices, num_stages)
        self.in_channels = in_channels

        self.patch_embed = PatchEmbed(in_channels, self.dims[0], patch_size, norm=True, owner='EfficientVMamba')
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths)):
            start = sum(self.depths[:i])
            self.layers.append(EfficientVMambaStage(
                dim, dpr[start:start + depth],
                'evss' if i < self.num_evss_stages else 'inverted_residual',
                out_channels=self.dims[i + 1] if i + 1 < num_stages else None,
                with_cp=with_cp, scan_backend=scan_backend))
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', nn.LayerNorm(self.dims[i]))
        self.apply(self._init_linear_and_norm)
        self._freeze_stages()

    @staticmethod
    def _stage_widths(arch: dict) -> Tuple[List[int], List[int]]:
        """Per-stage widths and depths of a parsed arch; an int ``dims`` is doubled per stage."""
        depths = list(arch['depths'])
        dims = arch['dims']
        dims = [int(dims * 2 ** i) for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        if len(dims) != len(depths) or not depths or min(depths) < 1 or min(dims) < 1:
            raise ValueError(f'EfficientVMamba: arch needs one positive width and depth per stage, got '
                             f'dims={dims}, depths={depths}')
        return dims, depths

    @staticmethod
    def _init_linear_and_norm(m: nn.Module) -> None:
        # The official init: trunc_normal(0.02) Linears, unit LayerNorms; convs/BN keep torch defaults.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.layers[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'outnorm{i}'))
        return modules

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i) for i in out_indices."""
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'outnorm{i}')(out).permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    # ------------------------------------------------------------------ checkpoints
    convert_classifier_checkpoint = staticmethod(official_to_classifier)
    fresh_key_prefixes = ('outnorm', )  # the dense output norms are not in the ImageNet files

    def convert_checkpoint(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Official layout -> ours; the classifier is dropped (outnorms stay freshly initialised)."""
        state = convert_official_state_dict(state_dict)
        return {k: v for k, v in state.items() if not k.startswith('classifier.')}
