"""mmpretrain's, mmseg's and mmdet's inferencers on our configs (reduced archs, random weights, no files).

Each inferencer is built from one of our configs twice: with ``weights=None`` (random initialisation, as
the toolboxes allow), and from an mmengine training-style checkpoint of that first model (state dict,
numpy meta, a ``HistoryBuffer`` in the message hub: what torch >= 2.6 refuses without mmvssm's allow-list
at mmengine's loader). The second must predict exactly what the first does.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import DefaultScope
from mmengine.runner import save_checkpoint

import mmvssm  # noqa: F401
from conftest import REPO

CONFIGS = osp.join(REPO, 'configs')
IMAGE = np.random.RandomState(0).randint(0, 256, (64, 80, 3), dtype=np.uint8)  # BGR, like mmcv.imread

# the test pipelines' Resize (ADE20K: 2048x512, COCO: 1333x800) at a size that runs in a second
SMALL_TEST_RESIZE = {'test_dataloader.dataset.pipeline.1.scale': (160, 128)}
EVIM_ARCH = dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], state_dims=[16, 9, 4])
CLS = {
    'imagenet/vim_tiny_in1k.py': {
        'model.backbone.arch': dict(_delete_=True, embed_dims=32, depth=4),
        'model.backbone.out_indices': (3, ),
        'model.head.in_channels': 32},
    'imagenet/efficient_vmamba_t_in1k.py': {
        'model.backbone.arch': dict(_delete_=True, dims=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        'model.head.in_channels': 128},
    'imagenet/efficient_vim_m1_in1k.py': {
        'model.backbone.arch': dict(_delete_=True, **EVIM_ARCH),
        'model.head.in_channels': (32, 48, 64)},
}


def tiny(name: str, overrides: dict) -> Config:
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    cfg.merge_from_dict(overrides)
    return cfg


def training_checkpoint(model: torch.nn.Module, path: str) -> str:
    """``model``'s weights in the layout mmengine's CheckpointHook writes (meta, message hub)."""
    meta = {'iter': 1, 'seed': np.int64(0)}
    dataset_meta = getattr(model, 'dataset_meta', None) or getattr(model, '_dataset_meta', None)
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    save_checkpoint({
        'meta': meta,
        'state_dict': model.state_dict(),
        'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([1.0], [1])}, 'runtime_info': {}},
    }, path)
    return path


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize('name', sorted(CLS))
def test_mmpretrain_image_classification_inferencer(name, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    cfg = tiny(name, CLS[name])
    # Unlike mmseg's and mmdet's, mmpretrain's inferencer builds its pipeline in whatever default scope
    # the process is in (mmseg's after an mmseg runner or inferencer): give it its own.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        first = ImageClassificationInferencer(cfg, pretrained=False, device='cpu')
    result = first(IMAGE)[0]
    assert result['pred_scores'].shape == (1000, )
    assert np.isclose(result['pred_scores'].sum(), 1, atol=1e-4)
    assert result['pred_class'] == first.classes[result['pred_label']]  # ImageNet names from the config

    weights = training_checkpoint(first.model, str(tmp_path / 'cls.pth'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        second = ImageClassificationInferencer(cfg, pretrained=weights, device='cpu')
    assert_same_weights(first.model, second.model)
    np.testing.assert_allclose(second(IMAGE)[0]['pred_scores'], result['pred_scores'], rtol=1e-5, atol=1e-7)


def test_mmseg_inferencer(tmp_path):
    from mmseg.apis import MMSegInferencer
    cfg = tiny('upernet_efficient_vmamba_t_ade20k.py', {
        'model.backbone.arch': dict(_delete_=True, dims=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        'model.backbone.init_cfg': None, 'model.decode_head.in_channels': [16, 32, 64, 128],
        'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': 64,
        'model.auxiliary_head.channels': 16, **SMALL_TEST_RESIZE})
    first = MMSegInferencer(cfg, weights=None, device='cpu')
    labels = first(IMAGE)['predictions']
    assert labels.shape == IMAGE.shape[:2]  # one ADE20K class index per input pixel
    assert 0 <= labels.min() and labels.max() < 150

    weights = training_checkpoint(first.model, str(tmp_path / 'seg.pth'))
    second = MMSegInferencer(cfg, weights=weights, device='cpu')
    assert_same_weights(first.model, second.model)
    np.testing.assert_array_equal(second(IMAGE)['predictions'], labels)


def test_mmdet_det_inferencer(tmp_path):
    from mmdet.apis import DetInferencer
    cfg = tiny('mask_rcnn_efficient_vim_m1_fpn_1x_coco.py', {
        'model.backbone.arch': dict(_delete_=True, **EVIM_ARCH),
        'model.backbone.init_cfg': None, 'model.neck.in_channels': [32, 48, 64],
        'model.test_cfg.rcnn.score_thr': 0.0,  # random weights score about 1/81: keep every detection
        'model.test_cfg.rcnn.max_per_img': 10, 'model.test_cfg.rpn.nms_pre': 100,
        'model.test_cfg.rpn.max_per_img': 20, **SMALL_TEST_RESIZE})
    first = DetInferencer(cfg, weights=None, device='cpu', show_progress=False)
    pred = first(IMAGE, pred_score_thr=0.0)['predictions'][0]
    assert 0 < len(pred['labels']) <= 10
    boxes = np.asarray(pred['bboxes'])
    assert boxes.shape == (len(pred['labels']), 4)
    assert (boxes[:, 2:] >= boxes[:, :2]).all() and boxes[:, 2].max() <= IMAGE.shape[1] + 1e-3
    assert len(pred['masks']) == len(pred['labels'])

    weights = training_checkpoint(first.model, str(tmp_path / 'det.pth'))
    second = DetInferencer(cfg, weights=weights, device='cpu', show_progress=False)
    assert_same_weights(first.model, second.model)
    again = second(IMAGE, pred_score_thr=0.0)['predictions'][0]
    np.testing.assert_allclose(np.asarray(again['bboxes']), boxes, rtol=1e-4, atol=1e-3)
    assert again['labels'] == pred['labels']
