"""EfficientViM backbone (Lee et al., "EfficientViM: Efficient Vision Mamba with Hidden State Mixer based
State Space Duality", CVPR 2025, arXiv 2411.15241).

The network is a stride-16 conv stem followed by three stages of EfficientViM blocks (strides 16, 32, 64).
Each block mixes tokens with HSM-SSD: the L tokens are pooled into N hidden states with per-image,
per-state softmax weights, all channel mixing happens on the small (C, N) hidden state, and the result is
read back to the L tokens. Unlike the official classification code, which reshapes to ``sqrt(L) x sqrt(L)``,
every layer here receives the spatial size explicitly, so any ``H x W`` input works (detection, slide
inference) and square inputs give identical results.

Parameter names follow the official checkpoints (``patch_embed.conv.{i}``, ``stages.{s}.blocks.{b}.mixer.*``,
``stages.{s}.downsample.*``) so official weights map one to one; only the channel LayerNorm parameters are
stored flat, ``(C,)`` instead of ``(1, C, 1)``, and the classifier's fusion-head keys (``norm.*``,
``heads*``, ``weights*``) belong to :class:`mmvssm.models.heads.EfficientViMFusionHead`.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..layers import ChannelLayerNorm, SqueezeExcite, make_divisible, run_block
from ..pretrained import EFFICIENT_VIM_HEAD_KEY_PREFIXES as HEAD_KEY_PREFIXES
from ..pretrained import flatten_norm_params
from .base import SSMBackbone, check_images

# Official register functions of classification/models/EfficientViM.py (mlp_ratio 4, ssd_expand 1).
ARCH_SETTINGS: Dict[str, dict] = {
    'm1': dict(embed_dims=(128, 192, 320), depths=(2, 2, 2), state_dims=(49, 25, 9)),
    'm2': dict(embed_dims=(128, 256, 512), depths=(2, 2, 2), state_dims=(49, 25, 9)),
    'm3': dict(embed_dims=(224, 320, 512), depths=(2, 2, 2), state_dims=(49, 25, 9)),
    'm4': dict(embed_dims=(224, 320, 512), depths=(3, 4, 2), state_dims=(64, 32, 16)),
}


def conv_norm(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
              groups: int = 1, norm: bool = True, act: bool = False, conv1d: bool = False) -> nn.Sequential:
    """Bias-free conv, optional BatchNorm2d, optional ReLU, named ``conv``/``norm``/``act`` like the
    official ``ConvLayer1D``/``ConvLayer2D`` (so the checkpoint keys are ``*.conv.weight``, ``*.norm.*``).

    ``conv1d=True`` gives a Conv1d on (B, C, L) tokens; it is only used for the norm-free 1x1 projections.
    """
    conv_cls = nn.Conv1d if conv1d else nn.Conv2d
    layers = [('conv', conv_cls(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                groups=groups, bias=False))]
    if norm:
        layers.append(('norm', nn.BatchNorm2d(out_channels)))
    if act:
        layers.append(('act', nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


class Stem(nn.Module):
    """Four 3x3 stride-2 ConvBN layers, 3 -> C/8 -> C/4 -> C/2 -> C (ReLU on all but the last): stride 16.

    Shapes: (B, in_channels, H, W) -> (B, C, ceil(H/16), ceil(W/16)) (each conv rounds up).
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        dims = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        self.conv = nn.Sequential(*[
            conv_norm(dims[i], dims[i + 1], 3, stride=2, act=i < 3) for i in range(4)])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PatchMerging(nn.Module):
    """Stride-2 downsampling between stages (hidden width = ``ratio`` x the *output* width).

    x + DWConvBN(x) -> ConvBN1x1+ReLU -> DWConvBN3x3/s2+ReLU -> SE -> ConvBN1x1 -> x + DWConvBN(x).
    Shapes: (B, in_dim, H, W) -> (B, out_dim, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, in_dim: int, out_dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(out_dim * ratio)
        self.conv = nn.Sequential(
            conv_norm(in_dim, hidden, 1, act=True),
            conv_norm(hidden, hidden, 3, stride=2, groups=hidden, act=True),
            SqueezeExcite(hidden, make_divisible(hidden * 0.25)),
            conv_norm(hidden, out_dim, 1))
        self.dwconv1 = conv_norm(in_dim, in_dim, 3, groups=in_dim)
        self.dwconv2 = conv_norm(out_dim, out_dim, 3, groups=out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dwconv1(x)
        x = self.conv(x)
        return x + self.dwconv2(x)


class HSMSSD(nn.Module):
    """Hidden-state-mixer state space duality layer.

    Args:
        dim: channels C of the (layer-normalised) input tokens.
        state_dim: number of hidden states N.
        ssd_expand: width of the hidden-state mixer relative to C (1 in every published model).
        A_init_range: init range of ``A``. ``A`` is constant over tokens, so it cancels inside the
            softmax over tokens and never changes the output; it is kept so official checkpoints load.
    """

    def __init__(self, dim: int, state_dim: int, ssd_expand: float = 1.0,
                 A_init_range: Tuple[float, float] = (1.0, 16.0)) -> None:  # noqa: N803
        super().__init__()
        self.state_dim = state_dim
        self.d_inner = int(ssd_expand * dim)
        self.BCdt_proj = conv_norm(dim, 3 * state_dim, 1, norm=False, conv1d=True)
        self.dw = conv_norm(3 * state_dim, 3 * state_dim, 3, groups=3 * state_dim, norm=False)
        self.hz_proj = conv_norm(dim, 2 * self.d_inner, 1, norm=False, conv1d=True)
        self.out_proj = conv_norm(self.d_inner, dim, 1, norm=False, conv1d=True)
        self.A = nn.Parameter(torch.empty(state_dim).uniform_(*A_init_range))
        self.D = nn.Parameter(torch.ones(1))
        self.act = nn.SiLU()

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Args: x (B, C, L) normalised tokens, row-major over ``hw_shape`` = (H, W), L = H*W.

        Returns: y (B, C, H, W) and the mixed hidden state h (B, C, N).
        """
        batch, _, length = x.shape
        height, width = hw_shape
        if height * width != length:
            raise ValueError(f'HSMSSD: {length} tokens do not form the given {height}x{width} map')
        bcdt = self.BCdt_proj(x).view(batch, -1, height, width)
        bcdt = self.dw(bcdt).flatten(2)
        B, C, dt = bcdt.split(self.state_dim, dim=1)  # noqa: N806  (SSD names), each (B, N, L)
        weights = (dt + self.A.view(1, -1, 1)).softmax(dim=-1)  # per-state distribution over tokens
        h = x @ (weights * B).transpose(-2, -1)  # (B, C, N)
        h, z = self.hz_proj(h).split(self.d_inner, dim=1)
        h = self.out_proj(h * self.act(z) + h * self.D)
        y = (h @ C).view(batch, -1, height, width)  # (B, C, L) -> (B, C, H, W)
        return y, h


