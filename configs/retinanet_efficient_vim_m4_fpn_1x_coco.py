# RetinaNet + EfficientViM-M4, COCO 1x: the official setup
# (mlvlab/EfficientViM detection/configs/retinanet_efficientvim_fpn_1x_coco.py). Published: 38.8 box AP
# (59.6 / 41.1; APs 22.4, APm 42.6, APl 52.8). Neck: layer-normed stages, FPN, one transposed-conv level at
# stride 8 and one stride-2 conv on the normalised stage-2 map ('on_input'): strides 8, 16, 32, 64, 128.
# AdamW lr 2e-4, wd 0.05, 1x schedule, BN frozen, 16 images per iteration.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/det_1x.py', './_base_/default_runtime_det.py'
]
pretrained = 'checkpoints/EfficientViM_M4_e450.pth'
# mmdet's RetinaNet (heads, anchors, assigner, test settings) and COCO boxes-only data, with our backbone and
# the official neck.
model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch='m4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='EfficientViMFPN',
        in_channels=[224, 320, 512],
        out_channels=256,
        num_outs=5,
        start_level=0,
        add_extra_convs='on_input',
        num_extra_trans_convs=1,
        pre_norm=True))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05))
# mmcv warm-up (official lr_config): factor 0.001 + 0.999 * t / 500 for t < 500; mmengine's LinearLR
# reaches 1 at end - 1, hence 501. Steps x0.1 after epochs 8 and 11.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=501),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
