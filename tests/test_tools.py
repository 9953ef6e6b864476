"""The tools' building blocks: dataset generator, crash-safe checkpoints, clear errors for bad input."""
import filecmp
import json
import os
import os.path as osp
import shutil

import mmengine.runner.runner as mmengine_runner_module
import numpy as np
import pytest
import torch
from mmengine.fileio import LocalBackend
from PIL import Image

from conftest import TINY_CONFIGS, TINY_SAMPLE, load_tool

from mmvssm.checkpoint import ATOMIC_BACKEND, find_resumable_checkpoint

SEG_CONFIG = osp.join(TINY_CONFIGS, 'upernet_vim_tiny_tiny-ade.py')
DET_CONFIG = osp.join(TINY_CONFIGS, 'mask_rcnn_vim_tiny_tiny-coco.py')
make_tiny = load_tool('misc/make_tiny_datasets')


# ---------------------------------------------------------------- dataset generator
def test_generator_is_deterministic_and_idempotent(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    make_tiny.generate(a, **TINY_SAMPLE)
    make_tiny.generate(b, **TINY_SAMPLE)
    cmp = filecmp.dircmp(a, b)
    files = []
    for part in ('ade', 'coco'):
        for root, _, names in os.walk(osp.join(a, part)):
            files += [osp.relpath(osp.join(root, n), a) for n in names]
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files) > 20
    assert not cmp.left_only and not cmp.right_only
    # a second run over a finished sample keeps it (same bytes, no leftovers)
    stamp = osp.join(a, 'ade', make_tiny.STAMP)
    mtime = os.stat(stamp).st_mtime_ns
    make_tiny.generate(a, **TINY_SAMPLE)
    assert os.stat(stamp).st_mtime_ns == mtime
    assert sorted(os.listdir(a)) == ['ade', 'coco']
    # other arguments regenerate the part in place
    make_tiny.generate(a, num_train=2, num_val=1, size=64, parts=['ade'])
    assert len(os.listdir(osp.join(a, 'ade', 'images', 'training'))) == 2


def test_generated_ade_follows_reduce_zero_label_convention(tiny_workspace):
    ade = osp.join(tiny_workspace, 'data', 'tiny', 'ade')
    label = np.asarray(Image.open(osp.join(ade, 'annotations', 'training', 'ADE_train_00000001.png')))
    values = set(np.unique(label).tolist())
    assert 0 in values and values <= {0, 1, 4, 5, 13, 21, 23}  # 0 = ignore, k = class k-1
    assert label[0, 0] == 0 and label.dtype == np.uint8
    assert len(os.listdir(osp.join(ade, 'images', 'validation'))) == TINY_SAMPLE['num_val']


def test_generated_coco_masks_are_exact(tiny_workspace):
    from pycocotools.coco import COCO
    coco_dir = osp.join(tiny_workspace, 'data', 'tiny', 'coco')
    coco = COCO(osp.join(coco_dir, 'annotations', 'instances_train2017.json'))
    assert len(coco.getCatIds()) == 80
    kinds = set()
    colours = {cat: np.array(colour) for cat, colour, _ in make_tiny.COCO_CATEGORIES}
    for ann in coco.loadAnns(coco.getAnnIds()):
        seg = ann['segmentation']
        kinds.add('polygon' if isinstance(seg, list) else
                  'crowd-rle' if isinstance(seg['counts'], list) else 'rle')
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann['area'] > 0
        info = coco.loadImgs(ann['image_id'])[0]
        img = np.asarray(Image.open(osp.join(coco_dir, 'train2017', info['file_name'])))
        # the pixels under the mask carry the class colour (other classes and the background differ by
        # over 100 in some channel; JPEG chroma subsampling blurs small shapes a little)
        median = np.median(img[mask], axis=0)
        assert np.abs(median - colours[ann['category_id']]).max() < 30, (ann['id'], median)
    assert kinds == {'polygon', 'rle', 'crowd-rle'}


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match='--size must be at least 32'):
        make_tiny.main(['--out', str(tmp_path), '--size', '16'])


