"""Vision Mamba (Vim, arXiv 2401.09417) as an OpenMMLab backbone.

Reproduces the released ``vim_{tiny,small,base}_patch16_224_bimambav2_..._midclstok_div2`` models
(hustvl/Vim) parameter for parameter, with the official key names, so released checkpoints load 1:1:

* patch embedding ``Conv2d(C_in, D, patch, stride)`` -> (B, M, D), optional class token inserted in the
  **middle** (index M // 2), absolute position embedding added after the insertion;
* ``depth`` pre-norm residual layers ``x <- x + drop_path(mixer(rmsnorm(x)))`` with the residual stream in
  fp32 (the official fused add-norm computes exactly this), no MLP;
* the bidirectional Mamba mixer ("v2", ``if_divide_out``): shared ``in_proj``/``out_proj``, separate conv,
  x/dt projections, A and D per direction; the backward direction is computed in the stored order
  (:func:`mmvssm.ops.bidirectional_conv1d_silu`, :func:`mmvssm.ops.bidirectional_scan`: one fused Triton
  kernel each with the ``triton`` backend, no flips);
* ``norm_f`` (RMSNorm) on the final stream.

Dense prediction: the selected layers' token maps (B, D, H/16, W/16), optionally turned into strides
4/8/16/32 by :class:`~mmvssm.models.necks.VimFeaturePyramid`.
"""
import math
import re
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from mmvssm.ops import bidirectional_conv1d_silu, bidirectional_scan, capturing, reads_backward_in_place
from ..layers import (PatchEmbed, RMSNorm, VimFeaturePyramid, VisionRope, drop_path, dt_rank_for, init_A_log_,
                      init_dt_bias_, init_dt_proj_weight_, run_block)
from ..layers.patch_embed import IntPair, to_pair
from .base import SSMBackbone

ARCH_SETTINGS: Dict[str, Dict[str, int]] = {
    'tiny': dict(embed_dims=192, depth=24),
    'small': dict(embed_dims=384, depth=24),
    'base': dict(embed_dims=768, depth=24),
}
# Mixer hyper-parameters shared by every released model; an arch dict may override them.
MIXER_DEFAULTS = dict(d_state=16, expand=2, d_conv=4, dt_rank='auto')
OUT_TYPES = ('featmap', 'raw', 'cls_token')
FEATURES = ('residual', 'mixer')


# --------------------------------------------------------------------------------------------------
# Position embedding helpers (also used for checkpoint conversion)
# --------------------------------------------------------------------------------------------------
def split_cls_pos(pos_embed: Tensor, with_cls_token: bool) -> Tuple[Optional[Tensor], Tensor]:
    """Split (1, M [+1], D) into the class entry (1, 1, D) at index M // 2 (or None) and the grid (1, M, D)."""
    if not with_cls_token:
        return None, pos_embed
    idx = (pos_embed.shape[1] - 1) // 2  # == M // 2 for M + 1 entries
    return pos_embed[:, idx:idx + 1], torch.cat([pos_embed[:, :idx], pos_embed[:, idx + 1:]], dim=1)


def insert_middle(tokens: Tensor, cls: Tensor) -> Tensor:
    """Insert ``cls`` (B, 1, D) into ``tokens`` (B, M, D) at index M // 2, as the official midclstok models."""
    idx = tokens.shape[1] // 2
    return torch.cat([tokens[:, :idx], cls, tokens[:, idx:]], dim=1)


