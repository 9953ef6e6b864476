"""Mask R-CNN + each mmvssm backbone (reduced) end to end through the tools on the tiny COCO sample."""
import glob
import os.path as osp
import pickle

import numpy as np
import pytest

from conftest import NO_VAL, TINY_CONFIGS

pytestmark = pytest.mark.e2e
BACKBONES = ['vim_tiny', 'efficient_vmamba_t', 'efficient_vim_m1']
# 64 px images, 8 iterations (2 epochs of 4 batches), short warm-up; score_thr 0 so that the barely
# trained model still returns detections for CocoMetric to score.
FAST = [
    'train_dataloader.dataset.pipeline.2.scale=(64,64)', 'test_dataloader.dataset.pipeline.1.scale=(64,64)',
    'val_dataloader.dataset.pipeline.1.scale=(64,64)', 'train_cfg.max_epochs=2',
    'param_scheduler.0.end=2', 'param_scheduler.1.end=2', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=2', 'model.test_cfg.rcnn.score_thr=0.0',
]


@pytest.mark.parametrize('backbone', BACKBONES)
def test_mask_rcnn_train_then_test(backbone, in_workspace, tools, tmp_path):
    config = osp.join(TINY_CONFIGS, f'mask_rcnn_{backbone}_tiny-coco.py')
    work_dir = str(tmp_path / 'work')
    runner = tools['train'].main([config, '--work-dir', work_dir, '--cfg-options', *FAST, *NO_VAL])
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), f'loss did not decrease: {losses}'
    ckpt = osp.join(work_dir, 'epoch_2.pth')
    assert osp.isfile(ckpt)

    out, show_dir = str(tmp_path / 'preds.pkl'), tmp_path / 'show'
    metrics = tools['test'].main([config, ckpt, '--work-dir', work_dir, '--out', out,
                                  '--show-dir', str(show_dir), '--cfg-options', *FAST])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, (key, metrics)
    # --out: mmdet's DumpDetResults pickle, one entry per validation image with boxes and RLE masks
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(preds[0]['pred_instances'])
    assert len(glob.glob(str(show_dir / '**' / '*.png'), recursive=True)) == 4
