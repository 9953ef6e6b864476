"""mmvssm: vision state space model backbones for OpenMMLab.

Importing the package registers the backbones (and their helpers) in mmengine's root ``MODELS``
registry, which mmseg, mmdet and mmpretrain registries fall back to, so ``type='Vim'`` builds in any of
them (``custom_imports=dict(imports=['mmvssm'])``). The scan ops (``mmvssm.ops``) need torch alone; the
models need mmengine; the heads and the EfficientViM FPN also need mmpretrain and mmcv
(see ``mmvssm.models.toolbox``).

It also lets mmengine's ``CheckpointLoader`` read mmengine's own training checkpoints on torch >= 2.6
without turning ``weights_only`` off (:func:`mmvssm.engine.checkpoint_io.allow_mmengine_checkpoints`),
and registers ``NeckWiringCheckHook`` (:mod:`mmvssm.engine.wiring`).
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
    from .engine.checkpoint_io import allow_mmengine_checkpoints
    from .utils.checkpoint import install_mmengine_loading

    # mmengine's own loader (their tools, inferencers, PretrainedInit) reads mmengine checkpoints on
    # torch >= 2.6 with weights_only=True and our allow-list of plain-data classes ...
    allow_mmengine_checkpoints()
    # ... and, for models that hold an mmvssm module, converts official layouts and refuses checkpoints
    # that do not fit (load_from, --resume, load_checkpoint, mmseg's/mmdet's tools)
    install_mmengine_loading()

__all__ = ['__version__']