def resize_pos_embed(pos_embed: Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int],
                     with_cls_token: bool) -> Tensor:
    """Bicubically resize the grid part of a position embedding; the class entry is kept.

    Args:
        pos_embed: (1, M_src [+1], D), grid in raster order, class entry at M_src // 2 if present.
        src_grid, dst_grid: (h, w) token grids before / after.
        with_cls_token: whether ``pos_embed`` holds a class entry.

    Returns:
        (1, M_dst [+1], D) with the class entry moved to M_dst // 2. The input itself when the grids match.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    cls, grid = split_cls_pos(pos_embed, with_cls_token)
    if grid.shape[1] != src_grid[0] * src_grid[1]:
        raise ValueError(f'resize_pos_embed: {grid.shape[1]} grid entries do not form the source grid '
                         f'{tuple(src_grid)}')
    dims = grid.shape[-1]
    grid = grid.reshape(1, src_grid[0], src_grid[1], dims).permute(0, 3, 1, 2)
    # Interpolate in fp32: bicubic is not implemented for half on CPU.
    grid = F.interpolate(grid.float(), size=tuple(dst_grid), mode='bicubic', align_corners=False)
    grid = grid.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    return grid if cls is None else insert_middle(grid, cls)


def grid_of(num_entries: int, what: str) -> Tuple[int, int]:
    """The square (g, g) grid of ``num_entries`` positions; checkpoints store square grids only."""
    side = math.isqrt(num_entries)
    if side * side != num_entries:
        raise ValueError(f'{what}: {num_entries} position entries are not a square grid; convert the '
                         f'checkpoint with a model built at its pretraining img_size')
    return side, side


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer ("bimamba v2") of Vim, with the official parameter names.

    Args:
        dims: model width D.
        d_state: SSM state size N.
        expand: inner width E = expand * D.
        d_conv: causal depthwise conv kernel size.
        dt_rank: rank R of the step-size projection; 'auto' = ceil(D / 16).
        divide_out: average instead of sum the two directions (``if_divide_out``).
        depth: number of layers, for the out_proj init rescale 1 / sqrt(depth).
        scan_backend: backend of :func:`mmvssm.ops.bidirectional_scan` (and of the conv: Triton with
            ``triton``).

    Shapes: (B, L, D) -> (B, L, D).
    """

    def __init__(self, dims: int, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                 dt_rank: Union[int, str] = 'auto', divide_out: bool = True, depth: int = 24,
                 scan_backend: str = 'auto') -> None:
        super().__init__()
        inner = expand * dims
        self.inner, self.d_state, self.d_conv = inner, d_state, d_conv
        self.dt_rank = dt_rank_for(dims, dt_rank)
        self.divide_out = divide_out
        self.scan_backend = scan_backend
        # Registration order follows the official module so state_dict() lists keys in the same order.
        self.A_log = nn.Parameter(torch.empty(inner, d_state))
        self.D = nn.Parameter(torch.empty(inner))
        self.A_b_log = nn.Parameter(torch.empty(inner, d_state))
        self.D_b = nn.Parameter(torch.empty(inner))
        self.in_proj = nn.Linear(dims, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        self.conv1d_b = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj_b = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj_b = nn.Linear(self.dt_rank, inner)
        self.out_proj = nn.Linear(inner, dims, bias=False)
        self.reset_parameters(depth)

    @torch.no_grad()
    def reset_parameters(self, depth: int, dt_min: float = 1e-3, dt_max: float = 1e-1,
                         dt_floor: float = 1e-4) -> None:
        """Official init, including its asymmetry: the backward dt bias starts at zero (spec §1.5)."""
        init_A_log_(self.A_log)
        init_A_log_(self.A_b_log)
        self.D.fill_(1.0)
        self.D_b.fill_(1.0)
        init_dt_proj_weight_(self.dt_proj.weight, self.dt_rank)
        init_dt_bias_(self.dt_proj.bias, dt_min, dt_max, dt_floor)
        self.dt_proj_b.bias.zero_()
        nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
        self.out_proj.weight /= math.sqrt(depth)  # GPT-2 style residual rescale

    def forward(self, x: Tensor) -> Tensor:
        if reads_backward_in_place(self.scan_backend, x):
            # The triton kernels read the token-major product in place, through a (B, 2E, L) view.
            xz = self.in_proj(x).transpose(1, 2)
        else:
            # Channel-major, as the official Mamba layer (W @ x^T over the B L tokens): u and z come out
            # as contiguous rows along L, the order the conv and the scan read them in; from the
            # token-major view each was a transposing copy (element by element on CPU).
            batch, length, dims = x.shape
            xz = torch.mm(self.in_proj.weight, x.reshape(batch * length, dims).t())  # (2E, B L)
            xz = xz.view(-1, batch, length).transpose(0, 1)  # (B, 2E, L) view, rows along L
        u, z = xz.chunk(2, dim=1)  # rows [0:E] -> x, [E:2E] -> z
        # The official layer flips the sequence for the backward direction and flips its output back.
        # With the triton backend the two ops below keep it in the stored order instead (anti-causal conv,
        # scan backwards in time): no activation is flipped, stacked or copied. The projections between
        # them act per position, so they serve either layout (ops.reads_backward_in_place).
        u = bidirectional_conv1d_silu(u, self.conv1d.weight, self.conv1d.bias, self.conv1d_b.weight,
                                      self.conv1d_b.bias, backend=self.scan_backend)  # (B, 2, E, L)
        # Per-direction projections as batched matmuls over (B, 2) of the (E, L) / (R, L) blocks: both
        # operands are read in place (an einsum here copied u into another layout first).
        p = self._scan_params()
        x_dbl = torch.matmul(p['x_proj'], u)  # (B, 2, R+2N, L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        delta = torch.matmul(p['dt_proj'], dt)  # (B, 2, E, L)
        y = bidirectional_scan(u, delta, p['A'], B, C, D=p['D'], z=z, delta_bias=p['delta_bias'],
                               delta_softplus=True, backend=self.scan_backend)
        return F.linear(y.transpose(1, 2), p['out_proj'])

    def _scan_params(self) -> Dict[str, Tensor]:
        """The two directions' parameters stacked (and A = -exp(A_log), out_proj halved for divide_out:
        exact, and no activation is touched). Without autograd (inference) they are cached until a
        parameter changes (version counter, storage), so a forward launches no kernel for them."""
        params = (self.x_proj.weight, self.x_proj_b.weight, self.dt_proj.weight, self.dt_proj_b.weight,
                  self.A_log, self.A_b_log, self.D, self.D_b, self.dt_proj.bias, self.dt_proj_b.bias,
                  self.out_proj.weight)
        # No cache with autograd (its tensors would carry history) or while a graph is captured (the key
        # reads data pointers, which torch.compile/export cannot).
        use_cache = not (torch.is_grad_enabled() or capturing())
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in params) if use_cache else None
        cached = getattr(self, '_scan_params_cache', None)
        if use_cache and cached is not None and cached[0] == key:
            return cached[1]
        derived = dict(
            x_proj=torch.stack([self.x_proj.weight, self.x_proj_b.weight]),
            dt_proj=torch.stack([self.dt_proj.weight, self.dt_proj_b.weight]),
            A=-torch.exp(torch.stack([self.A_log, self.A_b_log]).float()),
            D=torch.stack([self.D, self.D_b]).float(),
            delta_bias=torch.stack([self.dt_proj.bias, self.dt_proj_b.bias]).float(),
            out_proj=self.out_proj.weight * 0.5 if self.divide_out else self.out_proj.weight)
        self._scan_params_cache = (key, derived) if use_cache else None
        return derived


