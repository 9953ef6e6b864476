"""The plug-in example configs (``configs/plugins/``) through mmseg's and mmdet's own entry points.

Each config inherits mmseg's ViT UperNet / mmdet's Mask R-CNN files and swaps in one of our backbones with
``custom_imports`` only. Here each one trains one iteration the way mmseg's and mmdet's ``tools/train.py``
do (``Config.fromfile`` + ``--cfg-options`` + ``Runner.from_cfg``, or ``RUNNERS.build`` when the config
names a ``runner_type``; the default scope comes from their ``default_runtime.py``), on the generated tiny
ADE20K/COCO sample with a reduced backbone; the checkpoint it writes is then read back with mmengine's own
``load_checkpoint``, as their ``tools/test.py`` and inferencers do. The rest checks that mis-wired
necks/heads stop a run before the first iteration with the fix, and that mmengine's loader, after
``import mmvssm``, still refuses a pickle that would run code.
"""
import contextlib
import importlib
import os
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint

import mmvssm  # noqa: F401  (the configs import it too; here for NeckWiringError)
from conftest import REPO
from mmvssm.engine import NeckWiringError, check_neck_wiring

pytestmark = pytest.mark.e2e
PLUGINS = osp.join(REPO, 'configs', 'plugins')

# --cfg-options shrinking each example to seconds on a CPU: a reduced backbone and the tiny sample.
VIM = {'model.backbone.arch': dict(embed_dims=32, depth=4), 'model.backbone.img_size': 64,
       'model.backbone.out_indices': (0, 1, 2, 3)}
EVMAMBA = {'model.backbone.arch': dict(dims=[16, 32, 64, 128], depths=[1, 1, 1, 1])}
EVIM = {'model.backbone.arch': dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], state_dims=[16, 9, 4])}
SEG_DATA = {
    'model.data_preprocessor.size': (64, 64), 'model.decode_head.channels': 16,
    'model.decode_head.pool_scales': (1, 2), 'model.auxiliary_head.channels': 16,
    'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False, 'train_dataloader.dataset.data_root': 'data/tiny/ade',
    'train_dataloader.dataset.pipeline.2.scale': (128, 64),
    'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
    'train_cfg.max_iters': 1, 'default_hooks.checkpoint.interval': 1,
}
DET_WIDTH = 32
DET_DATA = {
    'model.neck.out_channels': DET_WIDTH, 'model.rpn_head.in_channels': DET_WIDTH,
    'model.rpn_head.feat_channels': DET_WIDTH,
    'model.roi_head.bbox_roi_extractor.out_channels': DET_WIDTH,
    'model.roi_head.bbox_head.in_channels': DET_WIDTH, 'model.roi_head.bbox_head.fc_out_channels': 64,
    'model.roi_head.mask_roi_extractor.out_channels': DET_WIDTH,
    'model.roi_head.mask_head.in_channels': DET_WIDTH,
    'model.roi_head.mask_head.conv_out_channels': DET_WIDTH,
    'model.roi_head.mask_head.num_convs': 1,
    'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False, 'train_dataloader.dataset.data_root': 'data/tiny/coco/',
    'train_dataloader.dataset.indices': 2,  # one epoch = one iteration of 2 images
    'train_dataloader.dataset.pipeline.2.scale': (128, 128),
    'train_cfg.max_epochs': 1,
}
NO_EVAL = {'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None}
# config -> (toolbox, its overrides, the checkpoint one iteration writes)
CASES = {
    'upernet_vit_vim-s_ade20k.py': ('mmseg', {
        **VIM, 'model.neck.in_channels': [32] * 4, 'model.neck.out_channels': 32,
        'model.decode_head.in_channels': [32] * 4, 'model.auxiliary_head.in_channels': 32}),
    'upernet_vit_efficient-vmamba-t_ade20k.py': ('mmseg', {
        **EVMAMBA, 'model.decode_head.in_channels': [16, 32, 64, 128],
        'model.auxiliary_head.in_channels': 64}),
    'upernet_vit_efficient-vim-m1_ade20k.py': ('mmseg', {
        **EVIM, 'model.decode_head.in_channels': [32, 48, 64], 'model.auxiliary_head.in_channels': 48}),
    'mask-rcnn_vim-s_fpn_1x_coco.py': ('mmdet', {
        **VIM, 'model.backbone.img_size': 128, 'model.neck.in_channels': [32] * 4}),
    'mask-rcnn_efficient-vmamba-t_fpn_1x_coco.py': ('mmdet', {
        **EVMAMBA, 'model.neck.in_channels': [16, 32, 64, 128]}),
    'mask-rcnn_efficient-vim-m1_fpn_1x_coco.py': ('mmdet', {
        **EVIM, 'model.neck.in_channels': [32, 48, 64]}),
}
CHECKPOINT = {'mmseg': 'iter_1.pth', 'mmdet': 'epoch_1.pth'}
# --cfg-options of their test.py runs on the tiny validation split
TEST_DATA = {
    'mmseg': {'test_dataloader.dataset.data_root': 'data/tiny/ade',
              'test_dataloader.dataset.pipeline.1.scale': (128, 64)},
    'mmdet': {'test_dataloader.dataset.data_root': 'data/tiny/coco/',
              'test_dataloader.dataset.pipeline.1.scale': (128, 128),
              'test_evaluator.ann_file': 'data/tiny/coco/annotations/instances_val2017.json',
              # random-ish weights score about 1/81 per class: keep a few detections to evaluate
              'model.test_cfg.rcnn.score_thr': 0.0, 'model.test_cfg.rpn.max_per_img': 20},
}
# the cases that also go through their tools/test.py (one per toolbox)
THEIR_TEST = ('upernet_vit_vim-s_ade20k.py', 'mask-rcnn_efficient-vmamba-t_fpn_1x_coco.py')


def tiny_config(name: str, work_dir: str, **extra) -> Config:
    """``configs/plugins/<name>`` with the reduced sizes, as ``--cfg-options`` of their train.py would."""
    scope, overrides = CASES[name]
    cfg = Config.fromfile(osp.join(PLUGINS, name))
    assert cfg.default_scope == scope  # from their default_runtime.py, not ours
    assert dict(type='ValidateData') in cfg.custom_hooks  # their runner runs our data checks
    cfg.merge_from_dict({**(SEG_DATA if scope == 'mmseg' else DET_DATA), **NO_EVAL, **overrides, **extra})
    cfg.launcher = 'none'
    cfg.work_dir = work_dir
    return cfg


def their_runner(cfg: Config) -> Runner:
    """The runner of mmseg's/mmdet's tools/train.py: ``Runner.from_cfg`` unless the config names one."""
    if 'runner_type' in cfg:
        return importlib.import_module(f'{cfg.default_scope}.registry').RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def build_like_tools(cfg: Config) -> torch.nn.Module:
    """A fresh model from ``cfg`` with the toolbox's registry, as their test.py/inferencers build it."""
    importlib.import_module(f'{cfg.default_scope}.utils').register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)


