# Mask R-CNN + EfficientViM-M3, COCO 1x: the official M4 recipe (mask_rcnn_efficient_vim_m4_fpn_1x_coco.py)
# with the M3 backbone. The official repo ships dense configs for M4 only: no published numbers for M3.
_base_ = ['./mask_rcnn_efficient_vim_m4_fpn_1x_coco.py']
pretrained = 'checkpoints/EfficientViM_M3_e450.pth'
model = dict(
    backbone=dict(arch='m3', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[224, 320, 512]))
