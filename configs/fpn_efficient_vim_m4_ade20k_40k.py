# Semantic FPN + EfficientViM-M4, ADE20K 40k iterations: the official setup
# (mlvlab/EfficientViM segmentation/configs/sem_fpn/fpn_efficientvim_m4_ade20k_40k.py). Published: 41.3
# mIoU (aAcc 79.5, mAcc 52.0). mmseg's FPN takes the three stages (strides 16/32/64); its 4th level is a
# stride-2 max-pool (stride 128). FPNHead's feature_strides only set the ratios between levels, so
# [4, 8, 16, 32] works and the prediction is made at stride 16. BN statistics frozen (official train()).
# AdamW lr 2e-4, wd 1e-4, poly (power 0.9, min lr 1e-6), no warm-up, batch 32 (8 GPUs x 4).
# Test: the official AlignResize (keep ratio to 2048x512, then resize to a multiple of 32) is approximated
# by a keep-ratio resize + padding to a multiple of 32 (size_divisor of the data preprocessor).
_base_ = [
    './_base_/datasets/ade20k.py', './_base_/default_runtime_seg.py', './_base_/schedules/seg_40k.py'
]
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
pretrained = 'checkpoints/EfficientViM_M4_e450.pth'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size,
        test_cfg=dict(size_divisor=32)),
    backbone=dict(
        type='EfficientViM',
        arch='m4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='FPN', in_channels=[224, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
# mmcv poly: (base - 1e-6) * (1 - t / 40000) ** 0.9 + 1e-6; mmengine's PolyLR reaches its end value at
# end - 1, hence 40001
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40001, by_epoch=False)]
train_dataloader = dict(batch_size=4)
