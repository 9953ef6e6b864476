"""Behaviour shared by every mmvssm backbone: frozen stages, norm_eval and checkpoint loading."""
import functools
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmvssm.ops import backend_plan
from mmvssm.utils.checkpoint import DEFAULT_MIN_RESTORED, load_pretrained, pretrained_init_cfg


def check_images(x: torch.Tensor, in_channels: int, owner: str) -> None:
    """Raise a clear error unless ``x`` is a (B, in_channels, H, W) image batch."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        got = f'in_channels={x.shape[1]}' if x.dim() == 4 else 'a (B, C, H, W) batch'
        raise ValueError(f'{owner}: expected images of shape (B, {in_channels}, H, W), got '
                         f'{tuple(x.shape)}; pass {got} or fix the input layout')


class SSMBackbone(BaseModule):
    """Base class of the mmvssm backbones.

    Subclasses implement :meth:`frozen_modules` (what ``frozen_stages`` freezes) and, if the official
    checkpoints use another key layout, :meth:`convert_checkpoint`.

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=None)`` (or ``pretrained=PATH``) is handled
    here instead of by mmengine, through :func:`mmvssm.utils.checkpoint.load_pretrained`: the file is read
    safely (``weights_only=True``), the weights are found inside whatever container holds them (official
    ``model``/``model_ema``, mmengine ``state_dict``, ``backbone.`` prefixes of whole-model checkpoints),
    converted, and loaded with a restored/expected report. A checkpoint that restores too little or has
    tensors of other shapes is refused with a clear error.

    Args:
        frozen_stages: stages to freeze (-1: none). Their parameters get ``requires_grad=False`` and the
            modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        init_cfg: mmengine initialisation config.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        """Every backbone accepts ``pretrained=PATH`` (as mmseg's segmentors pass it to their backbone):
        it means ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``; giving both is an error."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None or getattr(init, '_takes_pretrained', False):
            return

        @functools.wraps(init)
        def __init__(self, *args, pretrained: Optional[str] = None, **kw) -> None:
            if pretrained is not None:
                if kw.get('init_cfg') is not None:
                    raise ValueError(f'{cls.__name__}: give either pretrained={pretrained!r} or init_cfg='
                                     f"{kw['init_cfg']!r}, not both (pretrained=PATH means init_cfg="
                                     f"dict(type='Pretrained', checkpoint=PATH))")
                if not isinstance(pretrained, str):
                    raise TypeError(f'{cls.__name__}: pretrained must be a checkpoint path, got '
                                    f'{pretrained!r}')
                kw['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
            init(self, *args, **kw)

        __init__._takes_pretrained = True
        cls.__init__ = __init__

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(frozen_stages, int) or frozen_stages < -1:
            raise ValueError(f'frozen_stages must be an int >= -1, got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    # ------------------------------------------------------------------ checks that need the arch
    def _check_frozen_stages(self, num_stages: int, unit: str = 'stages') -> None:
        """Refuse a ``frozen_stages`` beyond the model's ``num_stages`` stages (or layers)."""
        if self.frozen_stages > num_stages:
            raise ValueError(f'{type(self).__name__}: frozen_stages={self.frozen_stages} but the model has '
                             f'only {num_stages} {unit} (use -1..{num_stages})')

    def _stage_indices(self, out_indices: Union[int, Sequence[int]], num_stages: int,
                       increasing: bool = False) -> Tuple[int, ...]:
        """Validated ``out_indices`` of a staged backbone, negative entries counted from the end.

        Each entry must be an int in [-num_stages, num_stages); ``increasing`` also requires them sorted
        without repeats.
        """
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        indices = tuple(i + num_stages if isinstance(i, int) and i < 0 else i for i in out_indices)
        if not indices or any(not isinstance(i, int) or not 0 <= i < num_stages for i in indices) \
                or (increasing and list(indices) != sorted(set(indices))):
            what = 'increasing stage indices' if increasing else 'a non-empty sequence of stage indices'
            raise ValueError(f'{type(self).__name__}: out_indices must be {what} in [0, {num_stages}), '
                             f'got {out_indices}')
        return indices

    def _log_scan_backend(self, scan_backend: str) -> None:
        """Write to the run's log which selective-scan backend each device will use (and validate it)."""
        plan = backend_plan(scan_backend)
        slow = plan.get('cuda') == 'chunked'
        print_log(f'{type(self).__name__}: selective scan backend {scan_backend!r}: '
                  + ', '.join(f'{dev} tensors -> {name}' for dev, name in plan.items())
                  + (' (slow on GPUs: `pip install triton`)' if slow else ''),
                  logger='current', level=logging.WARNING if slow else logging.INFO)

    # ------------------------------------------------------------------ freezing
    def frozen_modules(self) -> List[nn.Module]:
        """Modules frozen by ``self.frozen_stages``; subclasses define the stage order."""
        return []

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SSMBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------------ checkpoints
    def convert_checkpoint(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map an official (or other foreign) state dict onto our key layout. Default: unchanged."""
        return state_dict

    def init_weights(self) -> None:
        cfg = pretrained_init_cfg(self.init_cfg, type(self).__name__)
        if cfg is None:
            super().init_weights()
            return
        self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'))
        self._is_init = True

    def load_pretrained(self, path: str, prefix: Optional[str] = None,
                        min_restored: float = DEFAULT_MIN_RESTORED) -> Dict[str, list]:
        """Load a checkpoint file (official layout or ours) into this backbone.

        See :func:`mmvssm.utils.checkpoint.load_pretrained`: the keys under ``prefix`` (default: the
        ``backbone.`` part of a whole-model file) are converted, loaded and reported; restoring less than
        ``min_restored`` of this backbone's tensors, or any tensor of another shape, is an error.

        Returns:
            dict with the ``restored``, ``missing``, ``mismatched`` and ``unexpected`` key lists.
        """
        return load_pretrained(self, path, prefix=prefix, min_restored=min_restored)
