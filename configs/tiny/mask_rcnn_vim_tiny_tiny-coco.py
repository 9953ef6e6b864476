# Mask R-CNN + FPN + Vim-Tiny width (D=192) at reduced depth (4 layers) on the tiny COCO sample:
#   python tools/misc/make_tiny_datasets.py
#   python tools/train.py configs/tiny/mask_rcnn_vim_tiny_tiny-coco.py
_base_ = ['./_mask_rcnn_tiny-coco.py']
embed_dims = 192
model = dict(
    backbone=dict(
        _delete_=True, type='Vim', arch=dict(embed_dims=embed_dims, depth=4), img_size=128,
        patch_size=16),
    neck=dict(in_channels=[embed_dims] * 4))
