# UperNet + EfficientViM-M3, ADE20K 160k: the recipe of upernet_efficient_vim_m1_ade20k.py with M3.
_base_ = ['./upernet_efficient_vim_m1_ade20k.py']
pretrained = 'checkpoints/EfficientViM_M3_e450.pth'
model = dict(
    backbone=dict(arch='m3', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[224, 320, 512]),
    auxiliary_head=dict(in_channels=320))
