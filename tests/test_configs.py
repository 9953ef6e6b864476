"""Every shipped config loads with ``Config.fromfile`` and its model builds in its toolbox's scope."""
import glob
import os.path as osp

import pytest

from dense_helpers import CONFIGS, build_model, load_config

from mmvssm.models.backbones.base import SSMBackbone

# configs/_base_ holds fragments; configs/plugins/ has its own tests (tests/test_plugin_configs.py)
ALL_CONFIGS = sorted(osp.relpath(p, CONFIGS) for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True)
                     if not osp.relpath(p, CONFIGS).startswith(('_base_', 'plugins')))


def test_every_kind_of_config_is_covered():
    kinds = {name.split('/')[0] if '/' in name else 'top' for name in ALL_CONFIGS}
    assert {'top', 'tiny', 'imagenet'} <= kinds and len(ALL_CONFIGS) >= 40


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds(name):
    cfg = load_config(name)
    assert cfg.default_scope in ('mmseg', 'mmdet', 'mmpretrain'), name
    assert 'mmvssm' in cfg.custom_imports['imports']
    if cfg.default_scope in ('mmseg', 'mmdet'):  # bad data is an error naming the file (ValidateData)
        assert dict(type='ValidateData') in cfg.get('custom_hooks', []), name
    model = build_model(cfg.model, cfg.default_scope, init_weights=False)
    assert isinstance(model.backbone, SSMBackbone)
    assert getattr(model, 'pretrained', None) is None  # weights come through the backbone's init_cfg
