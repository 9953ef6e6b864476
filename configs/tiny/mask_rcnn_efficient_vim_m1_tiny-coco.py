# Mask R-CNN + EfficientViM (M1-like, narrower, one block per stage) on the tiny COCO sample, with the
# EfficientViMFPN neck of the official dense configs (two extra up-sampling levels: strides 4 and 8):
#   python tools/misc/make_tiny_datasets.py
#   python tools/train.py configs/tiny/mask_rcnn_efficient_vim_m1_tiny-coco.py
_base_ = ['./_mask_rcnn_tiny-coco.py']
dims = [64, 96, 128]
model = dict(
    backbone=dict(
        _delete_=True, type='EfficientViM',
        arch=dict(embed_dims=dims, depths=[1, 1, 1], state_dims=[16, 9, 4]), out_indices=(0, 1, 2)),
    neck=dict(
        _delete_=True, type='EfficientViMFPN', in_channels=dims, out_channels={{_base_.width}},
        num_outs=5, start_level=0, num_extra_trans_convs=2, pre_norm=True))
