# Mask R-CNN + EfficientViM-M4, COCO 1x (12 epochs): the official setup
# (mlvlab/EfficientViM detection/configs/mask_rcnn_efficientvim_fpn_1x_coco.py). Published: 39.7 box AP
# (61.4 / 43.0), 36.4 mask AP (58.4 / 38.3). The backbone's strides are 16/32/64; the official neck
# (EfficientViMFPN here) layer-norms each stage, builds the FPN, and grows stride-8 and stride-4 levels
# with two transposed convs: outputs at strides 4, 8, 16, 32, 64 for the standard RPN/RoI heads.
# BatchNorm statistics stay frozen (norm_eval, as the official backbone's train()); nothing else is frozen.
# AdamW lr 2e-4, wd 0.05, no clipping, no fp16; 500-iter linear warm-up, lr x0.1 at epochs 8 and 11.
# The official run used 16 images on 1 GPU; here 8 GPUs x 2 (same total; BN is frozen, so equivalent).
_base_ = [
    './_base_/models/mask_rcnn_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_1x.py', './_base_/default_runtime_det.py'
]
# Official ImageNet-1k weights (the official detection code uses EfficientViM_M4_e450.pth, non-EMA
# `model` weights); official or converted files both load. Set model.backbone.init_cfg=None to train
# from scratch (e.g. with a reduced arch).
pretrained = 'checkpoints/EfficientViM_M4_e450.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch='m4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='EfficientViMFPN',
        in_channels=[224, 320, 512],
        out_channels=256,
        num_outs=5,
        start_level=0,
        num_extra_trans_convs=2,
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
train_dataloader = dict(batch_size=2)