class EfficientViMBlock(nn.Module):
    """DWConv -> HSM-SSD -> DWConv -> FFN, each mixed into the input as a convex combination with
    per-channel weights ``sigmoid(alpha[k])`` (not an additive residual).

    Shapes: (B, C, H, W) -> (B, C, H, W), plus the mixer's hidden state (B, C, N).
    """

    def __init__(self, dim: int, state_dim: int, mlp_ratio: float = 4.0, ssd_expand: float = 1.0) -> None:
        super().__init__()
        self.mixer = HSMSSD(dim, state_dim, ssd_expand)
        self.norm = ChannelLayerNorm(dim)
        self.dwconv1 = conv_norm(dim, dim, 3, groups=dim)
        self.dwconv2 = conv_norm(dim, dim, 3, groups=dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(OrderedDict(
            fc1=conv_norm(dim, hidden, 1, act=True), fc2=conv_norm(hidden, dim, 1)))
        self.alpha = nn.Parameter(torch.full((4, dim), 1e-4))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        a = self.alpha.sigmoid().view(4, -1, 1, 1)
        x = (1 - a[0]) * x + a[0] * self.dwconv1(x)
        y, h = self.mixer(self.norm(x.flatten(2)), x.shape[2:])
        x = (1 - a[1]) * x + a[1] * y
        x = (1 - a[2]) * x + a[2] * self.dwconv2(x)
        x = (1 - a[3]) * x + a[3] * self.ffn(x)
        return x, h


class EfficientViMStage(nn.Module):
    """``depth`` blocks, then an optional PatchMerging to ``out_dim`` channels.

    Returns the downsampled map (input of the next stage), the stage output before downsampling and the
    last block's hidden state.
    """

    def __init__(self, dim: int, depth: int, state_dim: int, out_dim: Optional[int] = None,
                 mlp_ratio: float = 4.0, ssd_expand: float = 1.0, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            [EfficientViMBlock(dim, state_dim, mlp_ratio, ssd_expand) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        for block in self.blocks:
            x, h = run_block(block, x, with_cp=self.with_cp)
        out = x
        if self.downsample is not None:
            x = self.downsample(x)
        return x, out, h


def _check_arch(settings: dict) -> None:
    """What EfficientViM needs of an arch beyond its keys: one positive int per stage in each entry."""
    lengths = {len(settings[k]) for k in ARCH_SETTINGS['m1']}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f'EfficientViM: embed_dims, depths and state_dims must have the same '
                         f'non-zero length (one entry per stage), got {settings}')
    for key in ARCH_SETTINGS['m1']:
        if not all(isinstance(v, int) and v > 0 for v in settings[key]):
            raise ValueError(f'EfficientViM: arch[{key!r}] must hold positive ints, got {settings[key]}')
    if settings['embed_dims'][0] % 8:
        raise ValueError(f'EfficientViM: embed_dims[0] must be divisible by 8 (the stem uses C/8, C/4, '
                         f'C/2), got {settings["embed_dims"][0]}')


def convert_official_backbone(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Backbone weights of an official EfficientViM classifier (or detection/segmentation) state dict."""
    backbone = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_KEY_PREFIXES)}
    return flatten_norm_params(backbone)


def official_to_classifier(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official EfficientViM classification state dict -> mmpretrain ``ImageClassifier`` keys.

    The fusion-head keys (``norm.*``, ``heads*``, ``weights*``) -> ``head.*``
    (:class:`~mmvssm.models.heads.EfficientViMFusionHead`), everything else -> ``backbone.*``; LayerNorm
    parameters flattened. Raises for a checkpoint that is not an EfficientViM model.
    """
    if not any(k.startswith('stages.') for k in state_dict):
        raise ValueError('no `stages.*` keys: this is not an official EfficientViM checkpoint '
                         f'(first keys: {sorted(state_dict)[:5]})')
    return {(('head.' if k.startswith(HEAD_KEY_PREFIXES) else 'backbone.') + k): v
            for k, v in flatten_norm_params(state_dict).items()}


@MODELS.register_module()
class EfficientViM(SSMBackbone):
    """EfficientViM backbone for classification and dense prediction.

    Stage ``i`` outputs (B, embed_dims[i], ceil(H/2^(4+i)), ceil(W/2^(4+i))) for an input (B, 3, H, W):
    strides 16, 32 and 64. FPN-style necks that expect a stride-4..32 pyramid should use
    :class:`mmvssm.models.necks.EfficientViMFPN` (the official detection neck, which adds stride-8/4
    levels with transposed convs) or mmseg's ``FPN`` with ``num_outs=4`` (the official semantic FPN
    setup, whose 4th level is a max-pool at stride 128).

    Args:
        arch: ``'m1'``..``'m4'`` or a dict with ``embed_dims``, ``depths`` and ``state_dims`` per stage.
        in_channels: image channels.
        mlp_ratio: FFN expansion (4 in every published model).
        ssd_expand: width of the hidden-state mixer (1 in every published model).
        out_indices: stages whose outputs (before downsampling) are returned.
        out_norm: add a channel LayerNorm on each returned stage output (``out_norm{i}``); the official
            detection setup normalises in the neck instead (``EfficientViMFPN(pre_norm=True)``).
        return_hidden_states: return ``(outs, hidden_states)`` where ``hidden_states[k]`` is the last
            block's hidden state h (B, embed_dims[i], state_dims[i]) of stage ``out_indices[k]``; used by
            :class:`EfficientViMFusionHead`.
        frozen_stages: -1 freezes nothing, 0 the stem, i >= 1 the stem and stages 0..i-1 (with their
            downsampling and output norms).
        norm_eval: keep every BatchNorm in eval mode during training (the official dense setups do).
        with_cp: gradient checkpointing per block (saves memory, costs a second forward).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an official or mmvssm checkpoint
            (converted automatically, classifier-head keys dropped).
        pretrained: checkpoint path, shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    arch_zoo = ARCH_SETTINGS

    def __init__(self,
                 arch: Union[str, dict] = 'm1',
                 in_channels: int = 3,
                 mlp_ratio: float = 4.0,
                 ssd_expand: float = 1.0,
                 out_indices: Sequence[int] = (0, 1, 2),
                 out_norm: bool = False,
                 return_hidden_states: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, init_cfg=init_cfg,
                         pretrained=pretrained)
        settings = self._parse_arch(arch)
        _check_arch(settings)
        self.embed_dims: Tuple[int, ...] = tuple(settings['embed_dims'])
        self.depths: Tuple[int, ...] = tuple(settings['depths'])
        self.state_dims: Tuple[int, ...] = tuple(settings['state_dims'])
        num_stages = len(self.depths)
        self._check_frozen_stages(num_stages)
        self.out_indices = self._parse_out_indices(out_indices, num_stages)
        self.return_hidden_states = return_hidden_states

        self.patch_embed = Stem(in_channels, self.embed_dims[0])
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            out_dim = self.embed_dims[i + 1] if i + 1 < num_stages else None
            self.stages.append(EfficientViMStage(self.embed_dims[i], self.depths[i], self.state_dims[i],
                                                 out_dim, mlp_ratio, ssd_expand, with_cp))
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                self.add_module(f'out_norm{i}', ChannelLayerNorm(self.embed_dims[i]))
        self.in_channels = in_channels
        self._freeze_stages()

    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: List[nn.Module] = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if self.out_norm and i in self.out_indices:
                modules.append(getattr(self, f'out_norm{i}'))
        return modules

    # ------------------------------------------------------------------ checkpoints
    convert_classifier_checkpoint = staticmethod(official_to_classifier)
    fresh_key_prefixes = ('out_norm', )  # the dense output norms are not in the ImageNet files

    def convert_checkpoint(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Official classifier layout -> ours: drop the fusion-head keys, flatten LayerNorm parameters."""
        return convert_official_backbone(state_dict)

    def forward(self, x: Tensor) -> Union[Tuple[Tensor, ...], Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]]:
        """Args: x (B, in_channels, H, W), any H, W.

        Returns: a tuple with one (B, embed_dims[i], H_i, W_i) map per ``out_indices`` entry, or
        ``(maps, hidden_states)`` when ``return_hidden_states`` is set.
        """
        check_images(x, self.in_channels, 'EfficientViM')
        x = self.patch_embed(x)
        outs, hidden_states = [], []
        for i, stage in enumerate(self.stages[:self.out_indices[-1] + 1]):
            x, out, h = stage(x)
            if i in self.out_indices:
                if self.out_norm:
                    out = getattr(self, f'out_norm{i}')(out)
                outs.append(out)
                hidden_states.append(h)
        if self.return_hidden_states:
            return tuple(outs), tuple(hidden_states)
        return tuple(outs)
