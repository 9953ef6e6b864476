"""How weights come into mmvssm models: ``init_cfg=dict(type='Pretrained', ...)``, of which ``pretrained=PATH``
is shorthand.

Shared by the backbones (:class:`~mmvssm.models.backbones.base.SSMBackbone`) and the heads that load
official weights, which must not import each other: the ``init_cfg`` routing, and the official key
layouts that a backbone and its head split between them. Reading and unpacking checkpoint files is
:mod:`mmvssm.utils.checkpoint`'s job.
"""
from mmvssm.utils.checkpoint import pretrained_init_cfg

# Keys of the official EfficientViM classifier that are not part of the backbone: the fusion head
# (:class:`~mmvssm.models.heads.EfficientViMFusionHead`) owns them, the backbone drops them.
EFFICIENT_VIM_HEAD_KEY_PREFIXES = ('norm.', 'heads.', 'heads_dist.', 'weights', 'weights_dist')


class PretrainedInit:
    """Mixin for an mmengine ``BaseModule``: ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix])``
    calls the class's own ``load_pretrained`` (which converts official layouts and reports what it
    loaded) instead of mmengine's loader; any other ``init_cfg`` goes to mmengine as usual.

    ``prefix`` is passed on only when the config sets it, so a class whose ``load_pretrained`` takes no
    prefix refuses one instead of ignoring it.
    """

    def init_weights(self) -> None:
        cfg = pretrained_init_cfg(self.init_cfg, type(self).__name__)
        if cfg is None:
            super().init_weights()
            return
        options = {'prefix': cfg['prefix']} if cfg.get('prefix') is not None else {}
        self.load_pretrained(cfg['checkpoint'], **options)
        self._is_init = True

