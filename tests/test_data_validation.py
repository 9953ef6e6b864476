"""Bad data fails at load with the file named, in every run of our configs (``ValidateData``, a custom
hook of our runtime bases and plug-in examples), and good data trains through the checks. That every
seg/det config lists the hook is asserted where the configs are loaded anyway: tests/test_configs.py,
tests/test_plugin_toolboxes.py.

The training runs go through tools/train.py on the generated tiny sample (Vim at 32 channels x 4 layers,
a few iterations), with one data-loading worker: mmengine's IterBasedTrainLoop starts its workers before
any hook runs, so a check that reached only the main process's dataset would miss the bad file.
"""
import glob
import json
import os
import os.path as osp
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from PIL import Image

from conftest import NO_VAL, TINY_CONFIGS
from test_e2e_seg import FAST, schedule

from mmvssm.datasets.validation import (KNOWN_COCO_DEFECTS, DataError, ValidateBoxes, ValidateData,
                                        ValidateImage, ValidateSegMap, check_coco_file)

SEG_CONFIG = osp.join(TINY_CONFIGS, 'upernet_vim_tiny_tiny-ade.py')
DET_CONFIG = osp.join(TINY_CONFIGS, 'mask_rcnn_vim_tiny_tiny-coco.py')
# Vim at 32 channels x 4 layers (tests/test_e2e_seg.py), 4 iterations of 2 images: every training image
FAST_SEG = [*FAST, *schedule(4, 4), 'train_dataloader.num_workers=1',
            'train_dataloader.persistent_workers=True', *NO_VAL]


def _logger():
    return MMLogger.get_instance('test_data_validation')


def _prepare(dataset_cfg: dict, hook: ValidateData = None):
    """Build ``dataset_cfg`` into a dataloader as a Runner does and let ``hook`` prepare it."""
    loader = Runner.build_dataloader(dict(dataset=dataset_cfg, batch_size=1, num_workers=0,
                                          sampler=dict(type='DefaultSampler', shuffle=False)))
    (hook or ValidateData()).prepare(SimpleNamespace(dataloader=loader), _logger())
    return loader.dataset


def _types(transforms) -> list:
    return [type(t).__name__ for t in transforms]


@pytest.fixture
def ade_copy(in_workspace, tmp_path) -> str:
    root = str(tmp_path / 'ade')
    shutil.copytree(osp.join(in_workspace, 'data', 'tiny', 'ade'), root)
    return root


@pytest.fixture
def coco_copy(in_workspace, tmp_path) -> str:
    root = str(tmp_path / 'coco')
    shutil.copytree(osp.join(in_workspace, 'data', 'tiny', 'coco'), root)
    return root


# ---------------------------------------------------------------- through tools/train.py
def test_out_of_range_label_stops_training_naming_the_file(ade_copy, tools, tmp_path):
    labels = osp.join(ade_copy, 'annotations', 'training')
    bad = sorted(os.listdir(labels))[3]
    seg = np.array(Image.open(osp.join(labels, bad)))
    seg[5, 7] = 200  # after reduce_zero_label: 199, outside ADE20K's 150 classes
    Image.fromarray(seg).save(osp.join(labels, bad))
    with pytest.raises(DataError, match=rf'{bad}: label values \[199\] are outside 0..149 and not '
                                        r'ignore_index=255; fix the label map'):
        tools['train'].main([SEG_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options', *FAST_SEG,
                             f'train_dataloader.dataset.data_root={ade_copy}'])


def test_good_data_trains_through_the_checks(in_workspace, tools, tmp_path):
    runner = tools['train'].main([SEG_CONFIG, '--work-dir', str(tmp_path), '--cfg-options', *FAST_SEG])
    assert runner.iter == 4
    steps = runner.train_dataloader.dataset.pipeline.transforms
    assert _types(steps)[:4] == ['LoadImageFromFile', 'ValidateImage', 'LoadAnnotations', 'ValidateSegMap']
    assert (steps[3].num_classes, steps[3].ignore_index) == (150, 255)
    log = ''.join(open(p).read() for p in glob.glob(osp.join(str(tmp_path), '*', '*.log')))
    assert 'ValidateData: ADE20KDataset' in log and 'ValidateSegMap(num_classes=150, ignore_index=255)' in log
    assert 'restarted the 1 data-loading workers that IterBasedTrainLoop had started' in log


def test_degenerate_coco_box_stops_training_before_the_first_iteration(coco_copy, tools, tmp_path):
    ann_file = osp.join(coco_copy, 'annotations', 'instances_train2017.json')
    data = json.load(open(ann_file))
    data['annotations'][1]['bbox'][2] = -3.0
    ann_id = data['annotations'][1]['id']
    assert ann_id not in KNOWN_COCO_DEFECTS['instances_train2017.json']
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    with pytest.raises(DataError, match=rf'instances_train2017.json: 1 bad annotation.*annotation id '
                                        rf'{ann_id} .*width/height <= 0.*accept_annotations'):
        tools['train'].main([DET_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                             f'train_dataloader.dataset.data_root={coco_copy}', *NO_VAL])


