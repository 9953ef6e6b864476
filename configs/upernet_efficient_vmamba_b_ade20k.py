# UperNet + EfficientVMamba-B, ADE20K 160k, 512x512. Paper: 46.5 mIoU (SS) / 47.3 (MS), 65M params.
_base_ = ['./upernet_efficient_vmamba_t_ade20k.py']
pretrained = 'checkpoints/efficient_vmamba_base.ckpt'
model = dict(
    backbone=dict(
        arch=dict(dims=[96, 192, 384, 768], depths=[2, 2, 9, 2]),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