@contextlib.contextmanager
def without_our_allow_list():
    """torch's weights-only loading as a process that did not import mmvssm has it (``import mmvssm``
    registers its allow-list with ``torch.serialization.add_safe_globals``, process-wide)."""
    ours = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(ours)


@pytest.mark.parametrize('name', sorted(CASES))
def test_one_iteration_with_their_runner_then_mmengine_reads_the_checkpoint(name, in_workspace, tmp_path):
    work_dir = str(tmp_path / 'work')
    runner = their_runner(tiny_config(name, work_dir))
    runner.train()
    assert runner.iter == 1
    ckpt = osp.join(work_dir, CHECKPOINT[CASES[name][0]])
    assert osp.isfile(ckpt)
    # What torch >= 2.6 does without our allow-list: mmengine's history buffers are refused ...
    if tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (2, 6):
        with without_our_allow_list(), pytest.raises(pickle.UnpicklingError):
            torch.load(ckpt)
    # ... and what mmengine's own loader does after `import mmvssm`: the whole training checkpoint reads.
    raw = CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')
    assert {'state_dict', 'optimizer', 'message_hub', 'meta'} <= set(raw)
    assert raw['meta']['iter'] == 1
    model = build_like_tools(runner.cfg)
    load_checkpoint(model, ckpt, map_location='cpu', strict=True)
    trained = runner.model.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(trained)
    assert all(torch.equal(loaded[k], trained[k].cpu()) for k in trained)
    # the configs' NeckWiringCheckHook ran before the iteration; the maps the heads read:
    assert any(type(h).__name__ == 'NeckWiringCheckHook' for h in runner.hooks)
    strides = [s for _, s in check_neck_wiring(model)]
    assert strides == ([4, 8, 16, 32, 64] if CASES[name][0] == 'mmdet' else
                       [16, 32, 64] if 'efficient-vim' in name else [4, 8, 16, 32])
    if name in THEIR_TEST:
        their_test_entry(name, ckpt, str(tmp_path / 'test'), trained)


