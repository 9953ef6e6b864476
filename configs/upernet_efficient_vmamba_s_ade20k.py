# UperNet + EfficientVMamba-S (dims 64, as the released checkpoint), ADE20K 160k, 512x512.
# Paper: 41.5 mIoU (SS) / 42.1 (MS), 29M params.
_base_ = ['./upernet_efficient_vmamba_t_ade20k.py']
pretrained = 'checkpoints/efficient_vmamba_small.ckpt'
model = dict(
    backbone=dict(
        arch=dict(dims=[64, 128, 256, 512], depths=[2, 2, 4, 2]),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
