# Mask R-CNN + FPN with Vim-Small (D = 384), COCO 1x; same recipe as Vim-Tiny.
_base_ = ['mask_rcnn_vim_tiny_fpn_1x_coco.py']
embed_dims = 384
model = dict(
    backbone=dict(arch=dict(embed_dims=embed_dims, depth=24)),
    neck=dict(in_channels=[embed_dims] * 4))
