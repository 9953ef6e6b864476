"""Plug-in use: an existing mmseg/mmdet project's config, outside this repository, uses our backbones.

The configs below inherit mmseg's and mmdet's own model files through the package-config syntax
(``mmseg::``/``mmdet::``) and add mmvssm with ``custom_imports`` only, as a user project would.
"""
import importlib
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import REPO

# Reduced versions of each backbone and the channels of the feature maps they return.
BACKBONES = {
    'Vim': ("dict(type='Vim', arch=dict(embed_dims=32, depth=4), img_size=64, patch_size=16)",
            [32, 32, 32, 32]),
    'EfficientVMamba': ("dict(type='EfficientVMamba', arch=dict(dims=[16, 32, 64, 128], "
                        "depths=[1, 1, 1, 1]), out_indices=(0, 1, 2, 3))", [16, 32, 64, 128]),
    'EfficientViM': ("dict(type='EfficientViM', arch=dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], "
                     "state_dims=[16, 9, 4]), out_indices=(0, 1, 2))", [32, 48, 64]),
}
HEADER = "custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)\n"


def build_project_model(tmp_path, text: str, scope: str, backbone: str) -> torch.nn.Module:
    """Write ``text`` as a config outside the repository and build its model with ``scope``'s MODELS."""
    path = tmp_path / 'my_project_config.py'
    path.write_text(textwrap.dedent(text))
    assert not str(path).startswith(REPO)
    cfg = Config.fromfile(str(path))
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry')
    model = registry.MODELS.build(cfg.model).eval()
    assert type(model.backbone).__name__ == backbone
    return model


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_mmseg_project_builds_upernet_with_our_backbone(name, tmp_path):
    backbone, channels = BACKBONES[name]
    model = build_project_model(tmp_path, f"""\
        _base_ = ['mmseg::_base_/models/upernet_r50.py']
        {HEADER}
        norm_cfg = dict(type='BN', requires_grad=True)
        model = dict(
            pretrained=None,  # mmseg's file names ResNet weights
            backbone=dict(_delete_=True, **{backbone}),
            decode_head=dict(in_channels={channels}, in_index={list(range(len(channels)))}, channels=16,
                             pool_scales=(1, 2), num_classes=7, norm_cfg=norm_cfg),
            auxiliary_head=dict(in_channels={channels[-2]}, in_index={len(channels) - 2}, channels=16,
                                num_classes=7, norm_cfg=norm_cfg))
        """, 'mmseg', name)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, 7)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_mmdet_project_builds_mask_rcnn_with_our_backbone(name, tmp_path):
    backbone, channels = BACKBONES[name]
    model = build_project_model(tmp_path, f"""\
        _base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
        {HEADER}
        model = dict(
            backbone=dict(_delete_=True, **{backbone}),
            neck=dict(in_channels={channels}, out_channels=32, num_outs=len({channels}) + 1),
            rpn_head=dict(in_channels=32, feat_channels=32),
            roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                          bbox_head=dict(in_channels=32, num_classes=3),
                          mask_roi_extractor=dict(out_channels=32),
                          mask_head=dict(in_channels=32, num_classes=3)))
        """, 'mmdet', name)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 128))
    assert len(feats) == len(channels) + 1 and all(f.shape[1] == 32 for f in feats)
