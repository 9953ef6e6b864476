# Mask R-CNN + FPN + EfficientVMamba-B, COCO 1x. (The official B config trains 3x with multi-scale
# crops; this is the 1x setting of the paper.) Paper (Table 7, 1x): 43.7 box AP / 40.2 mask AP.
_base_ = ['./mask_rcnn_efficient_vmamba_t_fpn_1x_coco.py']
pretrained = 'checkpoints/efficient_vmamba_base.ckpt'
model = dict(
    backbone=dict(
        arch=dict(dims=[96, 192, 384, 768], depths=[2, 2, 9, 2]),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