# ---------------------------------------------------------------- the hook on mmseg's/mmdet's datasets
def test_coco_annotations_can_be_accepted_knowingly(coco_copy):
    ann_file = osp.join(coco_copy, 'annotations', 'instances_train2017.json')
    assert check_coco_file(ann_file) == []  # the generated sample is clean
    data = json.load(open(ann_file))
    data['annotations'][0]['bbox'][3] = 0.0
    bad_id = data['annotations'][0]['id']
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    cfg = Config.fromfile(DET_CONFIG).train_dataloader.dataset
    cfg.data_root = coco_copy
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    with pytest.raises(DataError, match=f'annotation id {bad_id} '):
        _prepare(cfg)
    dataset = _prepare(cfg, ValidateData(accept_annotations={'instances_train2017.json': [bad_id]}))
    steps = _types(dataset.pipeline.transforms)
    assert steps[:4] == ['LoadImageFromFile', 'ValidateImage', 'LoadAnnotations', 'ValidateBoxes']
    assert len(dataset[0]['data_samples'].gt_instances) >= 0  # loads through the checks


def test_checks_go_through_wrappers_and_tta_once(in_workspace):
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(SEG_CONFIG)
    val = cfg.val_dataloader.dataset
    tta = dict(val, pipeline=cfg.tta_pipeline)
    hook = ValidateData()
    loader = Runner.build_dataloader(dict(
        dataset=dict(type='ConcatDataset', datasets=[dict(type='RepeatDataset', times=2, dataset=val), tta]),
        batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False)))
    for _ in range(2):  # idempotent
        hook.prepare(SimpleNamespace(dataloader=loader), _logger())
    plain = loader.dataset.datasets[0].dataset.pipeline.transforms
    assert _types(plain) == ['LoadImageFromFile', 'ValidateImage', 'Resize', 'LoadAnnotations',
                             'ValidateSegMap', 'PackSegInputs']
    tta_steps = loader.dataset.datasets[1].pipeline.transforms
    assert _types(tta_steps)[:2] == ['LoadImageFromFile', 'ValidateImage']
    first, second = tta_steps[-1].subroutines[:2]
    assert _types(first.transforms).count('ValidateSegMap') == 1
    assert 'ValidateSegMap' not in _types(second.transforms)  # the branches load the same file
    for index in (0, len(loader.dataset) - 1):  # a plain and a TTA sample load through the checks
        assert loader.dataset[index]


def test_non_finite_pixels_of_a_float_tiff_are_named(ade_copy):
    """LoadImageFromFile(color_type='unchanged') keeps float32 TIFFs as they are: NaN reaches the model."""
    images = osp.join(ade_copy, 'images', 'validation')
    names = sorted(os.listdir(images))
    for name in names:
        img = cv2.imread(osp.join(images, name)).astype(np.float32) / 255
        if name == names[1]:
            img[3, 4, 1] = np.nan
        cv2.imwrite(osp.join(images, name[:-4] + '.tif'), img)
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(SEG_CONFIG).val_dataloader.dataset
    cfg.update(data_root=ade_copy, img_suffix='.tif')
    cfg.pipeline[0] = dict(type='LoadImageFromFile', color_type='unchanged')
    dataset = _prepare(cfg)
    assert dataset[0]['inputs'].dtype.is_floating_point  # a float image, and finite: loads
    with pytest.raises(DataError, match=rf'{names[1][:-4]}.tif: 1 non-finite pixel values'):
        dataset[1]


def test_transform_level_checks():
    ValidateSegMap(num_classes=150)(dict(gt_seg_map=np.array([[0, 149, 255]]), seg_map_path='x.png'))
    with pytest.raises(DataError, match=r'x.png: label values \[-1, 150\]'):
        ValidateSegMap(num_classes=150)(dict(gt_seg_map=np.array([[0, 150, -1]]), seg_map_path='x.png'))
    img = np.zeros((4, 4, 3), dtype=np.float32)
    img[1, 2, 0] = np.inf
    with pytest.raises(DataError, match='scan_17.tif: 1 non-finite pixel'):
        ValidateImage()(dict(img=img, img_path='scan_17.tif'))
    ValidateImage()(dict(img=np.zeros((4, 4, 3), np.uint8), img_path='ok.jpg'))
    boxes = np.array([[0, 0, 5, 5], [10, 2, 4, 8], [0, 0, np.nan, 3]], dtype=np.float32)
    with pytest.raises(DataError, match=r'000042.xml: boxes \[1, 2\] are degenerate'):
        ValidateBoxes()(dict(gt_bboxes=boxes, img_path='000042.jpg', xml_path='000042.xml'))
    ValidateBoxes()(dict(gt_bboxes=np.zeros((0, 4), np.float32), img_path='empty.jpg'))



def _check_on_rank(rank: int, init_file: str, ann_file: str, results) -> None:
    import torch.distributed as torch_dist
    from mmdet.datasets import CocoDataset
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        dataset = CocoDataset(ann_file=ann_file, pipeline=[], lazy_init=True)
        ValidateData()._check_annotation_file(dataset, _logger())
        results.put((rank, 'passed'))
    except DataError as error:
        results.put((rank, str(error)))
    finally:
        torch_dist.destroy_process_group()


def test_distributed_ranks_all_raise_what_rank_0_found(coco_copy, tmp_path):
    """Rank 0 reads the file; every rank raises its error (none waits at a collective that never comes)."""
    import multiprocessing
    ann_file = osp.join(coco_copy, 'annotations', 'instances_val2017.json')
    data = json.load(open(ann_file))
    data['annotations'][0]['bbox'] = [1.0, 2.0, float('nan'), 3.0]
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    ranks = [context.Process(target=_check_on_rank, args=(rank, str(tmp_path / 'init'), ann_file, results),
                             daemon=True) for rank in range(2)]
    for process in ranks:
        process.start()
    try:
        outcome = dict(results.get(timeout=60) for _ in ranks)
    finally:
        for process in ranks:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert sorted(outcome) == [0, 1]
    for message in outcome.values():
        assert 'instances_val2017.json: 1 bad annotation' in message and 'is not 4 finite numbers' in message
