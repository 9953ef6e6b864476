# UperNet + EfficientViM-M4, ADE20K 160k: the recipe of upernet_efficient_vim_m1_ade20k.py with M4.
_base_ = ['./upernet_efficient_vim_m1_ade20k.py']
pretrained = 'checkpoints/EfficientViM_M4_e450.pth'
model = dict(
    backbone=dict(arch='m4', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[224, 320, 512]),
    auxiliary_head=dict(in_channels=320))
