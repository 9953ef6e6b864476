# UperNet + EfficientViM-M2, ADE20K 160k: the recipe of upernet_efficient_vim_m1_ade20k.py with M2.
_base_ = ['./upernet_efficient_vim_m1_ade20k.py']
pretrained = 'checkpoints/EfficientViM_M2_e450.pth'
model = dict(
    backbone=dict(arch='m2', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
