"""How weights come into mmvssm models: ``init_cfg=dict(type='Pretrained', ...)``, of which ``pretrained=PATH``
is shorthand.

Shared by the backbones (:class:`~mmvssm.models.backbones.base.SSMBackbone`) and the heads that load
official weights, which must not import each other: the ``init_cfg`` routing, and the official key
layouts that a backbone, its neck and its head share. Reading, converting (through the models'
``convert_checkpoint``) and loading checkpoint files is :mod:`mmvssm.checkpoint`'s job.
"""
from typing import Any, Dict, Optional

from torch import Tensor

# Keys of the official EfficientViM classifier that are not part of the backbone: the fusion head
# (:class:`~mmvssm.models.heads.EfficientViMFusionHead`) owns them, the backbone drops them.
EFFICIENT_VIM_HEAD_KEY_PREFIXES = ('norm.', 'heads.', 'heads_dist.', 'weights', 'weights_dist')


def flatten_norm_params(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official LayerNorm1D/2D keep (1, C, 1)/(1, C, 1, 1) weights; ours
    (:class:`~mmvssm.models.layers.ChannelLayerNorm`) keep (C,)."""
    out = {}
    for key, value in state.items():
        module, _, name = key.rpartition('.')
        if name in ('weight', 'bias') and 'norm' in module and value.dim() > 1 and value.shape[0] == 1:
            value = value.flatten()
        out[key] = value
    return out


def pretrained_init_cfg(init_cfg: Any, owner: str) -> Optional[dict]:
    """``init_cfg`` when it is ``dict(type='Pretrained', checkpoint=PATH, ...)``, else None.

    A Pretrained config without ``checkpoint`` is an error naming ``owner``.
    """
    if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
        return None
    if 'checkpoint' not in init_cfg:
        raise ValueError(f"{owner}: init_cfg type 'Pretrained' needs `checkpoint=PATH`, got {init_cfg}")
    return init_cfg


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

