# Mask R-CNN + FPN + EfficientVMamba-T widths at one block per stage on the tiny COCO sample:
#   python tools/misc/make_tiny_datasets.py
#   python tools/train.py configs/tiny/mask_rcnn_efficient_vmamba_t_tiny-coco.py
_base_ = ['./_mask_rcnn_tiny-coco.py']
dims = [48, 96, 192, 384]
model = dict(
    backbone=dict(
        _delete_=True, type='EfficientVMamba', arch=dict(dims=dims, depths=[1, 1, 1, 1]),
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=dims))
