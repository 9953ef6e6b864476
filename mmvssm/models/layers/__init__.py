"""Blocks shared by more than one model, or by a backbone and its neck/head.

Backbones, necks and heads import from here and never from each other (see docs/architecture.md). A block
used by one model only stays in that model's file.
"""
from .checkpointing import run_block
from .drop_path import drop_path
from .mamba import dt_rank_for, init_A_log_, init_dt_bias_, init_dt_proj_weight_
from .norms import ChannelLayerNorm, RMSNorm
from .patch_embed import PatchEmbed
from .pyramid import VimFeaturePyramid
from .rope import VisionRope
from .squeeze_excite import SqueezeExcite, make_divisible

__all__ = [
    'ChannelLayerNorm', 'PatchEmbed', 'RMSNorm', 'SqueezeExcite', 'VimFeaturePyramid', 'VisionRope',
    'drop_path', 'dt_rank_for', 'init_A_log_', 'init_dt_bias_', 'init_dt_proj_weight_', 'make_divisible',
    'run_block'
]
