"""Every released checkpoint layout loads with every tensor restored, through every path weights take.

The checkpoints are synthetic: the official key names and shapes come from ``tests/fixtures`` (dumps of
the official models, see its README); the parts that use mmseg/mmdet names (necks other than
EfficientViM's, heads) are the model's own keys, renamed where the official layout differs
(EfficientViM's detection neck: ``neck.batch_norm.{i}`` (1, C, 1, 1); Vim's seg backbone: ``fpn{i}``).
Paths: ``init_cfg=Pretrained`` and ``pretrained=`` of the backbone, mmengine's ``load_checkpoint``, and
the Runner's ``load_checkpoint`` (what ``load_from``, mmseg's/mmdet's ``tools/test.py`` and ``--resume``
call). Each load's report is the one its ``load_state_dict`` post-hook left on the model.
"""
import os.path as osp
import re
from typing import Dict, List

import pytest
import torch
from mmengine.runner import load_checkpoint

from dense_helpers import build_model, load_config

from mmvssm.models.backbones import EfficientViM, EfficientVMamba, Vim
from mmvssm.checkpoint import WeightsMismatchError, last_load_report, load_policy

FIXTURES = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures')
EV_HEAD_KEYS = ('norm.', 'heads.', 'heads_dist.', 'weights', 'weights_dist')


def fixture_state(name: str, section: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors with the key names, shapes and dtypes of one model section of a fixture file."""
    gen = torch.Generator().manual_seed(seed)
    state, inside = {}, False
    with open(osp.join(FIXTURES, name)) as f:
        for line in f:
            if line.startswith(('=====', '# ')):
                inside = section in line
                continue
            # efficient_vim_keys.txt: `key (1, 2) float32`; efficient_vmamba_keys.txt: `key [1, 2]`
            match = re.match(r'^(\S+) [(\[]([\d, ]*)[)\]] ?(\w*)$', line.strip())
            if inside and match:
                shape = tuple(int(d) for d in match.group(2).replace(' ', '').split(',') if d)
                if match.group(3) == 'int64' or match.group(1).endswith('num_batches_tracked'):
                    state[match.group(1)] = torch.zeros(shape, dtype=torch.int64)
                else:
                    state[match.group(1)] = torch.randn(shape, generator=gen)
    assert state, f'no section {section!r} in {name}'
    return state


def save(path, obj) -> str:
    torch.save(obj, str(path))
    return str(path)


def loaded(model: torch.nn.Module, load=None, **policy) -> List[dict]:
    """``load(model)`` (default: ``model.init_weights()``, the init_cfg path) under ``policy`` (the
    model's LoadPolicy fields); the report of the load, as a list."""
    with load_policy(model, **policy):
        (load or (lambda m: m.init_weights()))(model)
    report = last_load_report(model)
    return [report] if report is not None else []


def strict_load(model: torch.nn.Module, path: str) -> List[dict]:
    """mmengine's ``load_checkpoint`` requiring every tensor (as tools/test.py)."""
    return loaded(model, lambda m: load_checkpoint(m, path), min_restored=1.0, allow_mismatch=False)


def assert_all_restored(reports: List[dict]) -> dict:
    assert reports, 'no load was reported'
    report = reports[-1]
    assert report['missing'] == [] and report['mismatched'] == [], report
    assert len(report['restored']) == len(report['expected']) > 0
    return report


def backbone_paths(cls, kwargs: dict, path: str) -> List[dict]:
    """Load ``path`` through the backbone's init_cfg, its pretrained= and mmengine's load_checkpoint."""
    reports = []
    for build in (lambda: cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=path)),
                  lambda: cls(**kwargs, pretrained=path)):
        reports.append(assert_all_restored(loaded(build())))
    reports.append(assert_all_restored(strict_load(cls(**kwargs), path)))
    return reports


# ---------------------------------------------------------------- ImageNet (official classification files)
@pytest.mark.parametrize('arch', ['m1', 'm4'])
def test_efficient_vim_imagenet(tmp_path, arch):
    official = fixture_state('efficient_vim_keys.txt', f'EfficientViM_{arch.upper()}')
    path = save(tmp_path / 'official.pth', {'model': official, 'model_ema': official})
    reports = backbone_paths(EfficientViM, dict(arch=arch), path)
    backbone_keys = [k for k in official if not k.startswith(EV_HEAD_KEYS)]
    assert len(reports[0]['restored']) == len([k for k in backbone_keys if 'num_batches' not in k])
    # the (1, C, 1) LayerNorm1D tensors became (C,) with their values
    model = EfficientViM(arch, pretrained=path)
    model.init_weights()
    assert torch.equal(model.stages[0].blocks[0].norm.weight, official['stages.0.blocks.0.norm.weight'].flatten())


