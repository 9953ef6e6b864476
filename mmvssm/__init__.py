"""mmvssm: vision state space model backbones for OpenMMLab.

Importing the package registers the backbones (and their helpers) in mmengine's root ``MODELS``
registry, which mmseg, mmdet and mmpretrain registries fall back to, so ``type='Vim'`` builds in any of
them (``custom_imports=dict(imports=['mmvssm'])``).
"""
from .version import __version__
from . import ops  # noqa: F401
from . import engine, models  # noqa: F401

__all__ = ['__version__']