# ---------------------------------------------------------------- checkpoints
def _disk_full(fd):
    raise OSError('No space left on device')


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / 'iter_2.pth')
    atomic = dict(backend=ATOMIC_BACKEND)  # what AtomicCheckpointHook hands mmengine's writer
    mmengine_runner_module.save_checkpoint({'state_dict': {'w': torch.ones(3)}}, path, backend_args=atomic)
    # the new bytes are written, then flushing them to disk fails
    monkeypatch.setattr(os, 'fsync', _disk_full)
    with pytest.raises(OSError, match='No space left'):
        mmengine_runner_module.save_checkpoint({'state_dict': {'w': torch.zeros(3)}}, path, backend_args=atomic)
    monkeypatch.undo()
    # the previous checkpoint is intact and no partial file is left behind
    assert os.listdir(tmp_path) == ['iter_2.pth']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as mmengine's own writer
    assert torch.equal(torch.load(path)['state_dict']['w'], torch.ones(3))
    # mmengine's own writer, through its file-backend extension point
    assert mmengine_runner_module.save_checkpoint.__module__ == 'mmengine.runner.checkpoint'


def test_plain_mmengine_checkpoint_write_truncates(tmp_path, monkeypatch):
    """Why the atomic backend exists: mmengine's local backend writes into the final path, a failure
    leaves it truncated."""
    path = str(tmp_path / 'iter_2.pth')
    mmengine_runner_module.save_checkpoint({'w': torch.ones(3)}, path)

    def put_halfway(self, obj, filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:10])
        raise OSError('killed')

    monkeypatch.setattr(LocalBackend, 'put', put_halfway)
    with pytest.raises(OSError):
        mmengine_runner_module.save_checkpoint({'w': torch.zeros(3)}, path)
    assert os.path.getsize(path) == 10


def test_resume_lookup_survives_a_stale_pointer(tmp_path):
    work_dir = str(tmp_path)
    assert find_resumable_checkpoint(work_dir) is None
    for it in (2, 4, 10):
        torch.save({}, osp.join(work_dir, f'iter_{it}.pth'))
    (tmp_path / 'best_mIoU_iter_4.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(osp.join(work_dir, 'iter_4.pth'))
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, 'iter_4.pth')
    # killed between mmengine deleting the old file and writing the new one, or mid pointer write
    (tmp_path / 'last_checkpoint').write_text(osp.join(work_dir, 'iter_12.pth'))
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, 'iter_10.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, 'iter_10.pth')


# ---------------------------------------------------------------- bad input: clear messages
def _error_of(tool_main, argv) -> str:
    with pytest.raises(SystemExit) as info:
        tool_main(argv)
    return str(info.value)


def test_missing_data_root(in_workspace, tools):
    msg = _error_of(tools['train'].main, [SEG_CONFIG, '--cfg-options',
                                          'train_dataloader.dataset.data_root=no/such/dir'])
    assert "train_dataloader.dataset.data_root 'no/such/dir' does not exist" in msg
    assert 'make_tiny_datasets.py' in msg
    msg = _error_of(tools['test'].main, [DET_CONFIG, 'x.pth'])
    assert "checkpoint 'x.pth' not found" in msg


def test_missing_annotation_file(in_workspace, tools, tmp_path):
    msg = _error_of(tools['train'].main, [DET_CONFIG, '--cfg-options',
                                          'train_dataloader.dataset.ann_file=annotations/nope.json'])
    assert 'annotation file' in msg and 'nope.json' in msg


