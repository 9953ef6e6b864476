"""The simple feature pyramid of plain backbones as a stand-alone neck (``type='VimFeaturePyramid'``).

The class lives in :mod:`mmvssm.models.layers.pyramid` because Vim also builds it inside itself.
"""
from mmengine.registry import MODELS

from ..layers.pyramid import VimFeaturePyramid

MODELS.register_module(module=VimFeaturePyramid)

__all__ = ['VimFeaturePyramid']
