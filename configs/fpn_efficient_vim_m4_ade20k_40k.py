# Semantic FPN + EfficientViM-M4, ADE20K 40k iterations: the official setup
# (mlvlab/EfficientViM segmentation/configs/sem_fpn/fpn_efficientvim_m4_ade20k_40k.py). Published: 41.3
# mIoU (aAcc 79.5, mAcc 52.0). mmseg's FPN takes the three stages (strides 16/32/64); its 4th level is a
# stride-2 max-pool (stride 128). FPNHead's feature_strides only set the ratios between levels, so
# [4, 8, 16, 32] works and the prediction is made at stride 16. BN statistics frozen (official train()).
# AdamW lr 2e-4, wd 1e-4, poly (power 0.9, min lr 1e-6), no warm-up, batch 32 (8 GPUs x 4).
# Test: the official AlignResize (keep ratio to 2048x512, then resize to a multiple of 32) is approximated
# by a keep-ratio resize + padding to a multiple of 32 (size_divisor of the data preprocessor).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py', './_base_/default_runtime_seg.py',
    './_base_/schedules/seg_40k.py'
]
crop_size = (512, 512)
pretrained = 'checkpoints/EfficientViM_M4_e450.pth'
# mmseg's semantic FPN (FPN neck with num_outs=4, FPNHead), with our backbone on ADE20K.
model = dict(
    pretrained=None,  # weights come through the backbone's init_cfg
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch='m4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[224, 320, 512]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
# mmcv poly: (base - 1e-6) * (1 - t / 40000) ** 0.9 + 1e-6; mmengine's PolyLR reaches its end value at
# end - 1, hence 40001
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40001, by_epoch=False)]
train_dataloader = dict(batch_size=4)
