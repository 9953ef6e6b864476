"""Behaviour shared by every mmvssm backbone: frozen stages, norm_eval and checkpoint loading."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmvssm.ops import backend_plan
from mmvssm.utils.checkpoint import extract_state_dict, load_checkpoint_file, pretrained_init_cfg


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

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=None)`` is handled here instead of by
    mmengine: the file is read safely (``weights_only=True``, see :mod:`mmvssm.utils.checkpoint`), the
    weights are found inside whatever container holds them (official ``model``/``model_ema``, mmengine
    ``state_dict``, ``backbone.`` prefixes of full-model checkpoints), converted, and loaded with a report
    of missing and unexpected keys. A checkpoint of another model is refused with a clear error.

    Args:
        frozen_stages: stages to freeze (-1: none). Their parameters get ``requires_grad=False`` and the
            modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        init_cfg: mmengine initialisation config.
    """

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
                        strict: bool = False) -> Dict[str, list]:
        """Load a checkpoint file (official or ours) into this backbone.

        Args:
            path: checkpoint file.
            prefix: only use keys under this prefix (e.g. ``'backbone.'``); by default a ``backbone.``
                prefix is stripped when every backbone key carries it.
            strict: raise if any backbone key is missing.

        Returns:
            dict with the ``missing_keys`` and ``unexpected_keys`` lists.
        """
        state = extract_state_dict(load_checkpoint_file(path))
        if prefix is None and any(k.startswith('backbone.') for k in state):
            prefix = 'backbone.'
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        state = self.convert_checkpoint(state)
        own = self.state_dict()
        matched = [k for k in state if k in own]
        name = type(self).__name__
        if not matched:
            raise ValueError(f'{name}: none of the {len(state)} keys in {path!r} match this backbone '
                             f'(e.g. {sorted(state)[:3]}): is it a checkpoint of another model?')
        mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in matched if state[k].shape != own[k].shape]
        if mismatched:
            raise ValueError(f'{name}: {len(mismatched)} tensors in {path!r} have other shapes than '
                             f'this backbone (another arch?): ' + '; '.join(mismatched[:5]))
        result = self.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if strict and missing:
            raise ValueError(f'{name}: keys missing from {path!r}: {missing[:10]}')
        logger = MMLogger.get_current_instance()
        print_log(f'{name}: loaded {len(matched)} tensors from {path}; missing keys: '
                  f'{missing or "none"}; unexpected keys: {unexpected or "none"}', logger=logger)
        return {'missing_keys': missing, 'unexpected_keys': unexpected}
