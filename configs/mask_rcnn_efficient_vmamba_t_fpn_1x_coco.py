# Mask R-CNN + FPN + EfficientVMamba-T, COCO 1x (12 epochs), batch 16 (8 GPUs x 2).
# Settings of the official detection configs (TerryPei/EfficientVMamba detection/configs/efficient,
# inheriting mmdet's Swin-T Mask R-CNN 1x): AdamW lr 1e-4, wd 0.05 (no decay on norms), AMP,
# 1000-iter linear warm-up, lr x0.1 after epochs 8 and 11, drop_path 0.2. The official T config's
# depths (2, 2, 9, 2) and inherited FPN widths do not match the T checkpoint; fixed here.
# Paper (Table 7, 1x): 35.6 box AP / 33.2 mask AP.
_base_ = [
    './_base_/models/mask_rcnn_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_1x.py', './_base_/default_runtime_det.py'
]
# Official ImageNet-1k weights (HF TerryPei/EfficientVMamba-Tiny); official or converted files both load.
# Set model.backbone.init_cfg=None to train from scratch (e.g. with a reduced arch).
pretrained = 'checkpoints/efficient_vmamba_tiny.ckpt'
model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientVMamba',
        arch=dict(dims=[48, 96, 192, 384], depths=[2, 2, 4, 2]),  # = arch 't'; a dict so overrides merge
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        frozen_stages=-1,
        norm_eval=False,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[48, 96, 192, 384]))

# AMP as the official configs; on a machine without a GPU use optim_wrapper.type=OptimWrapper.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # 'norm' matches every LayerNorm (norm, out_norm, outnorm{i}, se.norm, downsample.norm).
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
