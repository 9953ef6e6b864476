"""Refuse a model whose neck and heads do not fit what its backbone returns, with the fix in the message.

A backbone cannot see the neck that will consume it, and mmseg's/mmdet's necks and heads check little:
Vim's own pyramid (strides 4/8/16/32) fed to mmseg's ViT ``MultiLevelNeck`` (scales 4/2/1/0.5) trains
silently at strides 1/4/16/64, and mmdet's anchors silently assume strides the features may not have.
:func:`check_neck_wiring` runs the backbone (and neck) of a built model once on a blank image, measures the
channels and strides that really come out and compares them with what the neck and heads were configured
for. :class:`NeckWiringCheckHook` does it before the first iteration of any mmengine run
(``custom_hooks = [dict(type='NeckWiringCheckHook')]``, found from any scope: it is registered in
mmengine's root ``HOOKS``).
"""
from typing import Any, List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

Maps = List[Tuple[int, int]]  # (channels, stride) of each feature map


class NeckWiringError(ValueError):
    """The neck or a head of a model does not match the feature maps that reach it."""


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _measure(outputs: Any, size: int, what: str) -> Optional[Maps]:
    """(channels, stride) of a module's (B, C, h, w) outputs for a ``size`` x ``size`` input, else None."""
    outputs = _as_list(outputs)
    if not outputs or not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outputs):
        return None  # not a feature pyramid (class token, token sequence ...): nothing to check
    maps = []
    for out in outputs:
        stride = size / out.shape[-1]
        if abs(stride - round(stride)) > 1e-6:
            raise NeckWiringError(f'{what} returns a map of width {out.shape[-1]} for a {size} px input '
                                  f'(stride {stride:.3g}); a feature map needs a whole stride')
        maps.append((int(out.shape[1]), int(round(stride))))
    return maps


def _describe(maps: Maps) -> str:
    return f'channels {[c for c, _ in maps]} at strides {[s for _, s in maps]}'


def _check_neck(neck: nn.Module, backbone_name: str, maps: Maps) -> None:
    """The neck's ``in_channels`` (and ``scales`` for mmseg's MultiLevelNeck) against the backbone maps."""
    name = type(neck).__name__
    channels = [c for c, _ in maps]
    strides = [s for _, s in maps]
    expected = getattr(neck, 'in_channels', None)
    if isinstance(expected, int):
        expected = [expected] * len(maps)
    if expected is not None and list(expected) != channels:
        raise NeckWiringError(
            f'model.neck ({name}) expects in_channels={list(expected)}, but the backbone {backbone_name} '
            f'returns {len(maps)} maps with {_describe(maps)}. Fix: set model.neck.in_channels={channels} '
            f'(and the width of the heads after it), or change the backbone\'s out_indices')
    scales = getattr(neck, 'scales', None)
    if scales is not None and len(set(strides)) > 1 and any(s != 1 for s in scales):
        resulting = [st / sc for st, sc in zip(strides, scales)]
        resulting = [int(r) if r == int(r) else r for r in resulting]
        raise NeckWiringError(
            f'model.neck ({name}) rescales maps of one stride by scales={list(scales)} (ViT-style), but '
            f'the backbone {backbone_name} already returns a pyramid ({_describe(maps)}), so the neck '
            f'would output strides {resulting}. Fix: give the neck single-stride maps (Vim: '
            f'model.backbone.multi_scale=False returns plain stride-16 maps) or remove the neck '
            f'(model.neck=None) and set the heads\' in_channels to {channels}')


def _check_seg_heads(model: nn.Module, maps: Maps, source: str) -> None:
    """mmseg decode/auxiliary heads: the channels of the maps they read (``in_index``)."""
    for attr in ('decode_head', 'auxiliary_head'):
        heads = getattr(model, attr, None)
        if heads is None:
            continue
        for i, head in enumerate(heads if isinstance(heads, nn.ModuleList) else [heads]):
            if not hasattr(head, 'in_index') or not hasattr(head, 'in_channels'):
                continue
            key = f'model.{attr}' + (f'[{i}]' if isinstance(heads, nn.ModuleList) else '')
            index = _as_list(head.in_index)
            if any(not -len(maps) <= k < len(maps) for k in index):
                raise NeckWiringError(
                    f'{key}.in_index={head.in_index} but {source} gives only {len(maps)} maps '
                    f'({_describe(maps)}). Fix: use in_index values in 0..{len(maps) - 1}')
            got = [maps[k][0] for k in index]
            wanted = _as_list(head.in_channels)
            if getattr(head, 'input_transform', None) is None and len(got) == 1:
                got = got[0]
                wanted = wanted[0] if len(wanted) == 1 else wanted
            if got != wanted:
                raise NeckWiringError(
                    f'{key} ({type(head).__name__}) expects in_channels={head.in_channels}, but the maps '
                    f'it reads (in_index={head.in_index}) from {source} have channels {got}. '
                    f'Fix: set {key}.in_channels={got}')


def _prior_strides(head: nn.Module) -> Optional[List[int]]:
    generator = getattr(head, 'prior_generator', None)
    strides = getattr(generator, 'strides', None)
    if strides is None:
        return None
    return [int(s[0]) if isinstance(s, (tuple, list)) else int(s) for s in strides]