def test_unknown_backbone_type_and_arch(in_workspace, tools, tmp_path):
    msg = _error_of(tools['train'].main, [SEG_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                                          'model.backbone.type=VisionMambaa'])
    assert "model.backbone.type='VisionMambaa' is not registered" in msg
    assert 'EfficientVMamba, EfficientViM, Vim' in msg and "custom_imports" in msg
    # an unknown arch reaches the backbone, whose message mmengine passes on with the class chain
    with pytest.raises(ValueError, match=r"Vim: unknown arch 'huge'; choose one of \['base', 'small', "
                                         r"'tiny'\]"):
        tools['train'].main([SEG_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                             'model.backbone.arch=huge'])


def test_amp_without_cuda_bad_out_and_mask_tta(in_workspace, tools, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: --amp is supported')
    msg = _error_of(tools['train'].main, [SEG_CONFIG, '--amp'])
    assert '--amp needs a CUDA device' in msg and 'drop --amp' in msg
    ckpt = tmp_path / 'empty.pth'
    torch.save({'state_dict': {}}, ckpt)
    msg = _error_of(tools['test'].main, [DET_CONFIG, str(ckpt), '--out', 'preds.json'])
    assert 'ending in .pkl' in msg
    msg = _error_of(tools['test'].main, [DET_CONFIG, str(ckpt), '--tta'])
    assert 'no test-time augmentation for instance masks' in msg


@pytest.fixture
def broken_data(in_workspace, tmp_path):
    """A private copy of the tiny sample to damage; returns its data/tiny folder."""
    root = tmp_path / 'data' / 'tiny'
    shutil.copytree(osp.join(in_workspace, 'data', 'tiny'), root)
    return root, {config: own_checkpoint(config, tmp_path / f'untrained_{osp.basename(config)}.pth')
                  for config in (SEG_CONFIG, DET_CONFIG)}


def own_checkpoint(config: str, path) -> str:
    """An untrained checkpoint of ``config``'s model (tools/test.py refuses one that does not fit)."""
    from mmengine.config import Config

    from dense_helpers import build_model
    cfg = Config.fromfile(config)
    torch.save({'state_dict': build_model(cfg.model, cfg.default_scope, init_weights=False).state_dict()},
               str(path))
    return str(path)


def test_corrupt_image_is_named(broken_data, tools, tmp_path):
    root, ckpts = broken_data
    ckpt = ckpts[SEG_CONFIG]
    bad = root / 'ade' / 'images' / 'validation' / 'ADE_val_00000001.jpg'
    bad.write_bytes(b'this is not a JPEG')
    with pytest.raises(AssertionError, match=f'failed to load image: .*{bad.name}'):
        tools['test'].main([SEG_CONFIG, ckpt, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                            f'test_dataloader.dataset.data_root={root / "ade"}'])


def test_annotation_referring_to_missing_image(broken_data, tools, tmp_path):
    root, ckpts = broken_data
    ckpt = ckpts[DET_CONFIG]
    ann = json.loads((root / 'coco' / 'annotations' / 'instances_val2017.json').read_text())
    missing = root / 'coco' / 'val2017' / ann['images'][0]['file_name']
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        tools['test'].main([DET_CONFIG, ckpt, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                            f'test_dataloader.dataset.data_root={root / "coco"}/',
                            f'test_evaluator.ann_file={root / "coco"}/annotations/instances_val2017.json'])


def test_cuda_configs_adapt_to_cpu(monkeypatch):
    """The full configs use SyncBN (GPU only); without CUDA the tools build BN layers instead."""
    from mmengine.config import Config

    from mmvssm.engine.launch import adapt_to_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config.fromfile(osp.join(osp.dirname(TINY_CONFIGS), 'upernet_vim_tiny_ade20k.py'))
    assert 'SyncBN' in str(cfg.model)
    adapt_to_device(cfg, 'none')
    assert 'SyncBN' not in str(cfg.model) and cfg.model.decode_head.norm_cfg.type == 'BN'
    with pytest.raises(Exception, match='--launcher slurm needs CUDA GPUs'):
        adapt_to_device(cfg, 'slurm')