def test_efficient_vmamba_imagenet(tmp_path):
    official = fixture_state('efficient_vmamba_keys.txt', 'EfficientVMamba-T')
    # EMA of a DDP model: module.module. prefixes inside the released container
    path = save(tmp_path / 'official.ckpt', {'state_dict': {'module.module.' + k: v for k, v in official.items()}})
    # the classifier's norm is not a dense output norm: the backbone's outnorm{i} start fresh (as the
    # official dense code), and are the only tensors not restored
    kwargs = dict(arch='t', out_indices=(0, 1, 2, 3))
    for build in (lambda: EfficientVMamba(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=path)),
                  lambda: EfficientVMamba(**kwargs, pretrained=path)):
        got = loaded(build())
        assert sorted(got[-1]['fresh']) == sorted(f'outnorm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
        assert_all_restored(got)
    # a whole-model (ImageClassifier) load restores everything, see test_imagenet_files_into_classifier_configs
    with pytest.raises(WeightsMismatchError, match='missing: outnorm0.weight'):
        strict_load(EfficientVMamba(**kwargs), path)


def test_vim_imagenet(tmp_path):
    official = fixture_state('vim_tiny_keys.txt', 'Vim-Ti')
    path = save(tmp_path / 'vim_t_midclstok.pth', {'model': official})
    reports = backbone_paths(Vim, dict(arch='tiny', img_size=224, out_indices=(5, 11, 17, 23),
                                       multi_scale=False), path)
    # head.weight/bias, cls_token and norm_f (a dense Vim has no final norm) are not backbone tensors
    assert len(reports[0]['restored']) == len(official) - 4


def test_imagenet_files_into_classifier_configs(tmp_path):
    """An official classification file as load_from of our ImageNet configs (mmpretrain classifier)."""
    cases = [('imagenet/vim_tiny_in1k.py', 'vim_tiny_keys.txt', 'Vim-Ti'),
             ('imagenet/efficient_vim_m1_dist_in1k.py', 'efficient_vim_keys.txt', 'EfficientViM_M1'),
             ('imagenet/efficient_vmamba_t_in1k.py', 'efficient_vmamba_keys.txt', 'EfficientVMamba-T')]
    for config, fixture, section in cases:
        official = fixture_state(fixture, section)
        path = save(tmp_path / f'{section}.pth', {'model': official})
        model = build_model(load_config(config).model, 'mmpretrain', init_weights=False)
        report = assert_all_restored(strict_load(model, path))
        assert report['unexpected'] == [], (config, report['unexpected'])
        # torch's own load of the raw official container: the module hooks convert it the same way
        report = assert_all_restored(loaded(model, lambda m: m.load_state_dict(torch.load(path), strict=False),
                                            min_restored=1.0, allow_mismatch=False))
        assert report['unexpected'] == [], (config, report['unexpected'])


# ---------------------------------------------------------------- released downstream checkpoints
def efficient_vim_downstream(model: torch.nn.Module, detection_neck: bool) -> Dict[str, torch.Tensor]:
    """The released EfficientViM-M4 layout: official backbone keys (fixture), (1, C, 1) norms, and for the
    detection neck ``batch_norm.{i}`` (1, C, 1, 1) pre-norms; the rest in mmdet/mmseg names."""
    official = fixture_state('efficient_vim_keys.txt', 'EfficientViM_M4', seed=1)
    state = {'backbone.' + k: v for k, v in official.items() if not k.startswith(EV_HEAD_KEYS)}
    for key, value in model.state_dict().items():
        if key.startswith('backbone.'):
            continue
        value = torch.randn(value.shape) if value.is_floating_point() else value.clone()
        match = re.match(r'^neck\.pre_norms\.(\d+)\.(weight|bias)$', key)
        if match:
            assert detection_neck
            key, value = f'neck.batch_norm.{match.group(1)}.{match.group(2)}', value.view(1, -1, 1, 1)
        state[key] = value
    return state


DOWNSTREAM = {
    'sem_fpn': ('fpn_efficient_vim_m4_ade20k_40k.py', 'mmseg', False),
    'mask_rcnn': ('mask_rcnn_efficient_vim_m4_fpn_1x_coco.py', 'mmdet', True),
    'retinanet': ('retinanet_efficient_vim_m4_fpn_1x_coco.py', 'mmdet', True),
}


@pytest.mark.parametrize('layout', sorted(DOWNSTREAM))
def test_efficient_vim_released_downstream(tmp_path, layout):
    config, scope, detection_neck = DOWNSTREAM[layout]
    cfg = load_config(config, {'model.backbone.init_cfg': None})
    model = build_model(cfg.model, scope, init_weights=False)
    state = efficient_vim_downstream(model, detection_neck)
    if detection_neck:
        assert any(k.startswith('neck.batch_norm.') for k in state)
    assert state['backbone.stages.0.blocks.0.norm.weight'].shape == (1, 224, 1)
    path = save(tmp_path / f'{layout}.pth', {'state_dict': state, 'meta': {}})
    # load_from / tools/test.py / mmengine.runner.load_checkpoint
    report = assert_all_restored(strict_load(model, path))
    assert report['unexpected'] == []
    if detection_neck:
        assert torch.equal(model.neck.pre_norms[0].weight, state['neck.batch_norm.0.weight'].flatten())
    # the backbone of the released file as init_cfg / pretrained=
    backbone_paths(EfficientViM, dict(arch='m4', out_indices=(0, 1, 2)), path)


def test_vim_released_segmentation(tmp_path):
    """Vim's seg/ layout: ``backbone.`` keys, no cls_token/head, (1, 1024, D) pos_embed, ``fpn{i}``."""
    cfg = load_config('upernet_vim_tiny_ade20k.py')
    model = build_model(cfg.model, 'mmseg', init_weights=False)
    official = fixture_state('vim_tiny_keys.txt', 'Vim-Ti', seed=2)
    state = {'backbone.' + k: v for k, v in official.items() if not k.startswith(('head.', 'cls_token'))}
    state['backbone.pos_embed'] = torch.randn(1, 1024, 192)
    for key, value in model.state_dict().items():
        if not key.startswith('backbone.') or key.startswith('backbone.pyramid.'):
            state[key.replace('backbone.pyramid.', 'backbone.')] = (
                torch.randn(value.shape) if value.is_floating_point() else value.clone())
    assert 'backbone.fpn1.0.weight' in state and 'backbone.norm_f.weight' in state
    path = save(tmp_path / 'upernet_vim_t.pth', {'state_dict': state})
    report = assert_all_restored(strict_load(model, path))
    assert report['unexpected'] == []  # norm_f (in the file, unused by seg/) is dropped by the converter
    assert torch.equal(model.backbone.pos_embed, state['backbone.pos_embed'])
    backbone_paths(Vim, dict(arch='tiny', img_size=512, out_indices=(5, 11, 17, 23)), path)


def test_runner_load_checkpoint_converts(tmp_path, tiny_workspace, monkeypatch):
    """The Runner's load path (load_from, tools/test.py of mmseg/mmdet, --resume) converts and reports."""
    from mmengine.runner import Runner
    monkeypatch.chdir(tiny_workspace)
    cfg = load_config('tiny/upernet_efficient_vim_m1_tiny-ade.py')
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    for key in list(state):
        if re.match(r'backbone\.stages\.\d+\.blocks\.\d+\.norm\.(weight|bias)$', key):
            state[key] = (state[key] + 1).view(1, -1, 1)  # official LayerNorm1D layout
    path = save(tmp_path / 'official_layout.pth', {'state_dict': state})
    assert_all_restored(loaded(runner.model, lambda m: runner.load_checkpoint(path), min_restored=1.0,
                               allow_mismatch=False))
    assert torch.equal(runner.model.backbone.stages[0].blocks[0].norm.weight,
                       state['backbone.stages.0.blocks.0.norm.weight'].flatten())


def test_too_little_restored_is_an_error(tmp_path):
    model = EfficientViM('m1')
    one = {'patch_embed.conv.0.conv.weight': model.state_dict()['patch_embed.conv.0.conv.weight']}
    path = save(tmp_path / 'one.pth', one)
    with pytest.raises(WeightsMismatchError, match=r'restored 1/\d+ tensors'):
        EfficientViM('m1', pretrained=path).init_weights()
    with pytest.raises(WeightsMismatchError, match=r'restored 1/\d+'):
        load_checkpoint(model, path)
    other = save(tmp_path / 'm2.pth', EfficientViM('m2').state_dict())
    with pytest.raises(WeightsMismatchError, match='another architecture'):
        EfficientViM('m1', init_cfg=dict(type='Pretrained', checkpoint=other)).init_weights()
    with pytest.raises(ValueError, match='not both'):
        EfficientViM('m1', pretrained=path, init_cfg=dict(type='Pretrained', checkpoint=path))
