"""Shared scaffolding of the model tests: real configs at reduced sizes, built and trained one step on CPU.

A plain module, imported by the test files as ``from dense_helpers import ...``: pytest's default
(``prepend``) import mode puts ``tests/`` on ``sys.path`` before it imports a test file of that folder.

The pieces a model test puts together:

* :func:`load_config` — a file of ``configs/`` with overrides (the reduced arch of the test);
* :func:`build_model` — the ``model`` of such a config built by one framework (mmseg, mmdet,
  mmpretrain) under its default scope, SyncBN replaced by BN (one CPU process has no process group);
* :func:`seg_train_step` / :func:`det_train_step` — random inputs and ground truth through the model's
  data preprocessor, ``loss``, ``backward``;
* :func:`assert_backbone_has_grads` — every trainable backbone parameter received a gradient.
"""
import importlib
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope

import mmvssm  # noqa: F401  (registers the backbones, heads and necks in the root registry)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')


def load_config(name: str, overrides: Optional[Dict[str, Any]] = None) -> Config:
    """``configs/<name>`` (relative to the repository root) with ``overrides`` merged in.

    ``overrides`` uses ``Config.merge_from_dict``'s dotted keys, e.g. ``{'model.backbone.arch': ...}``; a
    dict value merges into the config's dict unless it holds ``_delete_=True``.
    """
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


def sync_bn_to_bn(cfg: Any) -> Any:
    """A copy of ``cfg`` (nested dicts/lists/tuples) with every ``type='SyncBN'`` replaced by ``'BN'``."""
    if isinstance(cfg, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else sync_bn_to_bn(v)) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(sync_bn_to_bn(v) for v in cfg)
    return cfg


def build_model(cfg_model: Dict[str, Any], scope: str, init_weights: bool = True) -> torch.nn.Module:
    """Build ``cfg_model`` with ``<scope>.registry.MODELS`` (scope: ``'mmseg'``, ``'mmdet'``, ``'mmpretrain'``).

    The scope's modules are registered (without touching the global default scope) and the model is
    built under ``DefaultScope.overwrite_default_scope(scope)``, so the result does not depend on which
    scope an earlier test left behind. SyncBN becomes BN (single CPU process). With ``init_weights`` the
    model's ``init_weights()`` runs: reduced configs should set a pretrained ``init_cfg`` to ``None``.
    """
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    if isinstance(cfg_model, ConfigDict):
        cfg_model = cfg_model.to_dict()
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(ConfigDict(sync_bn_to_bn(cfg_model)))
    if init_weights:
        model.init_weights()
    return model


def _backward(model: torch.nn.Module, losses: Dict[str, Any]) -> None:
    """Sum the ``loss`` entries (lists included) the way the runner does, check it is finite, backpropagate."""
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), {k: v for k, v in losses.items() if 'loss' in k}
    total.backward()


def _preprocess(model: torch.nn.Module, data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` through the model's data preprocessor (training mode), or stacked as float if it has none."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    if preprocessor is not None:
        return preprocessor(data, training=True)
    return dict(inputs=torch.stack(data['inputs']).float(), data_samples=data['data_samples'])


def seg_train_step(model: torch.nn.Module, height: int, width: int, batch: int = 2,
                   num_classes: int = 150) -> Dict[str, torch.Tensor]:
    """One training step of an mmseg segmentor: ``batch`` random images with random ground truth.

    The model is put in training mode, the data goes through its data preprocessor, the summed loss is
    backpropagated (gradients are left in place for the caller to check). Returns the loss dict.
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, height, width)))
        samples.append(sample)
    inputs = [torch.randint(0, 255, (3, height, width)).float() for _ in range(batch)]
    model.train()
    data = _preprocess(model, dict(inputs=inputs, data_samples=samples))
    losses = model.loss(data['inputs'], data['data_samples'])
    _backward(model, losses)
    return losses


def det_train_step(model: torch.nn.Module, height: int, width: int, batch: int = 2, items: int = 2,
                   with_mask: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """One training step of an mmdet detector on ``mmdet.testing.demo_mm_inputs`` (fixed seed).

    ``batch`` images of ``height`` x ``width`` with ``items`` random boxes each (and masks with
    ``with_mask``), 80 COCO classes. The model is put in training mode, the data goes through its data
    preprocessor, the summed loss is backpropagated. Returns ``(losses, preprocessed data)``; the data
    serves :func:`det_predict`.
    """
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(batch, [[3, height, width]] * batch, num_items=[items] * batch,
                            num_classes=80, with_mask=with_mask)
    model.train()
    data = _preprocess(model, packed)
    losses = model.loss(data['inputs'], data['data_samples'])
    _backward(model, losses)
    return losses, data


def det_predict(model: torch.nn.Module, data: Dict[str, Any]) -> List[Any]:
    """The detector's predictions on preprocessed ``data`` (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return model.predict(data['inputs'], data['data_samples'])


def assert_backbone_has_grads(backbone: torch.nn.Module) -> None:
    """Every trainable parameter of ``backbone`` got a gradient from the last backward pass."""
    names = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not names, names[:5]
