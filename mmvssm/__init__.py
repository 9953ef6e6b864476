"""mmvssm: vision state space model backbones for OpenMMLab.

Importing the package registers the backbones (and their helpers) in mmengine's root ``MODELS``
registry, which mmseg, mmdet and mmpretrain registries fall back to, so ``type='Vim'`` builds in any of
them (``custom_imports=dict(imports=['mmvssm'])``). The scan ops (``mmvssm.ops``) need torch alone; the
models need mmengine; the heads and the EfficientViM FPN also need mmpretrain and mmcv
(see ``mmvssm.models.toolbox``).
"""
from .version import __version__
from . import ops  # noqa: F401

try:
    import mmengine  # noqa: F401
except ModuleNotFoundError as err:
    if err.name != 'mmengine':
        raise
    # torch alone (e.g. measuring the scan ops on a bare GPU machine): there is no registry to fill, and
    # `import mmvssm.models` says that mmengine is missing.
else:
    from . import datasets, engine, models  # noqa: F401
    from .utils.checkpoint import install_mmengine_loading

    # mmengine's loader (load_from, --resume, load_checkpoint, mmseg's/mmdet's tools) converts official
    # layouts and refuses checkpoints that do not fit, for models that hold an mmvssm module
    install_mmengine_loading()

__all__ = ['__version__']
