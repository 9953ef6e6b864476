# Mask R-CNN + EfficientViM-M1, COCO 1x: the official M4 recipe (mask_rcnn_efficient_vim_m4_fpn_1x_coco.py)
# with the M1 backbone. The official repo ships dense configs for M4 only: no published numbers for M1.
_base_ = ['./mask_rcnn_efficient_vim_m4_fpn_1x_coco.py']
pretrained = 'checkpoints/EfficientViM_M1_e450.pth'
model = dict(
    backbone=dict(arch='m1', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 192, 320]))
