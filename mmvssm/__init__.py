"""mmvssm: vision state space model backbones for OpenMMLab.

Importing the package registers the backbones (and their helpers) in mmengine's root ``MODELS``
registry, which mmseg, mmdet and mmpretrain registries fall back to, so ``type='Vim'`` builds in any of
them (``custom_imports=dict(imports=['mmvssm'])``). The scan ops (``mmvssm.ops``) need torch alone; the
models need mmengine; the heads and the EfficientViM FPN also need mmpretrain and mmcv
(see ``mmvssm.models.toolbox``).

It also registers, through torch's and mmengine's own extension points and without replacing any of
their functions, how weights come in and go out (:mod:`mmvssm.checkpoint`: the weights-only allow-list,
safe loaders for mmengine's URL schemes, ``SafeCheckpointRunner``, ``AtomicCheckpointHook``), and
``NeckWiringCheckHook`` (:mod:`mmvssm.engine.wiring`).
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
    from . import checkpoint, datasets, engine, models  # noqa: F401

__all__ = ['__version__']
