# Mask R-CNN + FPN + EfficientVMamba-S (dims 64, as the released checkpoint; the official config's
# dims 96 do not match it), COCO 1x. Paper (Table 7, 1x): 39.3 box AP / 36.7 mask AP.
_base_ = ['./mask_rcnn_efficient_vmamba_t_fpn_1x_coco.py']
pretrained = 'checkpoints/efficient_vmamba_small.ckpt'
model = dict(
    backbone=dict(
        arch=dict(dims=[64, 128, 256, 512], depths=[2, 2, 4, 2]),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