class VimLayer(nn.Module):
    """Pre-norm residual layer ``x + drop_path(mixer(norm(x)))`` (keys ``norm``, ``mixer``).

    Shapes: (B, L, D) -> ((B, L, D) new stream, (B, L, D) mixer output).
    """

    def __init__(self, dims: int, mixer_cfg: Dict, drop_path_rate: float = 0., norm_eps: float = 1e-5,
                 residual_in_fp32: bool = True) -> None:
        super().__init__()
        self.mixer = BiMambaMixer(dims, **mixer_cfg)
        self.norm = RMSNorm(dims, eps=norm_eps)
        self.drop_path = drop_path(drop_path_rate)
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x: Tensor, rope: Optional[Callable[[Tensor], Tensor]] = None,
                rope_residual: bool = True) -> Tuple[Tensor, Tensor]:
        """``rope``: rotate what the next layer receives, as the official loop does before each layer:
        the mixer output always, the stream too with ``rope_residual`` (vim/models_mamba.py)."""
        if self.residual_in_fp32:
            x = x.float()
        hidden = self.mixer(self.norm(x))
        if rope is None:
            return x + self.drop_path(hidden), hidden
        return (rope(x) if rope_residual else x) + self.drop_path(rope(hidden)), hidden


# --------------------------------------------------------------------------------------------------
# Official checkpoint layout (the backbone's part: Vim.convert_checkpoint)
# --------------------------------------------------------------------------------------------------
def official_to_classifier(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official Vim classification state dict -> mmpretrain ``ImageClassifier`` keys.

    ``head.{weight,bias}`` -> ``head.fc.*`` (:class:`~mmvssm.models.heads.VimClsHead`), everything else
    -> ``backbone.*`` (same names as the official model). Raises for a checkpoint that is not a Vim model.
    """
    if 'layers.0.mixer.A_b_log' not in state_dict:
        raise ValueError('not an official Vim checkpoint: no layers.0.mixer.A_b_log key (found e.g. '
                         f'{sorted(state_dict)[:3]})')
    return {('head.fc.' + k[len('head.'):]) if k.startswith('head.') else 'backbone.' + k: v
            for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
@MODELS.register_module()
class Vim(SSMBackbone):
    """Vision Mamba backbone.

    Args:
        arch: 'tiny' (D=192), 'small' (D=384), 'base' (D=768), all 24 layers, or a dict with
            ``embed_dims`` and ``depth`` and optionally the mixer's ``d_state``, ``expand``, ``d_conv``,
            ``dt_rank``.
        img_size: pretraining image size; sets the grid of the stored position embedding (224 -> 14x14).
            Other input sizes are served by bicubic interpolation at run time.
        patch_size: patch (kernel) size. stride: patch stride (default ``patch_size``; 8 for the "+"
            models).
        in_channels: image channels.
        out_indices: layers whose output is returned (negative counts from the end). Default: the last
            layer of each quarter, (5, 11, 17, 23) for 24 layers.
        out_type: 'featmap' (maps (B, D, h, w), class token removed), 'raw' (tokens (B, L, D), class
            token included) or 'cls_token' ((B, D), needs ``with_cls_token``).
        multi_scale: with 'featmap', turn the maps into strides 4/8/16/32 with a
            :class:`VimFeaturePyramid` (``pyramid_cfg`` is passed to it); else return the plain maps.
        with_cls_token: insert the class token in the middle (index M // 2). Classification: True. Dense:
            False (the class entry of a checkpoint's position embedding is dropped on loading).
        feature: 'residual' (the residual stream after the layer, ViT-style; default; the official
            ``use_residual_as_feature=True`` with ``last_layer_process='add'``, as the Vim-S UperNet run)
            or 'mixer' (the layer's raw mixer output, official ``use_residual_as_feature=False``, as the
            Vim-T UperNet run).
        final_norm: apply ``norm_f`` to the output of the last layer (as the classification model).
            Without it (dense prediction) the last layer adds its mixer output without drop path, as the
            official seg/det backbones' ``last_layer_process='add'``.
        rope: rotary position embedding before every layer (official ``if_rope``; the Vim-S UperNet and
            the Cascade Mask R-CNN runs), see :class:`~mmvssm.models.layers.rope.VisionRope`; built for
            each input's token grid. rope_residual: rotate the residual stream too (``if_rope_residual``).
            rope_pt_grid: the grid the rotary positions are scaled to (official ``pt_hw_seq_len=14``).
        drop_rate: dropout after the position embedding. drop_path_rate: stochastic depth, linear over
            the layers (layer j drops its mixer output with rate ``drop_path_rate * j / (depth - 1)``; the
            last layer's is 0 without ``final_norm``).
        divide_out: average the two scan directions (official ``if_divide_out=True``).
        residual_in_fp32: keep the residual stream in fp32 under autocast (official: True).
        norm_eps: RMSNorm epsilon.
        scan_backend: selective-scan backend ('auto', 'reference', 'chunked', 'cpu', 'cuda', 'triton').
        with_cp: activation checkpointing per layer (saves memory, costs a second forward).
        frozen_stages: -1: none; 0: patch embedding, position embedding and class token; k: also layers
            0..k-1 (k == depth also freezes ``norm_f``).
        norm_eval: keep the pyramid's BatchNorm in eval mode.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=PATH)``: official Vim checkpoints (dict with
            ``model``/``model_ema``) or ours; see :meth:`convert_checkpoint`.
        pretrained: checkpoint path, shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    arch_zoo = ARCH_SETTINGS
    arch_optional = MIXER_DEFAULTS  # a dict arch may override the mixer's hyper-parameters

    def __init__(self,
                 arch: Union[str, Dict] = 'tiny',
                 img_size: IntPair = 224,
                 patch_size: IntPair = 16,
                 stride: Optional[IntPair] = None,
                 in_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None,
                 out_type: str = 'featmap',
                 multi_scale: bool = True,
                 pyramid_cfg: Optional[Dict] = None,
                 with_cls_token: bool = False,
                 feature: str = 'residual',
                 final_norm: bool = False,
                 rope: bool = False,
                 rope_residual: bool = False,
                 rope_pt_grid: int = 14,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 divide_out: bool = True,
                 residual_in_fp32: bool = True,
                 norm_eps: float = 1e-5,
                 scan_backend: str = 'auto',
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, init_cfg=init_cfg,
                         pretrained=pretrained)
        arch_cfg = self._parse_arch(arch)
        dims, depth = arch_cfg.pop('embed_dims'), arch_cfg.pop('depth')
        self.embed_dims, self.depth = dims, depth
        self._check_frozen_stages(depth, unit='layers')
        self._log_scan_backend(scan_backend)
        if out_type not in OUT_TYPES:
            raise ValueError(f'Vim: out_type must be one of {OUT_TYPES}, got {out_type!r}')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("Vim: out_type='cls_token' needs with_cls_token=True")
        if feature not in FEATURES:
            raise ValueError(f'Vim: feature must be one of {FEATURES}, got {feature!r}')
        self.out_indices = self._default_out_indices(out_indices)
        self.out_type, self.feature = out_type, feature
        self.with_cls_token, self.with_cp = with_cls_token, with_cp
        if rope_residual and not rope:
            raise ValueError('Vim: rope_residual=True needs rope=True (official if_rope_residual only acts '
                             'with if_rope)')
        if rope and with_cls_token:
            # The official rope skips token 0 of odd-length sequences (a head class token); with the
            # middle class token it would rotate the wrong tokens. No run used this combination.
            raise ValueError('Vim: rope=True with with_cls_token=True is not supported (the official code '
                             'rotates a head class token position); use with_cls_token=False')
        self.rope = VisionRope(dims, pt_grid=rope_pt_grid) if rope else None
        self.rope_residual = rope_residual

        patch_size = to_pair(patch_size)
        stride = to_pair(stride if stride is not None else patch_size)
        self.img_size = to_pair(img_size)
        self.patch_embed = PatchEmbed(in_channels, dims, patch_size, stride, pad_to_patches=True, owner='Vim')
        self.pretrain_grid = self.patch_embed.grid_size(self.img_size)
        num_pos = self.pretrain_grid[0] * self.pretrain_grid[1] + int(with_cls_token)
        # Parameter order as the official model: cls_token, pos_embed, patch_embed, layers, norm_f.
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, dims))
        self.pos_drop = nn.Dropout(drop_rate)
        self._pos_cache: Dict[tuple, Tensor] = {}

        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        if not final_norm:  # official dense backbones add the last mixer output undropped ('add')
            dpr[-1] = 0.
        mixer_cfg = dict(arch_cfg, divide_out=divide_out, depth=depth, scan_backend=scan_backend)
        self.layers = nn.ModuleList(
            VimLayer(dims, mixer_cfg, drop_path_rate=dpr[i], norm_eps=norm_eps,
                     residual_in_fp32=residual_in_fp32) for i in range(depth))
        self.final_norm = final_norm
        if final_norm:
            self.norm_f = RMSNorm(dims, eps=norm_eps)

        self.multi_scale = out_type == 'featmap' and multi_scale
        if self.multi_scale:
            pyramid_cfg = dict(pyramid_cfg or {})
            pyramid_cfg.setdefault('out_strides', (4, 8, 16, 32)[:len(self.out_indices)])
            if len(pyramid_cfg['out_strides']) != len(self.out_indices):
                raise ValueError(f'Vim: {len(self.out_indices)} out_indices but '
                                 f"{len(pyramid_cfg['out_strides'])} pyramid out_strides; give one "
                                 f'layer per output stride or set multi_scale=False')
            if stride[0] != stride[1]:
                raise ValueError(f'Vim: the feature pyramid needs a square patch stride, got {stride}')
            self.pyramid = VimFeaturePyramid(dims, in_stride=stride[0], **pyramid_cfg)
        self._init_embeddings()
        self._freeze_stages()

    # ------------------------------------------------------------------ construction helpers
    def _default_out_indices(self, out_indices: Optional[Sequence[int]]) -> Tuple[int, ...]:
        """Validated ``out_indices``; None is the last layer of each quarter."""
        if out_indices is None:
            if self.depth < 4:
                raise ValueError(f'Vim: depth={self.depth} < 4 has no default out_indices; set them')
            out_indices = tuple(self.depth * (k + 1) // 4 - 1 for k in range(4))
        return self._parse_out_indices(out_indices, self.depth)

    def _init_embeddings(self) -> None:
        """Official model-level init: lecun-normal patch conv, trunc-normal(0.02) pos/cls."""
        fan_in = self.patch_embed.proj.weight[0].numel()
        # lecun_normal = truncated normal with std sqrt(1 / fan_in), corrected for the truncation at 2 std
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=math.sqrt(1.0 / fan_in) / .87962566103423978)
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        if self.with_cls_token:
            nn.init.trunc_normal_(self.cls_token, std=.02)

    # ------------------------------------------------------------------ freezing
    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, self.pos_drop] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.depth and self.final_norm:
            modules.append(self.norm_f)
        return modules

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0:  # embeddings are parameters of the backbone itself
            self.pos_embed.requires_grad = False
            if self.with_cls_token:
                self.cls_token.requires_grad = False

    # ------------------------------------------------------------------ position embedding
    def _pos_embed_for(self, grid: Tuple[int, int]) -> Tensor:
        """The position embedding for a token grid, resized from the pretraining grid when needed.

        Inference calls (no grad) are cached per grid; the key holds the parameter's version counter and
        storage, so loading weights or an optimizer step invalidates it.
        """
        if tuple(grid) == tuple(self.pretrain_grid):
            return self.pos_embed
        if (torch.is_grad_enabled() and self.pos_embed.requires_grad) or capturing():  # uncached
            return resize_pos_embed(self.pos_embed, self.pretrain_grid, grid, self.with_cls_token)
        key = (tuple(grid), self.pos_embed.dtype, self.pos_embed.device, self.pos_embed.data_ptr(),
               self.pos_embed._version)
        if key not in self._pos_cache:
            self._pos_cache.clear()  # one live entry: slide inference and fixed test sizes reuse it
            with torch.no_grad():
                self._pos_cache[key] = resize_pos_embed(self.pos_embed, self.pretrain_grid, grid,
                                                        self.with_cls_token)
        return self._pos_cache[key]

    # ------------------------------------------------------------------ forward
    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        tokens = self.patch_embed(x)  # (B, h, w, D)
        grid = tuple(tokens.shape[1:3])
        tokens = tokens.flatten(1, 2)
        if self.with_cls_token:
            tokens = insert_middle(tokens, self.cls_token.expand(tokens.shape[0], -1, -1))
        return self.pos_drop(tokens + self._pos_embed_for(grid)), grid

    def _format(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        """Tokens (B, L, D) -> the output of ``out_type``."""
        if self.out_type == 'raw':
            return tokens
        cls, patches = split_cls_pos(tokens, self.with_cls_token)
        if self.out_type == 'cls_token':
            return cls[:, 0]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Images (B, C_in, H, W) -> tuple with one output per ``out_indices`` entry.

        'featmap' outputs are (B, D, h, w) with h = ceil(H / 16) (patch = stride = 16) or, with
        ``multi_scale``, strides (4, 8, 16, 32) of size (B, D, ceil(H / s), ceil(W / s)).
        """
        img_shape = tuple(x.shape[-2:])
        x, grid = self._embed(x)
        rope = None
        if self.rope is not None:
            rope = partial(self.rope, grid=grid)
            x = rope(x)  # the official first layer starts from the rotated embedding
        outs = []
        for i, layer in enumerate(self.layers):
            # every layer but the last rotates what it hands on (the official rotation before the next
            # layer), so the 'residual' feature of layer i is the official residual entering layer i + 1
            x, hidden = run_block(layer, x, rope if i < self.depth - 1 else None, self.rope_residual,
                                  with_cp=self.with_cp)
            if i in self.out_indices:
                out = x if self.feature == 'residual' else hidden
                if i == self.depth - 1 and self.final_norm:
                    out = self.norm_f(out)
                outs.append(self._format(out, grid))
        if self.multi_scale:
            return self.pyramid(outs, img_shape=img_shape)
        return tuple(outs)

    # ------------------------------------------------------------------ checkpoints
    convert_classifier_checkpoint = staticmethod(official_to_classifier)
    fresh_key_prefixes = ('pyramid.', )  # the multi-scale pyramid is not in the ImageNet files

    def convert_checkpoint(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Official (or our) Vim state dict -> this backbone.

        Drops the classification ``head.*`` (and ``norm_f`` when ``final_norm=False``); adapts the class
        token: a checkpoint holds a class entry in its position embedding iff it has ``cls_token`` (at
        index M // 2, as the released midclstok models). Without a class token here that entry is
        removed; the grid part is resized bicubically to this model's pretraining grid.
        """
        if any(k.startswith('rope.') for k in state_dict):
            # A RoPE checkpoint without class token (the official det/seg runs' backbones): its
            # rope.freqs_* buffers hold no learned state (ours are computed per grid). With a class token
            # it is a legacy v1 model whose class token sits at index 0, which this layout does not know.
            if self.rope is None or 'cls_token' in state_dict:
                raise ValueError('Vim: this checkpoint has RoPE buffers (rope.freqs_*) and '
                                 + ('a head class token (legacy v1 model); only the released middle-class-'
                                    'token models are supported' if 'cls_token' in state_dict else
                                    'this model has rope=False; build it with rope=True'))
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith('rope.')}
        state = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
        if getattr(self, 'multi_scale', False):  # official seg/ backbone: fpn{i}.* -> pyramid.fpn{i}.*
            state = {('pyramid.' + k) if re.match(r'fpn\d+\.', k) else k: v for k, v in state.items()}
        if not self.final_norm:
            state.pop('norm_f.weight', None)
        if 'pos_embed' not in state:
            return state
        ckpt_cls = 'cls_token' in state
        pos = state['pos_embed']
        num_grid = pos.shape[1] - int(ckpt_cls)
        own_grid = self.pretrain_grid
        src_grid = own_grid if num_grid == own_grid[0] * own_grid[1] else grid_of(num_grid, 'Vim checkpoint')
        cls_pos, grid_pos = split_cls_pos(pos, ckpt_cls)
        grid_pos = resize_pos_embed(grid_pos, src_grid, own_grid, with_cls_token=False)
        if self.with_cls_token:
            if cls_pos is None:  # checkpoint without class token: keep our initial class entry
                cls_pos = split_cls_pos(self.pos_embed.detach(), True)[0]
            grid_pos = insert_middle(grid_pos, cls_pos.to(grid_pos.dtype))
        else:
            state.pop('cls_token', None)
        state['pos_embed'] = grid_pos
        return state