def their_test_entry(name: str, ckpt: str, work_dir: str, trained: dict) -> None:
    """Their tools/test.py: ``cfg.load_from = CHECKPOINT`` then ``runner.test()`` on the tiny val split."""
    scope = CASES[name][0]
    cfg = tiny_config(name, work_dir, **TEST_DATA[scope], **{
        'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False})
    cfg.load_from = ckpt
    runner = their_runner(cfg)
    metrics = runner.test()
    tested = runner.model.state_dict()
    assert all(torch.equal(tested[k], v) for k, v in trained.items())
    assert ('mIoU' if scope == 'mmseg' else 'coco/bbox_mAP') in metrics


class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_mmengine_loader_still_refuses_a_pickle_that_runs_code(tmp_path):
    marker, path = tmp_path / 'ran', str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': RunsCode(str(marker))}, path)
    with pytest.raises(pickle.UnpicklingError, match='system'):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(torch.nn.Linear(1, 1), path, map_location='cpu')
    assert not marker.exists()
    # the allow-list is torch's own (add_safe_globals): without it a plain torch.load refuses HistoryBuffer
    from mmengine.logging import HistoryBuffer
    torch.save({'buffer': HistoryBuffer([1.0], [1])}, str(tmp_path / 'hb.pth'))
    with without_our_allow_list(), pytest.raises(pickle.UnpicklingError):
        torch.load(str(tmp_path / 'hb.pth'))
    assert CheckpointLoader.load_checkpoint(str(tmp_path / 'hb.pth'))['buffer'].mean() == 1.0


# ------------------------------------------------------------------ mis-wired necks and heads
def test_vim_pyramid_into_vit_multilevel_neck_stops_the_run(in_workspace, tmp_path):
    """Vim's default (its own 4/8/16/32 pyramid) into the ViT base's MultiLevelNeck: strides 1/4/16/64."""
    cfg = tiny_config('upernet_vit_vim-s_ade20k.py', str(tmp_path / 'work'),
                      **{'model.backbone.multi_scale': True})
    runner = their_runner(cfg)
    with pytest.raises(NeckWiringError, match=r'strides \[1, 4, 16, 64\].*multi_scale=False'):
        runner.train()
    assert runner.iter == 0
    assert not any(f.endswith('.pth') for f in os.listdir(runner.work_dir))


@pytest.mark.parametrize('key, value, fix', [
    # the ViT-B widths of mmseg's base left in place for a 32-wide Vim
    ('model.neck.in_channels', [768] * 4, r'set model\.neck\.in_channels=\[32, 32, 32, 32\]'),
    ('model.decode_head.in_channels', [768] * 4, r'set model\.decode_head\.in_channels=\[32, 32, 32, 32\]'),
    ('model.auxiliary_head.in_channels', 768, r'set model\.auxiliary_head\.in_channels=32'),
])
def test_seg_channel_mismatch_names_the_fix(key, value, fix, tmp_path):
    cfg = tiny_config('upernet_vit_vim-s_ade20k.py', str(tmp_path), **{key: value})
    with pytest.raises(NeckWiringError, match=fix):
        check_neck_wiring(build_like_tools(cfg))


@pytest.mark.parametrize('key, value, error', [
    # Vim's plain stride-16 maps through mmdet's FPN: anchors at 4..64 would meet 16/16/16/16/32
    ('model.backbone.multi_scale', False, r'single-stride maps.*keep multi_scale=True'),
    ('model.neck.in_channels', [256, 512, 1024, 2048], r'set model\.neck\.in_channels=\[32, 32, 32, 32\]'),
    ('model.rpn_head.in_channels', 256, r'set model\.rpn_head\.in_channels=32'),
])
def test_det_mis_wiring_names_the_fix(key, value, error, tmp_path):
    cfg = tiny_config('mask-rcnn_vim-s_fpn_1x_coco.py', str(tmp_path), **{key: value})
    with pytest.raises(NeckWiringError, match=error):
        check_neck_wiring(build_like_tools(cfg))


def test_efficient_vim_with_plain_fpn_has_wrong_anchor_strides(tmp_path):
    """EfficientViM's 16/32/64 stages through mmdet's own FPN would meet anchors at 4..64."""
    cfg = tiny_config('mask-rcnn_efficient-vim-m1_fpn_1x_coco.py', str(tmp_path), **{
        'model.neck': dict(_delete_=True, type='FPN', in_channels=[32, 48, 64], out_channels=DET_WIDTH,
                           num_outs=5)})
    with pytest.raises(NeckWiringError, match=r'strides \[4, 8, 16, 32, 64\].*\[16, 32, 64, 128, 256\]'):
        check_neck_wiring(build_like_tools(cfg))


def test_readme_recipe_builds_and_is_wired_right(tmp_path):
    """The README's plug-in snippet, as printed (full Vim-Small), without the weights file it names."""
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('### Use in your own mmseg / mmdet project'):]
    start = section.index('```python\n') + len('```python\n')
    snippet = section[start:section.index('\n```', start)]
    path = tmp_path / 'my_project_config.py'
    path.write_text(snippet)
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict({'model.backbone.init_cfg': None})
    assert cfg.custom_hooks == [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
    model = build_like_tools(cfg)
    assert type(model.backbone).__name__ == 'Vim' and model.backbone.embed_dims == 384
    assert check_neck_wiring(model, input_size=64) == [(384, 4), (384, 8), (384, 16), (384, 32)]