def _check_det_heads(model: nn.Module, maps: Maps, source: str, backbone_strides: List[int]) -> None:
    """mmdet dense heads (anchor strides, in_channels) and RoI extractors (featmap_strides, channels)."""
    strides = [s for _, s in maps]
    if len(backbone_strides) > 1 and len(set(backbone_strides)) == 1:
        how = (f'the backbone returns single-stride maps (all stride {backbone_strides[0]}): give the neck '
               f'a pyramid (Vim: keep multi_scale=True, its own pyramid has strides 4/8/16/32)')
    else:
        how = ('make the neck output those strides (e.g. num_outs, start_level, or EfficientViMFPN for '
               'EfficientViM\'s 16/32/64 stages)')
    for attr in ('rpn_head', 'bbox_head'):
        head = getattr(model, attr, None)
        prior = _prior_strides(head) if head is not None else None
        if prior is None:
            continue
        if prior != strides[:len(prior)] or len(prior) > len(maps):
            raise NeckWiringError(
                f'model.{attr} places its anchors/priors at strides {prior}, but {source} gives '
                f'{len(maps)} maps at strides {strides}. Fix: {how}, or set '
                f'model.{attr}.anchor_generator.strides={strides} (and the RoI extractors\' featmap_strides)')
        in_channels = getattr(head, 'in_channels', None)
        if isinstance(in_channels, int) and any(c != in_channels for c, _ in maps[:len(prior)]):
            raise NeckWiringError(
                f'model.{attr} expects in_channels={in_channels}, but {source} gives '
                f'{_describe(maps)}. Fix: set model.{attr}.in_channels={maps[0][0]}')
    roi_head = getattr(model, 'roi_head', None)
    for attr in ('bbox_roi_extractor', 'mask_roi_extractor'):
        extractor = getattr(roi_head, attr, None)
        featmap_strides = getattr(extractor, 'featmap_strides', None)
        if featmap_strides is None:
            continue
        featmap_strides = [int(s) for s in featmap_strides]
        if featmap_strides != strides[:len(featmap_strides)]:
            raise NeckWiringError(
                f'model.roi_head.{attr}.featmap_strides={featmap_strides}, but {source} gives maps at '
                f'strides {strides}. Fix: set featmap_strides={strides[:len(featmap_strides)]}')
        out_channels = getattr(extractor, 'out_channels', None)
        used = maps[:len(featmap_strides)]
        if out_channels is not None and any(c != out_channels for c, _ in used):
            raise NeckWiringError(
                f'model.roi_head.{attr}.out_channels={out_channels}, but {source} gives '
                f'{_describe(used)}. Fix: set out_channels={used[0][0]}')


def _input_size(model: nn.Module) -> int:
    """A square input side that is a multiple of every stride in play, at least twice the largest."""
    expected = [64]  # the coarsest backbone stage of ours (EfficientViM)
    for attr in ('rpn_head', 'bbox_head'):
        expected += _prior_strides(getattr(model, attr, None)) or []
    return max(256, 2 * max(expected))


def _in_channels(backbone: nn.Module) -> int:
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def check_neck_wiring(model: nn.Module, input_size: Optional[int] = None) -> Optional[Maps]:
    """Raise :class:`NeckWiringError` (naming the fix) if the model's neck or heads mis-read its backbone.

    Runs ``model.backbone`` (and ``model.neck``) once, in eval mode and without gradients, on a blank
    ``input_size`` image (default: 256 px or twice the largest anchor stride), then checks:

    * the neck's ``in_channels`` against the backbone's channels, and mmseg's ``MultiLevelNeck`` ``scales``
      (meant for single-stride ViT maps) against a backbone that already returns a pyramid;
    * mmseg: each decode/auxiliary head's ``in_channels`` against the maps its ``in_index`` selects;
    * mmdet: the anchor/prior strides of ``rpn_head``/``bbox_head`` and the RoI extractors'
      ``featmap_strides`` against the strides measured after the neck, and their channels.

    Returns the (channels, stride) of the maps that reach the heads, or None when the model has no
    backbone returning (B, C, h, w) maps (e.g. a classifier), which is not checked.
    """
    if is_model_wrapper(model):
        model = model.module
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        return None
    name = type(backbone).__name__
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            size = input_size or _input_size(model)
            image = torch.zeros(1, _in_channels(backbone), size, size, device=device)
            feats = backbone(image)
            maps = _measure(feats, size, f'the backbone {name}')
            if maps is None:
                return None
            backbone_strides = [s for _, s in maps]
            source = f'the backbone {name}'
            neck = getattr(model, 'neck', None)
            if neck is not None:
                first = neck[0] if isinstance(neck, nn.Sequential) else neck
                _check_neck(first, name, maps)
                neck_maps = _measure(neck(feats), size, f'model.neck ({type(neck).__name__})')
                if neck_maps is None:
                    return None
                maps, source = neck_maps, f'model.neck ({type(neck).__name__})'
            _check_seg_heads(model, maps, source)
            _check_det_heads(model, maps, source, backbone_strides)
            return maps
    finally:
        model.train(was_training)


@HOOKS.register_module()
class NeckWiringCheckHook(Hook):
    """Runs :func:`check_neck_wiring` on the runner's model before training, validation or testing.

    ``custom_hooks = [dict(type='NeckWiringCheckHook')]``; ``input_size`` as for :func:`check_neck_wiring`.
    """

    priority = 'VERY_HIGH'

    def __init__(self, input_size: Optional[int] = None) -> None:
        self.input_size = input_size

    def before_run(self, runner) -> None:
        maps = check_neck_wiring(runner.model, self.input_size)
        if maps is not None:
            runner.logger.info(f'NeckWiringCheckHook: the heads read {_describe(maps)}: consistent')


__all__: Sequence[str] = ['NeckWiringError', 'check_neck_wiring', 'NeckWiringCheckHook']
